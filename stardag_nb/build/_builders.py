"""The four builders: ``build``, ``build_aio``, ``build_sequential``, ``build_sequential_aio``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Literal
from uuid import UUID

from .._task import BaseTask, _has_custom_run, _has_custom_run_aio
from ..registry import RegistryABC, registry_provider
from ._base import BuildSummary, FailMode, TaskExecutorABC
from ._engine import BuildEngine, as_task_list
from ._events import BuildEventHandler
from ._executors import (
    DefaultExecutionModeSelector,
    ExecutionMode,
    HybridConcurrentTaskExecutor,
    requested_mode,
)
from ._locks import GlobalConcurrencyLockManager, GlobalLockConfig
from ._sync_bridge import run_coroutine_sync

__all__ = ["build", "build_aio", "build_sequential", "build_sequential_aio"]


def _default_executor() -> HybridConcurrentTaskExecutor:
    # Sync tasks run on worker threads (concurrently, the loop stays free); async tasks
    # on the loop. Pools are created only when a task needs one.
    return HybridConcurrentTaskExecutor(
        DefaultExecutionModeSelector(sync_run_default="thread"),
        max_process_workers=os.cpu_count() or 2,
    )


def _handlers(
    event_handlers: Sequence[BuildEventHandler], progress: bool | None
) -> list[BuildEventHandler]:
    handlers = list(event_handlers)
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if progress:
        from ._progress import TerminalProgress

        handlers.append(TerminalProgress())
    return handlers


async def build_aio(
    tasks: BaseTask | Sequence[BaseTask],
    task_executor: TaskExecutorABC | None = None,
    fail_mode: FailMode | str = FailMode.FAIL_FAST,
    registry: RegistryABC | None = None,
    max_concurrent_discover: int = 50,
    global_lock_manager: GlobalConcurrencyLockManager | None = None,
    global_lock_config: GlobalLockConfig | None = None,
    resume_build_id: UUID | None = None,
    *,
    event_handlers: Sequence[BuildEventHandler] = (),
) -> BuildSummary:
    """Build ``tasks`` and whatever they depend on that is not complete (async).

    Runs on the caller's event loop, so in a notebook ``await sd.build_aio(task)``
    builds while the kernel keeps serving. ``task_executor`` defaults to a
    :class:`HybridConcurrentTaskExecutor` that runs sync tasks on worker threads and
    async tasks on the loop, concurrently; ``registry`` defaults to
    ``registry_provider.get()``.
    ``event_handlers`` receive :class:`BuildEvent` s. Returns a :class:`BuildSummary`.
    """
    engine = BuildEngine(
        executor=task_executor or _default_executor(),
        registry=registry or registry_provider.get(),
        fail_mode=FailMode(fail_mode),
        event_handlers=event_handlers,
        lock_manager=global_lock_manager,
        lock_config=global_lock_config,
        max_concurrent_discover=max_concurrent_discover,
    )
    return await engine.run(as_task_list(tasks), resume_build_id)


def build(
    tasks: BaseTask | Sequence[BaseTask],
    task_executor: TaskExecutorABC | None = None,
    fail_mode: FailMode | str = FailMode.FAIL_FAST,
    registry: RegistryABC | None = None,
    max_concurrent_discover: int = 50,
    global_lock_manager: GlobalConcurrencyLockManager | None = None,
    global_lock_config: GlobalLockConfig | None = None,
    resume_build_id: UUID | None = None,
    *,
    event_handlers: Sequence[BuildEventHandler] = (),
    progress: bool | None = None,
) -> BuildSummary:
    """Build ``tasks`` and whatever they depend on that is not complete (sync).

    Inside a running event loop (a notebook cell) it runs on a private loop in a worker
    thread and blocks like any sync call; ``await sd.build_aio(...)`` is the
    non-blocking way. ``progress`` draws a progress bar on stderr (default: when stderr
    is a terminal).
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
            event_handlers=_handlers(event_handlers, progress),
        )
    )


class _SequentialModeSelector:
    """Sync tasks inline (or in a thread); async tasks awaited; dual tasks by preference."""

    def __init__(self, prefer_sync: bool, sync_mode: ExecutionMode) -> None:
        self.prefer_sync = prefer_sync
        self.sync_mode = sync_mode

    def __call__(self, task: BaseTask) -> ExecutionMode:
        requested = requested_mode(task)
        if requested is ExecutionMode.SYNC_PROCESS:
            requested = None  # no process pool in sequential builds
        has_sync, has_async = _has_custom_run(task), _has_custom_run_aio(task)
        if has_async and (not has_sync or not self.prefer_sync):
            return ExecutionMode.ASYNC_MAIN_LOOP
        return requested or self.sync_mode


async def _build_sequential(
    tasks: BaseTask | Sequence[BaseTask],
    registry: RegistryABC | None,
    fail_mode: FailMode | str,
    selector: _SequentialModeSelector,
    resume_build_id: UUID | None,
    global_lock_manager: GlobalConcurrencyLockManager | None,
    global_lock_config: GlobalLockConfig | None,
    event_handlers: Sequence[BuildEventHandler],
) -> BuildSummary:
    engine = BuildEngine(
        executor=HybridConcurrentTaskExecutor(selector, max_async_workers=1, max_thread_workers=1),
        registry=registry or registry_provider.get(),
        fail_mode=FailMode(fail_mode),
        event_handlers=event_handlers,
        lock_manager=global_lock_manager,
        lock_config=global_lock_config,
        max_parallel=1,
    )
    return await engine.run(as_task_list(tasks), resume_build_id)


async def build_sequential_aio(
    tasks: BaseTask | Sequence[BaseTask],
    registry: RegistryABC | None = None,
    fail_mode: FailMode | str = FailMode.FAIL_FAST,
    sync_run_default: Literal["thread", "blocking"] = "blocking",
    resume_build_id: UUID | None = None,
    global_lock_manager: GlobalConcurrencyLockManager | None = None,
    global_lock_config: GlobalLockConfig | None = None,
    *,
    event_handlers: Sequence[BuildEventHandler] = (),
) -> BuildSummary:
    """Build one task at a time, dependencies first (async API, for debugging).

    Tasks with ``run_aio`` are awaited; sync-only tasks run on the loop (``"blocking"``)
    or in a thread (``"thread"``). Dynamic dependencies are built (with their own
    dependencies) before the generator resumes; already-complete ones are not re-run.
    """
    sync_mode = (
        ExecutionMode.SYNC_THREAD if sync_run_default == "thread" else ExecutionMode.SYNC_BLOCKING
    )
    return await _build_sequential(
        tasks,
        registry,
        fail_mode,
        _SequentialModeSelector(False, sync_mode),
        resume_build_id,
        global_lock_manager,
        global_lock_config,
        event_handlers,
    )


def build_sequential(
    tasks: BaseTask | Sequence[BaseTask],
    registry: RegistryABC | None = None,
    fail_mode: FailMode | str = FailMode.FAIL_FAST,
    dual_run_default: Literal["sync", "async"] = "sync",
    resume_build_id: UUID | None = None,
    global_lock_manager: GlobalConcurrencyLockManager | None = None,
    global_lock_config: GlobalLockConfig | None = None,
    *,
    event_handlers: Sequence[BuildEventHandler] = (),
) -> BuildSummary:
    """Build one task at a time, dependencies first (sync API, for debugging).

    Sync tasks run with ``run()``; async-only tasks are awaited on a private event loop,
    so this works inside a notebook cell too; tasks with both run ``run()`` unless
    ``dual_run_default="async"``.
    """
    selector = _SequentialModeSelector(dual_run_default == "sync", ExecutionMode.SYNC_BLOCKING)
    return run_coroutine_sync(
        _build_sequential(
            tasks,
            registry,
            fail_mode,
            selector,
            resume_build_id,
            global_lock_manager,
            global_lock_config,
            event_handlers,
        )
    )
