"""Sequential builds: one task at a time, in dependency order, without recursion.

Discovery stops at complete tasks. Dynamic dependencies (``run`` as a generator,
``run_aio`` as an async generator) are built, with their own dependencies, before the
generator resumes; already-complete ones are not re-run; all are counted.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Sequence
from typing import Any, Literal
from uuid import UUID

from .._task import BaseTask, TaskStruct, _has_custom_run, _has_custom_run_aio, flatten_task_struct
from ..registry import RegistryABC, registry_provider
from ._base import BuildExitStatus, BuildSummary, FailMode, TaskCount
from ._sync_bridge import run_coroutine_sync

__all__ = ["build_sequential", "build_sequential_aio"]

logger = logging.getLogger(__name__)

RunPolicy = Literal["sync", "async_blocking", "async_thread"]


def _as_task_list(tasks: BaseTask | Sequence[BaseTask]) -> list[BaseTask]:
    items = [tasks] if isinstance(tasks, BaseTask) else list(tasks)
    for item in items:
        if not isinstance(item, BaseTask):
            raise ValueError(f"build() takes tasks or a list of tasks; got {type(item).__name__}: {item!r:.60}")
    return items


class _CycleError(RuntimeError):
    """The dependencies form a cycle."""


class _SequentialBuild:
    """The state of one sequential build."""

    def __init__(self, registry: RegistryABC, fail_mode: FailMode, policy: RunPolicy) -> None:
        self.registry = registry
        self.fail_mode = FailMode(fail_mode)
        self.policy = policy
        self.count = TaskCount()
        self.done: set[UUID] = set()  # complete (before or during this build)
        self.failed: dict[UUID, BaseException] = {}
        self.skipped: set[UUID] = set()  # not run because a dependency failed
        self.seen: set[UUID] = set()
        self.generators: dict[UUID, Any] = {}
        self.build_id: UUID | None = None

    async def run(self, roots: list[BaseTask], resume_build_id: UUID | None) -> BuildSummary:
        self.build_id = resume_build_id or await self.registry.build_start_aio(roots)
        try:
            for root in roots:
                await self._build_one(root)
                if self.failed and self.fail_mode is FailMode.FAIL_FAST:
                    break
        except BaseException as exc:
            await self.registry.build_fail_aio(self.build_id, f"{type(exc).__name__}: {exc}")
            raise
        if self.failed:
            first = next(iter(self.failed.values()))
            last = list(self.failed.values())[-1]
            await self.registry.build_fail_aio(self.build_id, f"{type(first).__name__}: {first}")
            return BuildSummary(BuildExitStatus.FAILURE, self.count, self.build_id, last, dict(self.failed))
        await self.registry.build_complete_aio(self.build_id)
        return BuildSummary(BuildExitStatus.SUCCESS, self.count, self.build_id)

    def _discover(self, task: BaseTask) -> bool:
        """Count a newly met task; True if it still has to run."""
        if task.id in self.seen:
            return task.id not in self.done
        self.seen.add(task.id)
        self.count.discovered += 1
        if task.complete():
            self.done.add(task.id)
            self.count.previously_completed += 1
            return False
        return True

    async def _build_one(self, root: BaseTask) -> None:
        # Explicit stack of (task, phase): "visit" expands static deps, "run" starts or
        # resumes the task once its deps are done.
        stack: list[tuple[BaseTask, str]] = [(root, "visit")]
        on_stack: set[UUID] = set()
        while stack:
            task, phase = stack.pop()
            tid = task.id
            if tid in self.done or tid in self.failed or tid in self.skipped:
                continue
            if phase == "visit":
                if tid in on_stack:
                    raise _CycleError(f"dependency cycle through {task!r:.120}")
                if not self._discover(task):
                    continue
                on_stack.add(tid)
                stack.append((task, "run"))
                for dep in reversed(flatten_task_struct(task.requires())):
                    if dep.id not in self.done:
                        stack.append((dep, "visit"))
                continue
            # phase == "run"
            blocker = self._failed_dep(task)
            if blocker is not None:
                on_stack.discard(tid)
                self._block(task, blocker)
            else:
                pending = await self._step(task)
                if pending:
                    stack.append((task, "run"))
                    for dep in reversed(pending):
                        stack.append((dep, "visit"))
                    continue
                on_stack.discard(tid)
            if self.failed and self.fail_mode is FailMode.FAIL_FAST:
                return

    def _failed_dep(self, task: BaseTask) -> BaseTask | None:
        deps = flatten_task_struct(task.requires())
        deps += self.generators.get(task.id, (None, []))[1]
        for dep in deps:
            if dep.id in self.failed or dep.id in self.skipped:
                return dep
        return None

    def _block(self, task: BaseTask, dep: BaseTask) -> None:
        logger.info("Skipping %s: dependency %s failed", task, dep)
        self.skipped.add(task.id)
        self.generators.pop(task.id, None)

    async def _step(self, task: BaseTask) -> list[BaseTask]:
        """Run or resume ``task``; return the dynamic deps it still waits for."""
        tid = task.id
        reg, build_id = self.registry, self.build_id
        assert build_id is not None
        try:
            if tid in self.generators:
                await reg.task_resume_aio(build_id, task)
                gen, _ = self.generators[tid]
                result = await self._advance(gen)
            else:
                await reg.task_register_aio(build_id, task)
                await reg.task_start_aio(build_id, task)
                result = await self._start(task)
                if inspect.isgenerator(result) or inspect.isasyncgen(result):
                    gen = result
                    self.generators[tid] = (gen, [])
                    result = await self._advance(gen)
                else:
                    result = _FINISHED
            while result is not _FINISHED:
                deps = flatten_task_struct(result)
                self.generators[tid] = (self.generators[tid][0], deps)
                pending = [d for d in deps if d.id not in self.done and self._discover(d)]
                if pending:
                    await reg.task_suspend_aio(build_id, task)
                    return pending
                result = await self._advance(self.generators[tid][0])
        except Exception as exc:
            self.generators.pop(tid, None)
            self.failed[tid] = exc
            self.count.failed += 1
            logger.exception("Task %s failed", task)
            await reg.task_fail_aio(build_id, task, f"{type(exc).__name__}: {exc}")
            return []
        self.generators.pop(tid, None)
        self.done.add(tid)
        self.count.succeeded += 1
        await reg.task_complete_aio(build_id, task)
        assets = task.registry_assets_aio()
        assets = await assets if inspect.isawaitable(assets) else assets
        if assets:
            await reg.task_upload_assets_aio(build_id, task, assets)
        return []

    async def _start(self, task: BaseTask) -> Any:
        use_async = _has_custom_run_aio(task) and (
            not _has_custom_run(task) or self.policy != "sync"
        )
        if use_async:
            if inspect.isasyncgenfunction(inspect.unwrap(type(task).run_aio)):
                return task.run_aio()
            return await task.run_aio()
        if self.policy == "async_thread" and not type(task).has_dynamic_deps():
            return await asyncio.to_thread(task.run)
        return task.run()

    @staticmethod
    async def _advance(gen: Any) -> Any:
        try:
            if inspect.isasyncgen(gen):
                return await gen.__anext__()
            return next(gen)
        except (StopIteration, StopAsyncIteration):
            return _FINISHED


_FINISHED = object()


async def build_sequential_aio(
    tasks: BaseTask | Sequence[BaseTask],
    registry: RegistryABC | None = None,
    fail_mode: FailMode | str = FailMode.FAIL_FAST,
    sync_run_default: Literal["thread", "blocking"] = "blocking",
    resume_build_id: UUID | None = None,
    global_lock_manager: Any = None,
    global_lock_config: Any = None,
) -> BuildSummary:
    """Build ``tasks`` and their dependencies one at a time (async API, for debugging).

    Tasks with ``run_aio`` are awaited; sync-only tasks run on the loop
    (``"blocking"``) or in a thread (``"thread"``).
    """
    roots = _as_task_list(tasks)
    policy: RunPolicy = "async_thread" if sync_run_default == "thread" else "async_blocking"
    build = _SequentialBuild(registry or registry_provider.get(), FailMode(fail_mode), policy)
    return await build.run(roots, resume_build_id)


def build_sequential(
    tasks: BaseTask | Sequence[BaseTask],
    registry: RegistryABC | None = None,
    fail_mode: FailMode | str = FailMode.FAIL_FAST,
    dual_run_default: Literal["sync", "async"] = "sync",
    resume_build_id: UUID | None = None,
    global_lock_manager: Any = None,
    global_lock_config: Any = None,
) -> BuildSummary:
    """Build ``tasks`` and their dependencies one at a time (sync API, for debugging).

    Sync tasks run with ``run()``; async-only tasks are awaited on a private event loop,
    so this works inside a notebook cell too. Tasks with both run ``run()`` unless
    ``dual_run_default="async"``.
    """
    roots = _as_task_list(tasks)
    policy: RunPolicy = "sync" if dual_run_default == "sync" else "async_blocking"
    build = _SequentialBuild(registry or registry_provider.get(), FailMode(fail_mode), policy)
    return run_coroutine_sync(build.run(roots, resume_build_id))


