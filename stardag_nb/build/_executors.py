"""Task executors: where and how a task's ``run``/``run_aio`` executes.

:class:`HybridConcurrentTaskExecutor` picks an :class:`ExecutionMode` per task:

- ``SYNC_BLOCKING``: ``run()`` inline on the event loop; no thread hop (the default
  for sync tasks in ``sd.build``: trivial tasks cost no more than the call);
- ``SYNC_THREAD``: ``run()`` in a thread pool (tasks that block for long, or any sync
  task while a notebook must stay responsive);
- ``SYNC_PROCESS``: ``run()`` in a process pool (CPU-bound work; tasks must be
  importable, so not defined in a notebook's ``__main__``);
- ``ASYNC_MAIN_LOOP``: ``await run_aio()`` on the loop.

A task asks for a mode with the class attribute ``__execution_mode__ = "thread"``
(or ``"process"``, ``"blocking"``); otherwise the selector's default applies.
Generator tasks (dynamic dependencies) are stepped where their mode says: each step of
a ``SYNC_THREAD`` generator runs in the pool, never on the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from .._task import BaseTask, _has_custom_run, _has_custom_run_aio, flatten_task_struct
from ._base import TaskExecutorABC

if TYPE_CHECKING:
    from uuid import UUID

    from .._task import TaskStruct

__all__ = [
    "DefaultExecutionModeSelector",
    "ExecutionMode",
    "ExecutionModeSelector",
    "HybridConcurrentTaskExecutor",
    "RoutedTaskExecutor",
]

ExecutorKeyT = TypeVar("ExecutorKeyT", bound=Hashable)


class ExecutionMode(StrEnum):
    """Where a task runs."""

    SYNC_BLOCKING = "sync_blocking"
    SYNC_THREAD = "sync_thread"
    SYNC_PROCESS = "sync_process"
    ASYNC_MAIN_LOOP = "async_main_loop"


_REQUESTED = {
    "blocking": ExecutionMode.SYNC_BLOCKING,
    "inline": ExecutionMode.SYNC_BLOCKING,
    "thread": ExecutionMode.SYNC_THREAD,
    "process": ExecutionMode.SYNC_PROCESS,
    "async": ExecutionMode.ASYNC_MAIN_LOOP,
}


class ExecutionModeSelector(Protocol):
    """Chooses the execution mode of a task."""

    def __call__(self, task: BaseTask) -> ExecutionMode: ...


def requested_mode(task: BaseTask) -> ExecutionMode | None:
    """The mode the task's class asks for with ``__execution_mode__``, if any."""
    requested = getattr(type(task), "__execution_mode__", None)
    if requested is None:
        return None
    try:
        return _REQUESTED[str(requested)] if not isinstance(requested, ExecutionMode) else requested
    except KeyError:
        raise ValueError(
            f"{type(task).__qualname__}.__execution_mode__ = {requested!r}; use one of "
            f"{sorted(_REQUESTED)}"
        ) from None


class DefaultExecutionModeSelector:
    """Async tasks (any custom ``run_aio``) run on the loop; sync-only tasks use
    ``sync_run_default``; a class's ``__execution_mode__`` overrides both."""

    def __init__(self, sync_run_default: Literal["thread", "blocking", "process"] = "thread") -> None:
        self.sync_run_default = sync_run_default
        self._default = _REQUESTED[sync_run_default]
        self._cache: dict[type, ExecutionMode] = {}

    def __call__(self, task: BaseTask) -> ExecutionMode:
        cls = type(task)
        try:
            return self._cache[cls]
        except KeyError:
            pass
        mode = requested_mode(task)
        if mode is None:
            mode = ExecutionMode.ASYNC_MAIN_LOOP if _has_custom_run_aio(task) else self._default
        elif mode is not ExecutionMode.ASYNC_MAIN_LOOP and not _has_custom_run(task):
            mode = ExecutionMode.ASYNC_MAIN_LOOP  # an async-only task cannot run elsewhere
        self._cache[cls] = mode
        return mode


_FINISHED = object()


def _step_sync(gen: Any) -> Any:
    try:
        return next(gen)
    except StopIteration:
        return _FINISHED


def _start_sync(task: BaseTask) -> Any:
    """Run ``task.run()``; for a generator, also take its first step. -> (gen, step)."""
    result = task.run()
    if inspect.isgenerator(result):
        return result, _step_sync(result)
    return None, _FINISHED


def _run_in_process(task: BaseTask) -> list[BaseTask] | None:
    """In a worker process: run the task; a generator continues while what it yields is
    complete, else the incomplete dependencies go back (the task re-runs from scratch
    once they are built)."""
    result = task.run()
    if not inspect.isgenerator(result):
        return None
    try:
        struct = next(result)
        while True:
            deps = flatten_task_struct(struct)
            missing = [d for d in deps if not d.complete()]
            if missing:
                result.close()
                return missing
            struct = result.send(None)
    except StopIteration:
        return None


class HybridConcurrentTaskExecutor(TaskExecutorABC):
    """Runs each task inline, in a thread, in a process or on the loop, by its mode.

    ``submit`` returns None when the task finished, the ``TaskStruct`` a generator
    yielded (it is resumed by the next ``submit`` of the same task), or the exception.
    Pools are created on first use.
    """

    def __init__(
        self,
        execution_mode_selector: ExecutionModeSelector | None = None,
        max_async_workers: int = 10,
        max_thread_workers: int = 10,
        max_process_workers: int | None = None,
    ) -> None:
        self.execution_mode_selector = execution_mode_selector or DefaultExecutionModeSelector()
        self.max_async_workers = max_async_workers
        self.max_thread_workers = max_thread_workers
        self.max_process_workers = max_process_workers
        self._async_slots: asyncio.Semaphore | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPoolExecutor | None = None
        self._generators: dict[UUID, tuple[Any, ExecutionMode]] = {}

    def runs_inline(self, task: BaseTask) -> bool:
        """True if ``submit(task)`` completes without suspending (the build then skips
        creating an asyncio task for it)."""
        return self.execution_mode_selector(task) is ExecutionMode.SYNC_BLOCKING

    async def setup(self) -> None:
        self._async_slots = asyncio.Semaphore(self.max_async_workers)

    async def teardown(self, wait: bool = True) -> None:
        for gen, _ in self._generators.values():
            _close_generator(gen)
        self._generators.clear()
        if self._threads is not None:
            self._threads.shutdown(wait=wait, cancel_futures=not wait)
            self._threads = None
        if self._processes is not None:
            self._processes.shutdown(wait=wait, cancel_futures=not wait)
            self._processes = None

    def _pool(self, mode: ExecutionMode) -> Executor:
        if mode is ExecutionMode.SYNC_THREAD:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(
                    self.max_thread_workers, thread_name_prefix="stardag-nb-task"
                )
            return self._threads
        if self.max_process_workers is None:
            raise RuntimeError(
                "A task asked for process execution, but the executor has no process pool: "
                "use HybridConcurrentTaskExecutor(max_process_workers=N)."
            )
        if self._processes is None:
            self._processes = ProcessPoolExecutor(
                self.max_process_workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._processes

    async def submit(self, task: BaseTask) -> None | TaskStruct | Exception:
        try:
            saved = self._generators.pop(task.id, None)
            if saved is not None:
                gen, mode = saved
                step = await self._step(gen, mode)
            else:
                mode = self.execution_mode_selector(task)
                gen, step = await self._start(task, mode)
            if step is _FINISHED:
                return None
            if gen is not None:  # process mode keeps no generator: it re-runs from scratch
                self._generators[task.id] = (gen, mode)
            return step  # type: ignore[no-any-return]
        except Exception as exc:
            return exc

    async def _start(self, task: BaseTask, mode: ExecutionMode) -> tuple[Any, Any]:
        if mode is ExecutionMode.SYNC_BLOCKING:
            return _start_sync(task)
        if mode is ExecutionMode.SYNC_THREAD:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool(mode), _start_sync, task)  # type: ignore[no-any-return]
        if mode is ExecutionMode.SYNC_PROCESS:
            loop = asyncio.get_running_loop()
            missing = await loop.run_in_executor(self._pool(mode), _run_in_process, task)
            return None, (missing if missing else _FINISHED)
        slots = self._async_slots or asyncio.Semaphore(self.max_async_workers)
        async with slots:
            run_aio = task.run_aio()
            if inspect.isasyncgen(run_aio):
                return run_aio, await self._step(run_aio, mode)
            result = await run_aio
            if inspect.isgenerator(result):  # a sync generator run() via run_aio()
                return result, _step_sync(result)
            return None, _FINISHED

    async def _step(self, gen: Any, mode: ExecutionMode) -> Any:
        if inspect.isasyncgen(gen):
            try:
                return await gen.__anext__()
            except StopAsyncIteration:
                return _FINISHED
        if mode is ExecutionMode.SYNC_THREAD:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool(mode), _step_sync, gen)
        return _step_sync(gen)

    def discard(self, task: BaseTask) -> None:
        """Forget (and close) a suspended generator, e.g. when its build is cancelled."""
        saved = self._generators.pop(task.id, None)
        if saved is not None:
            _close_generator(saved[0])


def _close_generator(gen: Any) -> None:
    try:
        if inspect.isgenerator(gen):
            gen.close()
        # async generators are finalised by the loop's asyncgen hooks
    except Exception:  # pragma: no cover
        pass


class RoutedTaskExecutor(TaskExecutorABC):
    """Sends each task to one of several executors, chosen by ``router(task)``."""

    def __init__(
        self,
        executors: dict[ExecutorKeyT, TaskExecutorABC],
        router: Callable[[BaseTask], ExecutorKeyT],
    ) -> None:
        self.executors = executors
        self.router = router

    def _executor_for(self, task: BaseTask) -> TaskExecutorABC:
        key = self.router(task)
        try:
            return self.executors[key]
        except KeyError:
            raise KeyError(
                f"router sent {type(task).__name__} to {key!r}, but the executors are "
                f"{sorted(map(repr, self.executors))}"
            ) from None

    def runs_inline(self, task: BaseTask) -> bool:
        try:
            executor = self._executor_for(task)
        except KeyError:
            return False
        check = getattr(executor, "runs_inline", None)
        return bool(check(task)) if check is not None else False

    async def submit(self, task: BaseTask) -> None | TaskStruct | Exception:
        try:
            executor = self._executor_for(task)
        except KeyError as exc:
            return exc
        return await executor.submit(task)

    async def setup(self) -> None:
        for executor in self.executors.values():
            await executor.setup()

    async def teardown(self) -> None:
        for executor in self.executors.values():
            await executor.teardown()
