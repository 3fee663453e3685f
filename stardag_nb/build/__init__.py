"""Building tasks: run what is incomplete, dependencies first.

- ``build()`` / ``build_aio()``: the main entry points (sync / async).
- ``build_sequential()`` / ``build_sequential_aio()``: one task at a time, for debugging.

Every builder works inside a running event loop (a notebook cell): the sync ones run
on a private loop in a worker thread and block like any sync call; ``await
build_aio(...)`` is the non-blocking way. The running loop is never patched
(nest_asyncio is not used: it is unmaintained and breaks on newer Pythons).
Builds return a :class:`BuildSummary`; they do not raise when a task fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from .._task import BaseTask
from ..registry import RegistryABC
from ._base import BuildExitStatus, BuildSummary, FailMode, TaskCount, TaskExecutorABC
from ._sequential import build_sequential, build_sequential_aio
from ._sync_bridge import run_coroutine_sync

__all__ = [
    "BuildExitStatus",
    "BuildSummary",
    "FailMode",
    "TaskCount",
    "TaskExecutorABC",
    "build",
    "build_aio",
    "build_sequential",
    "build_sequential_aio",
]


async def build_aio(
    tasks: BaseTask | Sequence[BaseTask],
    task_executor: TaskExecutorABC | None = None,
    fail_mode: FailMode | str = FailMode.FAIL_FAST,
    registry: RegistryABC | None = None,
    max_concurrent_discover: int = 50,
    global_lock_manager: Any = None,
    global_lock_config: Any = None,
    resume_build_id: UUID | None = None,
) -> BuildSummary:
    """Build ``tasks`` and whatever they depend on that is not complete (async).

    Returns a :class:`BuildSummary`. (This version runs tasks one at a time on the
    caller's loop; custom executors and concurrency come with the concurrent
    scheduler.)
    """
    if task_executor is not None:
        raise NotImplementedError(
            "Custom task executors are not supported yet; call build_aio(tasks) without one."
        )
    return await build_sequential_aio(
        tasks,
        registry=registry,
        fail_mode=fail_mode,
        resume_build_id=resume_build_id,
        global_lock_manager=global_lock_manager,
        global_lock_config=global_lock_config,
    )


def build(
    tasks: BaseTask | Sequence[BaseTask],
    task_executor: TaskExecutorABC | None = None,
    fail_mode: FailMode | str = FailMode.FAIL_FAST,
    registry: RegistryABC | None = None,
    max_concurrent_discover: int = 50,
    global_lock_manager: Any = None,
    global_lock_config: Any = None,
    resume_build_id: UUID | None = None,
) -> BuildSummary:
    """Build ``tasks`` and whatever they depend on that is not complete (sync).

    Works inside a running event loop too (it then blocks on a private loop in a
    worker thread); in a notebook prefer ``await sd.build_aio(...)``.
    """
    return run_coroutine_sync(
        build_aio(
            tasks,
            task_executor=task_executor,
            fail_mode=fail_mode,
            registry=registry,
            max_concurrent_discover=max_concurrent_discover,
            global_lock_manager=global_lock_manager,
            global_lock_config=global_lock_config,
            resume_build_id=resume_build_id,
        )
    )
