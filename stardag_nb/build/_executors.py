"""Task executors: where and how a task's ``run``/``run_aio`` executes.

:class:`HybridConcurrentTaskExecutor` picks an :class:`ExecutionMode` per task:

- ``SYNC_THREAD``: ``run()`` on a worker thread (the default for sync tasks):
  independent tasks run concurrently, up to ``max_thread_workers``, and the event loop
  stays free; workers hand results back in batches (:mod:`._workers`), so a trivial
  task costs little more than the call;
- ``SYNC_BLOCKING``: ``run()`` inline on the event loop (opt in with
  ``__execution_mode__ = "inline"``): no thread hop at all, but the loop (a notebook's
  kernel) is blocked while the body runs and sync tasks never overlap;
- ``SYNC_PROCESS``: ``run()`` in a process pool (CPU-bound work; tasks must be
  importable, so not defined in a notebook's ``__main__``);
- ``ASYNC_MAIN_LOOP``: ``await run_aio()`` on the loop.

A task asks for a mode with the class attribute ``__execution_mode__ = "thread"``
(or ``"process"``, ``"inline"``); otherwise the selector's default applies.
Generator tasks (dynamic dependencies) are stepped where their mode says: each step of
a ``SYNC_THREAD`` generator runs on a worker, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import multiprocessing
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Executor, ProcessPoolExecutor
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

from .._task import BaseTask, _has_custom_run, _has_custom_run_aio, flatten_task_struct
from ._base import TaskExecutorABC
from ._workers import CancelFlag, ThreadWorkers

if TYPE_CHECKING:
    from collections.abc import Generator
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

    def __init__(
        self, sync_run_default: Literal["thread", "blocking", "process"] = "thread"
    ) -> None:
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


class _ChainResult:
    """Awaits a chained task's result and gives it as ``submit`` does (a plain awaitable,
    not a coroutine: one never awaited, as when its build is cancelled, is no error)."""

    __slots__ = ("future", "generators", "task")

    def __init__(
        self, generators: dict[UUID, tuple[Any, ExecutionMode]], task: BaseTask, future: Any
    ) -> None:
        self.generators, self.task, self.future = generators, task, future

    def __await__(self) -> Any:
        with contextlib.suppress(Exception):  # (the outcome gives it)
            yield from self.future.__await__()
        return _thread_outcome(self.generators, self.task, self.future)


def _thread_outcome(
    generators: dict[UUID, tuple[Any, ExecutionMode]], task: BaseTask, future: Any
) -> Any:
    """What ``submit`` gives for the done future of a ``_start_sync`` job on a worker
    thread: None when the task finished, what its generator yielded (kept in
    ``generators`` to resume), or the exception."""
    error = future.exception()
    if error is not None:
        return error if isinstance(error, Exception) else RuntimeError(repr(error))
    gen, value = future.result()
    if value is _FINISHED:
        return None
    generators[task.id] = (gen, ExecutionMode.SYNC_THREAD)  # suspended
    return value


def _finished_step(result: Any) -> bool:
    """Whether a ``_start_sync`` result says the task finished (not suspended)."""
    return result[1] is _FINISHED


def _start_sync(task: BaseTask) -> tuple[Any, Any]:
    """Run ``task.run()``; for a generator, also take its first step. -> (gen, step)."""
    result = task.run()
    if inspect.isgenerator(result):
        return result, _step_sync(result)
    return None, _FINISHED


def _run_in_process(task: BaseTask) -> list[BaseTask] | None:
    """In a worker process: run the task; a generator continues while what it yields is
    complete, else the incomplete dependencies go back (the task re-runs from scratch
    once they are built)."""
    try:
        result = task.run()
    except StopIteration as exc:  # the parent's future would refuse it
        raise RuntimeError(f"the task body raised {exc!r}") from exc
    if not inspect.isgenerator(result):
        return None
    gen = cast("Generator[TaskStruct, None, object]", result)  # run() is typed Any
    try:
        struct = next(gen)
        while True:
            deps = flatten_task_struct(struct)
            missing = [d for d in deps if not d.complete()]
            if missing:
                gen.close()
                return missing
            struct = gen.send(None)
    except StopIteration:
        return None


# How HybridConcurrentTaskExecutor takes tasks: a subclass that changes any of these is
# not bypassed by the direct path (see follows_directly).
_SUBMITTING = (
    "submit",
    "submit_chain",
    "chains",
    "submit_direct",
    "submit_chain_direct",
    "outcome",
)


class HybridConcurrentTaskExecutor(TaskExecutorABC):
    """Runs each task on a worker thread, inline, in a process or on the loop, by its mode.

    ``submit`` returns None when the task finished, the ``TaskStruct`` a generator
    yielded (it is resumed by the next ``submit`` of the same task), or the exception.
    Pools are created on first use. ``cancel_grace_seconds``: how long a cancelled
    build waits for sync task bodies still running on worker threads (they can check
    ``sd.cancelled()``) before it gives up on them.
    """

    def __init__(
        self,
        execution_mode_selector: ExecutionModeSelector | None = None,
        max_async_workers: int = 10,
        max_thread_workers: int = 10,
        max_process_workers: int | None = None,
        cancel_grace_seconds: float = 2.0,
    ) -> None:
        self.execution_mode_selector = execution_mode_selector or DefaultExecutionModeSelector()
        self.max_async_workers = max_async_workers
        self.max_thread_workers = max_thread_workers
        self.max_process_workers = max_process_workers
        self.cancel_grace_seconds = cancel_grace_seconds
        self._async_slots: asyncio.Semaphore | None = None
        self._threads: ThreadWorkers | None = None
        self._processes: ProcessPoolExecutor | None = None
        self._generators: dict[UUID, tuple[Any, ExecutionMode]] = {}
        self._cancel_flag = CancelFlag()

    def runs_inline(self, task: BaseTask) -> bool:
        """True if ``submit(task)`` completes without suspending (the build then skips
        creating an asyncio task for it)."""
        return self.execution_mode_selector(task) is ExecutionMode.SYNC_BLOCKING

    async def setup(self) -> None:
        self._async_slots = asyncio.Semaphore(self.max_async_workers)
        self._cancel_flag = CancelFlag()

    def cancel(self) -> None:
        """The build was asked to stop: ``sd.cancelled()`` turns True in its task bodies,
        and process-mode tasks are terminated at teardown."""
        self._cancel_flag.set()

    async def teardown(self, wait: bool = True) -> None:
        threads, self._threads = self._threads, None
        if threads is not None:
            try:
                # Waits for running bodies (all of them when ``wait``), but once the
                # build is cancelled only for the grace period.
                while wait and threads.busy and not self._cancel_flag.is_set():
                    await threads.wait_idle(0.1)
                if threads.busy:
                    await threads.wait_idle(self.cancel_grace_seconds)
            finally:
                threads.shutdown()
        for gen, _ in self._generators.values():
            _close_generator(gen)
        self._generators.clear()
        if self._processes is not None:
            if not wait:
                _terminate_workers(self._processes)
            self._processes.shutdown(wait=wait, cancel_futures=not wait)
            self._processes = None

    def _workers(self) -> ThreadWorkers:
        if self._threads is None:
            self._threads = ThreadWorkers(self.max_thread_workers, self._cancel_flag)
        return self._threads

    def _process_pool(self) -> Executor:
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

    async def submit(self, task: BaseTask) -> TaskStruct | Exception | None:
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

    def chains(self, task: BaseTask) -> bool:
        """True if ``task`` can be part of :meth:`submit_chain`: it runs on a worker thread
        and has not started (no generator of it is suspended)."""
        return (
            task.id not in self._generators
            and self.execution_mode_selector(task) is ExecutionMode.SYNC_THREAD
        )

    def submit_chain(
        self, tasks: list[BaseTask]
    ) -> list[tuple[Awaitable[bool] | None, Awaitable[TaskStruct | Exception | None]]]:
        """Run ``tasks`` (each of which :meth:`chains`) one after another on one worker
        thread, each only if the one before finished successfully: a chain of tasks each
        waiting only for the one before runs without a trip through the event loop
        between them. For each task: an awaitable that tells whether it started (None
        for the first, which always does; cancel it to stop the chain there) and one of
        its result, as :meth:`submit` gives it (for a prefix of ``tasks`` in general: here
        all of them)."""
        steps = self._workers().submit_chain(_start_sync, tasks, _finished_step)
        return [
            (started, _ChainResult(self._generators, task, result))
            for task, (started, result) in zip(tasks, steps, strict=True)
        ]

    def follows_directly(self) -> bool:
        """Whether a build may use :meth:`submit_direct` and :meth:`submit_chain_direct`
        for tasks that :meth:`chains`: not when a subclass changed how tasks are
        submitted (its ``submit`` would be bypassed)."""
        cls, base = type(self), HybridConcurrentTaskExecutor
        return all(getattr(cls, name) is getattr(base, name) for name in _SUBMITTING)

    def submit_direct(self, task: BaseTask) -> asyncio.Future[Any]:
        """Queue ``task`` (which :meth:`chains`) on a worker thread; the future gives what
        :meth:`outcome` reads. For callers that follow many trivial tasks: no coroutine
        per task, as :meth:`submit` needs."""
        return self._workers().submit(_start_sync, task)

    def submit_chain_direct(
        self, tasks: list[BaseTask]
    ) -> list[tuple[asyncio.Future[bool] | None, asyncio.Future[Any]]]:
        """:meth:`submit_chain` with plain futures: for each task, one that tells whether
        it started (None for the first) and one for :meth:`outcome`."""
        return self._workers().submit_chain(_start_sync, tasks, _finished_step)

    def outcome(self, task: BaseTask, future: asyncio.Future[Any]) -> TaskStruct | Exception | None:
        """What :meth:`submit` would give for the done future of :meth:`submit_direct`
        (or of a task of :meth:`submit_chain_direct`): None when the task finished, what
        its generator yielded (it resumes by the next ``submit``), or the exception."""
        return _thread_outcome(self._generators, task, future)  # type: ignore[no-any-return]

    async def _start(self, task: BaseTask, mode: ExecutionMode) -> tuple[Any, Any]:
        if mode is ExecutionMode.SYNC_BLOCKING:
            return _start_sync(task)
        if mode is ExecutionMode.SYNC_THREAD:
            started: tuple[Any, Any] = await self._workers().submit(_start_sync, task)
            return started
        if mode is ExecutionMode.SYNC_PROCESS:
            loop = asyncio.get_running_loop()
            missing = await loop.run_in_executor(self._process_pool(), _run_in_process, task)
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
            return await self._workers().submit(_step_sync, gen)
        return _step_sync(gen)

    def discard(self, task: BaseTask) -> None:
        """Forget (and close) a suspended generator, e.g. when its build is cancelled."""
        saved = self._generators.pop(task.id, None)
        if saved is not None:
            _close_generator(saved[0])


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a cancelled build's process-mode tasks now rather than when they finish."""
    for process in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(Exception):  # the process may already be gone
            process.terminate()


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

    def chains(self, task: BaseTask) -> bool:
        try:
            executor = self._executor_for(task)
        except KeyError:
            return False
        check = getattr(executor, "chains", None)
        return bool(check(task)) if check is not None else False

    def submit_chain(
        self, tasks: list[BaseTask]
    ) -> list[tuple[Awaitable[bool] | None, Awaitable[TaskStruct | Exception | None]]]:
        """Chains the leading tasks that go to the same executor as the first."""
        executor = self._executor_for(tasks[0])
        same = 1
        while same < len(tasks) and self._executor_for(tasks[same]) is executor:
            same += 1
        return executor.submit_chain(tasks[:same])  # type: ignore[attr-defined,no-any-return]

    async def submit(self, task: BaseTask) -> TaskStruct | Exception | None:
        try:
            executor = self._executor_for(task)
        except KeyError as exc:
            return exc
        return await executor.submit(task)

    async def setup(self) -> None:
        for executor in self.executors.values():
            await executor.setup()

    def cancel(self) -> None:
        """Pass a build's cancellation on to every executor that takes it."""
        for executor in self.executors.values():
            cancel = getattr(executor, "cancel", None)
            if cancel is not None:
                cancel()

    async def teardown(self, wait: bool = True) -> None:
        for executor in self.executors.values():
            await _teardown(executor, wait)


async def _teardown(executor: TaskExecutorABC, wait: bool) -> None:
    """``executor.teardown(wait=wait)``, or ``teardown()`` for one that takes no ``wait``."""
    try:
        params = inspect.signature(executor.teardown).parameters
    except (TypeError, ValueError):  # pragma: no cover
        params = {}  # type: ignore[assignment]
    if "wait" in params:
        await executor.teardown(wait=wait)  # type: ignore[call-arg]
    else:
        await executor.teardown()
