"""The build scheduler: discover what is incomplete, run it dependencies first.

One engine serves all four builders. It is iterative (no recursion limit) and linear in
tasks + edges: discovery walks each task once, each node keeps a count of the
dependencies it still waits for, and a finished task decrements its dependents' counts
and queues those that reach zero. Tasks the executor runs inline (an explicit opt-in)
are awaited in the loop directly; plain sync tasks on worker threads are followed by
callbacks on their futures (no coroutine per task); others become asyncio tasks. All
report back through one event, so no step rescans the running set.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from uuid import UUID

from .._task import BaseTask, TaskStruct, flatten_task_struct
from ..registry import RegistryABC
from ._base import BuildExitStatus, BuildSummary, FailMode, TaskCount, TaskExecutorABC
from ._events import BuildEvent, BuildEventHandler, BuildEventKind, TaskNode, emit
from ._executors import _teardown
from ._locks import (
    DefaultGlobalLockSelector,
    GlobalConcurrencyLockManager,
    GlobalLockConfig,
    LockAcquisitionStatus,
    LockWaitTimeoutError,
)

__all__ = ["BuildEngine", "DependencyCycleError", "as_task_list"]

logger = logging.getLogger("stardag_nb.build")


class _State(Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    PREVIOUSLY_COMPLETED = "previously_completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"  # a dependency failed: it will not run in this build


_DONE = (_State.COMPLETED, _State.PREVIOUSLY_COMPLETED)
_DEAD = (_State.FAILED, _State.CANCELLED, _State.BLOCKED)
_LIVE = (_State.PENDING, _State.RUNNING, _State.SUSPENDED)  # not done yet


@dataclass(eq=False, slots=True)
class _Node:
    task: BaseTask
    state: _State = _State.PENDING
    waiting: int = 0
    dependents: list[_Node] = field(default_factory=list)
    started: bool = False
    suspended: bool = False
    lock_held: bool = False
    resumes: int = 0  # resumes in a row with every yielded dependency already done
    yielded: list[_Node] | None = None  # what a suspended generator waits for
    renewer: asyncio.Task[None] | None = None


_SLICE_SECONDS = 0.02  # the longest the engine holds the loop between yields
_YIELD_TURNS = 3  # loop turns a yield gives (see _yield_slice)
_SPAWN_BATCH = 64  # tasks spawned before their first steps run
_DIRECT_SPAWNS = 8  # dependents a completion starts itself; more go through the queue
_MAX_CHAIN = 64  # tasks handed to the executor as one chain after the first
_SCAN_CHUNK = 32  # new dependencies of one task looked at between checks of the slice


def _checks_outputs(task: BaseTask) -> bool:
    """True if the task's class checks completion the library's way: its output exists."""
    from .._task import Task

    cls = type(task)
    return (
        isinstance(task, Task)
        and cls.complete_aio is Task.complete_aio
        and cls.complete is Task.complete
    )


_stat_types: tuple[tuple[type, ...], type] | None = None


def _stats_plainly(task: BaseTask) -> bool:
    """Whether this task's output is a local file or an in-memory target of exactly the
    library's types, possibly in the library's serializing wrapper (so ``exists()`` is
    ``exists_aio()``: a stat or a lookup), checked per instance: one class's instances
    can point at different stores (an AliasTask, a root chosen by a field). Only for
    tasks of a class that :func:`_checks_outputs`."""
    global _stat_types
    if _stat_types is None:
        from ..target import InMemoryFileSystemTarget, InMemoryTarget, LocalTarget
        from ..target.serialize import Serializable

        _stat_types = ((LocalTarget, InMemoryFileSystemTarget, InMemoryTarget), Serializable)
    targets, wrapper = _stat_types
    try:
        output = task.output()  # type: ignore[attr-defined]
    except Exception:
        return False  # the async path reports it
    if type(output) is wrapper:
        output = output.wrapped  # type: ignore[attr-defined]
    return type(output) in targets


def _records_inline(registry: RegistryABC) -> bool:
    """True if the registry's async calls that record tasks are its sync methods (they
    only queue rows): the engine may then call those on the loop directly, without a
    coroutine per call."""
    cls = type(registry)
    return all(getattr(cls, name) is getattr(RegistryABC, name) for name in _RECORDING_CALLS)


_RECORDING_CALLS = (
    "task_register_aio",
    "task_add_dependencies_aio",
    "task_already_complete_aio",
    "task_start_aio",
    "task_complete_aio",
)


def _plain_assets(cls: type[BaseTask]) -> bool:
    """True if tasks of ``cls`` record no assets (the base class's methods)."""
    return (
        cls.registry_assets is BaseTask.registry_assets
        and cls.registry_assets_aio is BaseTask.registry_assets_aio
    )


def _no_stop_iteration(fn: Any) -> Any:
    """``fn()``, a StopIteration it raises turned into a RuntimeError: a future refuses
    StopIteration (the awaiting coroutine would never hear of the call's end)."""
    try:
        return fn()
    except StopIteration as exc:
        raise RuntimeError(f"{fn!r:.100} raised {exc!r}") from exc


def _safely(test: Any, task: BaseTask) -> bool:
    """``test(task)``, False if it raises (the task's own run reports the error)."""
    try:
        return bool(test(task))
    except Exception:
        return False


def _only_sync_complete(task: BaseTask) -> bool:
    """True if ``complete_aio`` would just call a custom sync ``complete()``."""
    from .._task import Task

    cls = type(task)
    if cls.complete_aio is BaseTask.complete_aio:
        return True
    return cls.complete_aio is Task.complete_aio and cls.complete is not Task.complete


_MAX_IDLE_RESUMES = 1000


class DependencyCycleError(RuntimeError):
    """Tasks wait on each other (through ``requires()`` or what ``run()`` yields)."""


def _idle_resumes_error(node: _Node) -> Exception | None:
    if node.resumes <= _MAX_IDLE_RESUMES:
        return None
    return RuntimeError(
        f"{node.task!r:.100} yielded only complete dependencies {_MAX_IDLE_RESUMES} times "
        "in a row: a generator run() must make progress between yields"
    )


def _cycle_through(node: _Node, waiting: list[_Node]) -> list[_Node] | None:
    """If ``node`` waiting on ``waiting`` closes a cycle, the cycle's nodes (from
    ``node`` through what it waits for, back to ``node``); else None.

    A cycle exists when a node in ``waiting`` is ``node`` itself or waits, through the
    dependents' edges, for ``node``: walk from ``node`` up its transitive dependents."""
    targets = {id(n) for n in waiting}
    if not targets:
        return None
    if id(node) in targets:
        return [node, node]
    parent: dict[int, _Node | None] = {id(node): None}
    queue = deque([node])
    while queue:
        current = queue.popleft()
        for dependent in current.dependents:
            if id(dependent) in parent:
                continue
            parent[id(dependent)] = current
            if id(dependent) in targets:
                path = [dependent]
                step: _Node | None = current
                while step is not None:
                    path.append(step)
                    step = parent[id(step)]
                # path: dependent, ..., node (each waits for the next); close the loop
                return [node, *path]
            queue.append(dependent)
    return None


class _CompletedElsewhere(Exception):
    """The task was completed by another build while this one waited for its lock."""


def as_task_list(tasks: BaseTask | Sequence[BaseTask]) -> list[BaseTask]:
    """One task or a sequence of tasks, as a list; anything else is a ValueError."""
    items = [tasks] if isinstance(tasks, BaseTask) else list(tasks)
    for item in items:
        if not isinstance(item, BaseTask):
            raise ValueError(
                f"build() takes tasks or a list of tasks; got {type(item).__name__}: {item!r:.80}"
            )
    return items


def _unique(tasks: list[BaseTask]) -> list[BaseTask]:
    seen: set[int] = set()
    out = []
    for task in tasks:
        key = task.id.int
        if key not in seen:
            seen.add(key)
            out.append(task)
    return out


class BuildEngine:
    """The state of one build. Use :meth:`run` once."""

    def __init__(
        self,
        executor: TaskExecutorABC,
        registry: RegistryABC,
        fail_mode: FailMode,
        event_handlers: Sequence[BuildEventHandler] = (),
        lock_manager: GlobalConcurrencyLockManager | None = None,
        lock_config: GlobalLockConfig | None = None,
        max_parallel: int | None = None,
        max_concurrent_discover: int = 50,
    ) -> None:
        self.executor = executor
        self.registry = registry
        self.fail_mode = FailMode(fail_mode)
        self.handlers = list(event_handlers)
        self.lock_manager = lock_manager
        self.lock_config = lock_config or GlobalLockConfig()
        self._use_lock = (
            DefaultGlobalLockSelector(self.lock_config) if lock_manager is not None else None
        )
        self.max_parallel = max_parallel
        self.nodes: dict[int, _Node] = {}  # by task.id.int (a C-level hash)
        self.ready: deque[_Node] = deque()
        self.running: dict[asyncio.Task[None], _Node] = {}
        # Tasks on worker threads followed by callbacks (see _start_direct): the future
        # of each one's outcome (or, for a chained one not yet started, of its start).
        self.direct: dict[asyncio.Future[Any], _Node] = {}
        self._sync_registry = _records_inline(registry)
        self._direct_ok = (
            lock_manager is None
            and max_parallel is None
            and bool(getattr(executor, "follows_directly", lambda: False)())
            and self._sync_registry
        )
        self._plain_assets: dict[type, bool] = {}
        self._ending = False
        self.count = TaskCount()
        self.errors: dict[UUID, BaseException] = {}
        self.last_error: BaseException | None = None
        self.build_id: UUID | None = None
        self._progress = asyncio.Event()
        self._inline = getattr(executor, "runs_inline", None)
        self._chains = (
            getattr(executor, "chains", None) if hasattr(executor, "submit_chain") else None
        )
        self._waiting_for_lock = 0
        self._exit_early = False
        self._slice_end = 0.0
        self._checked: dict[int, bool | BaseException] = {}
        self._local_check: dict[type, bool] = {}
        self._discover_slots = asyncio.Semaphore(max(1, max_concurrent_discover))

    @property
    def _started_id(self) -> UUID:
        """The build's id in the registry, known once :meth:`run` has started it."""
        if self.build_id is None:
            raise RuntimeError("the build has not been started in the registry: no build id yet")
        return self.build_id

    # -- events -------------------------------------------------------------------------

    def _emit(self, kind: BuildEventKind, task: BaseTask | None = None, **kw: Any) -> None:
        if self.handlers:
            emit(self.handlers, BuildEvent(kind, self.build_id, task, **kw))

    # -- the build ----------------------------------------------------------------------

    async def run(self, roots: list[BaseTask], resume_build_id: UUID | None = None) -> BuildSummary:
        """Build ``roots``; return the summary (task failures do not raise)."""
        roots = _unique(roots)
        cancelled = False
        if resume_build_id is not None:
            self.build_id = resume_build_id
        else:
            # A cancel while the registry records the start (possibly in a thread) must
            # not leave a build recorded as running: let the start finish, then end it.
            starting = asyncio.ensure_future(self.registry.build_start_aio(roots))
            try:
                self.build_id = await asyncio.shield(starting)
            except asyncio.CancelledError:
                self.build_id = await starting
                cancelled = True
        self._emit(BuildEventKind.BUILD_STARTED)
        await self.executor.setup()
        try:
            if cancelled:
                raise asyncio.CancelledError()
            await self._discover(roots, dynamic=False)
            await self._loop()
        except asyncio.CancelledError:
            cancelled = True
            self._cancel_executor()
            raise
        finally:
            # Shielded: a second cancel (a second interrupt, Cancel clicked twice) must
            # not cut the ending short, or the registry would keep the build running.
            finishing = asyncio.ensure_future(self._finish(cancelled))
            cancelled_again = False
            while not finishing.done():
                try:
                    await asyncio.shield(finishing)
                except asyncio.CancelledError:
                    cancelled_again = True
                    self._cancel_executor()  # stop waiting for task bodies
            finishing.result()
            if cancelled_again and not cancelled:
                raise asyncio.CancelledError()
        return self._summary()

    def _cancel_executor(self) -> None:
        """``sd.cancelled()`` turns True in the task bodies still running."""
        cancel = getattr(self.executor, "cancel", None)
        if cancel is not None:
            cancel()

    async def _loop(self) -> None:
        while True:
            spawned = 0
            while self.ready and not self._stopping():
                if self.max_parallel is not None and len(self.running) >= self.max_parallel:
                    break
                if spawned >= _SPAWN_BATCH or time.perf_counter() >= self._slice_end:
                    # Let the tasks just spawned take their first step (and the loop's
                    # other work run) before spawning more.
                    await self._yield_slice()
                    spawned = 0
                    continue
                node = self.ready.popleft()
                if node.state in _DONE or node.state in _DEAD or node.state is _State.RUNNING:
                    continue
                if self._runs_inline(node):
                    await self._execute(node)
                else:
                    self._spawn(node)
                    spawned += 1
            if not self.running and not self.direct:
                return
            if self._stopping():
                self._cancel_running()
                self._cancel_executor()  # fail fast: running bodies may stop early too
                return
            if self.lock_config.exit_early_when_all_locked and self._all_waiting_for_locks():
                self._exit_early = True
                self._cancel_running()
                return
            self._progress.clear()
            await self._progress.wait()

    def _stopping(self) -> bool:
        return bool(self.errors) and self.fail_mode is FailMode.FAIL_FAST

    def _all_waiting_for_locks(self) -> bool:
        return not self.ready and 0 < len(self.running) == self._waiting_for_lock

    def _runs_inline(self, node: _Node) -> bool:
        if self._inline is None or (self._use_lock is not None and self._use_lock(node.task)):
            return False
        try:
            return bool(self._inline(node.task))
        except Exception:
            return False

    def _spawn(self, node: _Node) -> None:
        if self._goes_direct(node):
            self._start_direct(node)
            return
        node.state = _State.RUNNING  # at once: no other path may queue it meanwhile
        self._track(node, self._execute(node))

    def _track(self, node: _Node, step: Coroutine[Any, Any, None]) -> None:
        """Run ``step`` of ``node`` as an asyncio task the build waits for."""
        task = asyncio.ensure_future(step)
        self.running[task] = node
        task.add_done_callback(self._on_spawned_done)

    def _on_spawned_done(self, task: asyncio.Task[None]) -> None:
        self.running.pop(task, None)
        self._progress.set()

    def _cancel_running(self) -> None:
        for task in list(self.running):
            task.cancel()
        for future in list(self.direct):
            future.cancel()  # a body not started yet never starts

    async def _record(self, call: Awaitable[Any], what: str, task: BaseTask) -> None:
        """Await a registry call; a registry failure is logged, never fails the build.
        (``what`` is formatted with the task only if logged.)"""
        try:
            await call
        except Exception:
            logger.exception("registry: could not record " + what, repr(task)[:100])

    def _discard(self, task: BaseTask) -> None:
        """Let the executor drop what it keeps for ``task`` (a suspended generator)."""
        discard = getattr(self.executor, "discard", None)
        if discard is not None:
            discard(task)

    # -- discovery ----------------------------------------------------------------------

    async def _discover(self, tasks: list[BaseTask], dynamic: bool) -> list[_Node]:
        """Add ``tasks`` and their incomplete static dependencies (depth first, without
        recursion); queue those that can run. Returns the nodes of ``tasks``.

        Works in time slices, yielding to the loop between them; completion checks that
        do I/O (remote targets) run concurrently, ``max_concurrent_discover`` at once."""
        nodes = self.nodes
        stack: list[tuple[BaseTask, list[BaseTask] | None]] = [(t, None) for t in reversed(tasks)]
        while stack:
            if time.perf_counter() >= self._slice_end:
                await self._yield_slice()
            task, deps = stack.pop()
            if deps is None:  # first visit
                key = task.id.int
                if key in nodes:
                    continue
                node = nodes[key] = _Node(task)
                self.count.discovered += 1
                try:
                    known = self._checked.pop(key, None)
                    if isinstance(known, BaseException):
                        raise known
                    if known is not None:
                        complete = known
                    elif self._checks_locally(task):
                        complete = task.complete()  # a stat: no coroutine for it
                    else:
                        complete = await self._complete_elsewhere(task)
                    static = [] if complete else flatten_task_struct(task.requires())
                except Exception as exc:  # a broken target root, a failing requires()...
                    await self._register(node, [], dynamic)
                    await self._fail(node, exc)
                    continue
                if complete:
                    node.state = _State.PREVIOUSLY_COMPLETED
                    self.count.previously_completed += 1
                    if self._sync_registry:
                        self._register_now(node, [], dynamic)
                    else:
                        await self._register(node, [], dynamic)
                    if node.dependents:  # wired by a discovery that ran meanwhile
                        self._release_dependents(node)
                    continue
                stack.append((task, static))
                fresh: list[BaseTask] = []
                slow: list[BaseTask] = []  # whose completion check may do I/O
                for start in range(0, len(static), _SCAN_CHUNK):  # ids: made by requires()
                    if time.perf_counter() >= self._slice_end:  # (requires() may take long)
                        await self._yield_slice()
                    chunk = static[start : start + _SCAN_CHUNK]
                    new = [dep for dep in chunk if dep.id.int not in nodes]
                    fresh += new
                    if len(static) > 1:  # (a first output(): ~10 us, or far more)
                        slow += [dep for dep in new if not self._checks_locally(dep)]
                if len(slow) > 1:
                    await self._check_concurrently(slow)
                stack.extend((d, None) for d in reversed(fresh))
                continue
            # second visit: every dependency has a node now
            node = nodes[task.id.int]
            wired = {dep.id.int: dep for dep in deps}  # (equal tasks: one id, one edge)
            waiting = 0
            for key in wired:
                dep_node = nodes[key]
                state = dep_node.state
                if state in _LIVE:
                    waiting += 1
                    dep_node.dependents.append(node)
                elif state in _DEAD:
                    node.state = _State.BLOCKED
            node.waiting += waiting
            if self._sync_registry:
                self._register_now(node, list(wired.values()), dynamic)
            else:
                await self._register(node, list(wired.values()), dynamic)
            if node.waiting == 0 and node.state is _State.PENDING:
                self.ready.append(node)
                self._progress.set()
        return [nodes[t.id.int] for t in tasks]

    async def _yield_slice(self) -> None:
        """Let the loop run other work (a notebook's cells, widget messages)."""
        # Three turns: after the first, this coroutine runs first in the next turn, ahead
        # of the timers and I/O that turn found due; after the second, behind their
        # callbacks; after the third, behind the coroutines those callbacks woke (a
        # ticker's sleep, a kernel's message handler), which would otherwise wait for
        # the next slice.
        for _ in range(_YIELD_TURNS):
            await asyncio.sleep(0)
        self._slice_end = time.perf_counter() + _SLICE_SECONDS

    async def _complete(self, task: BaseTask) -> bool:
        if self._checks_locally(task):
            return task.complete()  # a stat call: cheaper than any hand-off
        return await self._complete_elsewhere(task)

    async def _complete_elsewhere(self, task: BaseTask) -> bool:
        """A completion check that may do I/O: ``max_concurrent_discover`` at once."""
        async with self._discover_slots:
            if _only_sync_complete(task):  # a custom complete(): it may do I/O
                return await asyncio.to_thread(_no_stop_iteration, task.complete)
            return await task.complete_aio()

    def _checks_locally(self, task: BaseTask) -> bool:
        """True if the task's completion check is a local stat or lookup (no I/O worth a
        thread or concurrency; ``complete()`` is then ``complete_aio()``): its class's
        check is the library's (decided once per class in a build), and its own output
        a plain local or in-memory target (one class's instances can point at
        different stores)."""
        cls = type(task)
        local = self._local_check.get(cls)
        if local is None:
            local = self._local_check[cls] = _checks_outputs(task)
        return local and _stats_plainly(task)

    async def _check_concurrently(self, slow: list[BaseTask]) -> None:
        """Check the completion of tasks whose check does I/O (remote targets) at once,
        ``max_concurrent_discover`` at a time; the results wait for their first visit."""

        async def check(task: BaseTask) -> None:
            try:
                self._checked[task.id.int] = await self._complete_elsewhere(task)
            except Exception as exc:
                self._checked[task.id.int] = exc

        await asyncio.gather(*(check(t) for t in slow))

    async def _register(self, node: _Node, deps: list[BaseTask], dynamic: bool) -> None:
        task = node.task
        dep_ids = tuple(d.id for d in deps)
        try:
            await self.registry.task_register_aio(self._started_id, task)
            if dep_ids:
                await self.registry.task_add_dependencies_aio(
                    self._started_id, task, dep_ids, False
                )
            if node.state is _State.PREVIOUSLY_COMPLETED:
                await self.registry.task_already_complete_aio(self._started_id, task)
        except Exception:
            logger.exception("registry: could not register %s", task)
        self._announce(node, dep_ids, dynamic)

    def _register_now(self, node: _Node, deps: list[BaseTask], dynamic: bool) -> None:
        """:meth:`_register` with a registry that records on the loop (no coroutines)."""
        task = node.task
        dep_ids = tuple(d.id for d in deps)
        registry = self.registry
        try:
            build_id = self._started_id
            registry.task_register(build_id, task)
            if dep_ids:
                registry.task_add_dependencies(build_id, task, dep_ids, False)
            if node.state is _State.PREVIOUSLY_COMPLETED:
                registry.task_already_complete(build_id, task)
        except Exception:
            logger.exception("registry: could not register %s", task)
        self._announce(node, dep_ids, dynamic)

    def _announce(self, node: _Node, dep_ids: tuple[UUID, ...], dynamic: bool) -> None:
        """Tell the event handlers that ``node`` is part of the build."""
        task = node.task
        if self.handlers:
            type_id = type(task).__type_id__
            node_info = TaskNode(
                id=task.id,
                name=type_id.name,
                namespace=type_id.namespace,
                already_complete=node.state is _State.PREVIOUSLY_COMPLETED,
                dependencies=dep_ids,
                dynamic=dynamic,
            )
            self._emit(BuildEventKind.TASK_REGISTERED, task, node=node_info)

    # -- running ------------------------------------------------------------------------

    async def _execute(self, node: _Node) -> None:
        task = node.task
        node.state = _State.RUNNING
        try:
            if self._use_lock is not None and self._use_lock(task) and not node.lock_held:
                await self._acquire_lock(node)
            if node.started:
                node.suspended = False
                if node.yielded is not None:
                    yielded, node.yielded = node.yielded, None
                    error = await self._incomplete_error(node, yielded)
                    if error is not None:
                        raise error
                await self.registry.task_resume_aio(self._started_id, task)
                self._emit(BuildEventKind.TASK_RESUMED, task)
            else:
                node.started = True
                await self.registry.task_start_aio(self._started_id, task)
                self._emit(BuildEventKind.TASK_STARTED, task)
            node.state = _State.RUNNING
            result = await self._submit(node)
        except _CompletedElsewhere:
            await self._completed_elsewhere(node)
            return
        except asyncio.CancelledError:
            await self._cancel(node)
            raise
        except Exception as exc:
            result = exc
        await self._settle(node, result)

    async def _settle(self, node: _Node, result: TaskStruct | BaseException | None) -> None:
        if result is None:
            await self._succeed(node)
        elif isinstance(result, BaseException):
            await self._fail(node, result)
        else:
            await self._suspend(node, result)

    def _submit(self, node: _Node) -> Awaitable[TaskStruct | Exception | None]:
        """Hand the task to the executor; with the tasks that wait only for it, one after
        another, when the executor can run them as a chain (no trip through the loop
        between them: a line of tasks runs as fast as inline, without blocking it)."""
        chain = self._chain_after(node)
        if not chain:
            return self.executor.submit(node.task)
        steps = self.executor.submit_chain([node.task, *(n.task for n in chain)])  # type: ignore[attr-defined]
        # an executor may chain only a prefix of the tasks: the rest queue on their own
        for successor, (started, result) in zip(chain, steps[1:], strict=False):
            successor.state = _State.RUNNING  # claimed: no other path may queue it
            self._track(successor, self._execute_chained(successor, started, result))
        return steps[0][1]  # type: ignore[no-any-return]

    def _chain_after(self, node: _Node) -> list[_Node]:
        """The line of tasks after ``node`` that wait for nothing else (each the first such
        dependent of the one before), if the executor can chain them all."""
        chains = self._chains
        if chains is None or self.max_parallel is not None or self._stopping():
            return []
        if self._locked(node.task) or not chains(node.task):
            return []
        chain: list[_Node] = []
        current = node
        while len(chain) < _MAX_CHAIN:
            for dependent in current.dependents:
                if (
                    dependent.waiting == 1  # only for `current`
                    and dependent.state is _State.PENDING
                    and not dependent.started
                    and not self._locked(dependent.task)
                    and _safely(chains, dependent.task)
                ):
                    chain.append(dependent)
                    current = dependent
                    break
            else:
                break
        return chain

    def _locked(self, task: BaseTask) -> bool:
        return self._use_lock is not None and bool(self._use_lock(task))

    async def _execute_chained(
        self,
        node: _Node,
        started: Awaitable[bool],
        result: Awaitable[TaskStruct | Exception | None],
    ) -> None:
        """Follow a task the executor runs right after the one before it in a chain."""
        task = node.task
        try:
            if not await started:  # the one before failed, suspended or was cancelled
                self._unclaim(node)
                return
            node.started = True
            await self._record(
                self.registry.task_start_aio(self._started_id, task),
                "the start of %s",
                task,
            )
            self._emit(BuildEventKind.TASK_STARTED, task)
            outcome = await result
        except asyncio.CancelledError:
            await self._cancel(node)
            raise
        await self._settle(node, outcome)

    # -- trivial sync tasks, followed by callbacks -----------------------------------------

    def _goes_direct(self, node: _Node) -> bool:
        """Whether ``node`` runs on a worker thread followed by callbacks rather than by an
        asyncio task of :meth:`_execute`: a sync task that has not started, in a build
        without locks or a parallelism bound, recording no assets, with a registry that
        records on the loop. Same events and records, but a registry that fails to record
        the start is logged, not a failure of the task (as for any other record); per
        task, no coroutines."""
        if not self._direct_ok or node.started or self._stopping():
            return False
        task = node.task
        # (a mode that cannot be told: the async path reports it)
        if self._chains is None or not _safely(self._chains, task):
            return False
        return self._records_plainly(task)

    def _records_plainly(self, task: BaseTask) -> bool:
        """Whether a completion of ``task`` records nothing but the completion (no
        assets): decided once per task class in a build."""
        cls = type(task)
        plain = self._plain_assets.get(cls)
        if plain is None:
            plain = self._plain_assets[cls] = _plain_assets(cls)
        return plain

    def _start_direct(self, node: _Node) -> None:
        """Start ``node`` (see :meth:`_goes_direct`), with the line of tasks that wait only
        for it (as :meth:`_submit` chains them)."""
        task = node.task
        node.state = _State.RUNNING
        self._started_now(node)
        executor: Any = self.executor
        try:
            chain = self._chain_after(node)
            if not chain:
                self._follow(node, executor.submit_direct(task))
                return
            steps = executor.submit_chain_direct([task, *(n.task for n in chain)])
        except Exception as exc:  # the executor cannot take it: the task fails
            self._settle_later(node, exc)
            return
        self._follow(node, steps[0][1])
        for successor, (started, result) in zip(chain, steps[1:], strict=False):
            successor.state = _State.RUNNING  # claimed: no other path may queue it
            # Both followed now: their callbacks then run in the order the worker handed
            # them back (a link starts after the one before it completed).
            self.direct[started] = successor
            started.add_done_callback(functools.partial(self._chained_started, successor, result))
            self._follow(successor, result)

    def _follow(self, node: _Node, future: asyncio.Future[Any]) -> None:
        self.direct[future] = node
        future.add_done_callback(self._direct_done)

    def _chained_started(
        self, node: _Node, result: asyncio.Future[Any], started: asyncio.Future[bool]
    ) -> None:
        self.direct.pop(started, None)
        if self._ending or started.cancelled():
            return  # the build is ending: it records the task as cancelled
        if not started.result():  # the one before failed, suspended or was cancelled
            if self.direct.pop(result, None) is not None:
                result.cancel()  # never resolved: the worker stopped the chain before it
            self._unclaim(node)
            self._progress.set()  # (the build may have nothing left to follow)
            return
        self._started_now(node)

    def _started_now(self, node: _Node) -> None:
        """Record and announce that ``node``, followed directly, started."""
        node.started = True
        self._record_now(self.registry.task_start, "the start of %s", node.task)
        self._emit(BuildEventKind.TASK_STARTED, node.task)

    def _direct_done(self, future: asyncio.Future[Any]) -> None:
        node = self.direct.pop(future, None)
        if node is None or self._ending or future.cancelled():
            return  # the build is ending: it records the task as cancelled
        outcome = self.executor.outcome(node.task, future)  # type: ignore[attr-defined]
        if outcome is None and self._records_plainly(node.task):
            node.state = _State.COMPLETED
            self.count.succeeded += 1
            self._record_now(self.registry.task_complete, "the completion of %s", node.task)
            self._emit(BuildEventKind.TASK_COMPLETED, node.task)
            self._release_dependents(node)
            return
        # failed, suspended on what its generator yielded, or completed with assets to
        # record (a chained task): the async path goes on
        self._settle_later(node, outcome)

    def _settle_later(self, node: _Node, outcome: TaskStruct | BaseException | None) -> None:
        self._track(node, self._settle(node, outcome))

    def _record_now(self, method: Any, what: str, task: BaseTask) -> None:
        """Call a registry method that only queues a row (see :func:`_records_inline`);
        a registry failure is logged, never fails the build."""
        try:
            method(self._started_id, task)
        except Exception:
            logger.exception("registry: could not record " + what, repr(task)[:100])

    def _unclaim(self, node: _Node) -> None:
        """A chained task that will not run in its chain: queue it again if it can run."""
        if node.state is _State.RUNNING:
            node.state = _State.PENDING
            if node.waiting == 0:
                self.ready.append(node)
                self._progress.set()

    async def _succeed(self, node: _Node) -> None:
        task = node.task
        node.state = _State.COMPLETED
        self.count.succeeded += 1
        await self._release_lock(node, completed=True)
        await self._record(self._complete_in_registry(task), "the completion of %s", task)
        self._emit(BuildEventKind.TASK_COMPLETED, task)
        self._release_dependents(node)

    async def _complete_in_registry(self, task: BaseTask) -> None:
        await self.registry.task_complete_aio(self._started_id, task)
        pending = task.registry_assets_aio()  # an override may be a plain function
        assets = await pending if asyncio.iscoroutine(pending) else pending
        if assets:
            await self.registry.task_upload_assets_aio(self._started_id, task, assets)

    def _release_dependents(self, node: _Node) -> None:
        # Unbounded builds start what became ready right here (one loop turn less per
        # task than waking the scheduling loop); bounded ones queue it.
        direct = _DIRECT_SPAWNS if self.max_parallel is None and not self._stopping() else 0
        for dependent in node.dependents:
            dependent.waiting -= 1
            if dependent.waiting == 0 and dependent.state in (_State.PENDING, _State.SUSPENDED):
                if direct and not self._runs_inline(dependent):
                    self._spawn(dependent)
                    direct -= 1
                else:  # many at once: the scheduling loop spawns them in slices
                    self.ready.append(dependent)
        node.dependents.clear()
        self._progress.set()

    async def _fail(self, node: _Node, error: BaseException) -> None:
        task = node.task
        node.state = _State.FAILED
        self.count.failed += 1
        self.errors[task.id] = error
        self.last_error = error
        logger.error("Task %s failed: %s: %s", task, type(error).__name__, error, exc_info=error)
        self._discard(task)
        await self._release_lock(node, completed=False)
        await self._record(
            self.registry.task_fail_aio(self._started_id, task, _describe(error)),
            "the failure of %s",
            task,
        )
        self._emit(BuildEventKind.TASK_FAILED, task, error=error)
        self._block_dependents(node)
        self._progress.set()

    def _block_dependents(self, node: _Node) -> None:
        stack = list(node.dependents)
        node.dependents.clear()
        while stack:
            dependent = stack.pop()
            if dependent.state in _DEAD or dependent.state in _DONE:
                continue
            dependent.state = _State.BLOCKED
            self._discard(dependent.task)
            stack.extend(dependent.dependents)
            dependent.dependents.clear()

    async def _suspend(self, node: _Node, struct: TaskStruct) -> None:
        task = node.task
        try:
            deps = _unique(flatten_task_struct(struct))
        except TypeError as exc:
            await self._fail(node, exc)
            return
        dep_nodes = await self._discover(deps, dynamic=True)
        await self._record(
            self.registry.task_add_dependencies_aio(
                self._started_id, task, tuple(d.id for d in deps), True
            ),
            "the dynamic dependencies of %s",
            task,
        )
        dead = [n for n in dep_nodes if n.state in _DEAD]
        if dead:
            error = RuntimeError(
                f"dynamic dependency {dead[0].task!r:.100} of {task!r:.100} did not complete"
            )
            await self._fail(node, error)
            return
        waiting = [n for n in dep_nodes if n.state not in _DONE]
        cycle = _cycle_through(node, waiting)
        if cycle:
            names = " -> ".join(repr(n.task)[:80] for n in cycle)
            await self._fail(
                node,
                DependencyCycleError(
                    f"dynamic dependency cycle: {names} (a task cannot wait, through what it "
                    "yields, for itself)"
                ),
            )
            return
        if not waiting:  # everything yielded is done in this build: continue at once
            node.resumes += 1
            not_ready = _idle_resumes_error(node) or await self._incomplete_error(node, dep_nodes)
            if not_ready is not None:
                await self._fail(node, not_ready)
                return
            node.state = _State.SUSPENDED
            self.ready.appendleft(node)
            self._progress.set()
            return
        node.state = _State.SUSPENDED
        node.suspended = True
        node.waiting = len(waiting)
        node.yielded = dep_nodes
        node.resumes = 0
        for dep_node in waiting:
            dep_node.dependents.append(node)
        await self._record(
            self.registry.task_suspend_aio(self._started_id, task),
            "the suspension of %s",
            task,
        )
        self._emit(
            BuildEventKind.TASK_SUSPENDED, task, dependencies=tuple(n.task.id for n in waiting)
        )
        self._progress.set()

    async def _incomplete_error(self, node: _Node, dep_nodes: list[_Node]) -> Exception | None:
        """Before a generator resumes, what it yielded must be complete: a dependency
        that ran in this build but is still not complete (it wrote somewhere its check
        does not look) fails the task rather than resuming it into a loop."""
        for dep_node in dep_nodes:
            if dep_node.state is not _State.COMPLETED:
                continue  # complete before the build, or completed elsewhere: checked
            try:
                complete = await self._complete(dep_node.task)
            except Exception as exc:
                return exc
            if not complete:
                return RuntimeError(
                    f"dynamic dependency {dep_node.task!r:.100} of {node.task!r:.100} ran "
                    "successfully but is still not complete: its run() must write the "
                    "output its complete() checks (is it written under another root or path?)"
                )
        return None

    async def _cancel(self, node: _Node) -> None:
        if node.state in _DONE or node.state in (_State.FAILED, _State.CANCELLED):
            return
        node.state = _State.CANCELLED
        self._discard(node.task)
        await self._release_lock(node, completed=False)
        await self._record(
            self.registry.task_cancel_aio(self._started_id, node.task),
            "the cancellation of %s",
            node.task,
        )
        self._emit(BuildEventKind.TASK_CANCELLED, node.task)

    async def _completed_elsewhere(self, node: _Node) -> None:
        node.state = _State.PREVIOUSLY_COMPLETED
        self.count.previously_completed += 1
        await self._release_lock(node, completed=False)
        await self._record(
            self.registry.task_already_complete_aio(self._started_id, node.task),
            "%s as already complete",
            node.task,
        )
        self._emit(BuildEventKind.TASK_COMPLETED, node.task)
        self._release_dependents(node)

    # -- global locks -------------------------------------------------------------------

    async def _acquire_lock(self, node: _Node) -> None:
        """Take the task's lock, waiting with backoff; raise _CompletedElsewhere if another
        build completed it meanwhile."""
        assert self.lock_manager is not None
        cfg, task, key = self.lock_config, node.task, str(node.task.id)
        interval = cfg.lock_wait_initial_interval_seconds
        deadline = (
            None
            if cfg.lock_wait_timeout_seconds is None
            else time.monotonic() + cfg.lock_wait_timeout_seconds
        )
        announced = False
        cleared = False
        try:
            while True:
                result = await self.lock_manager.acquire(key)
                if result.status is LockAcquisitionStatus.ACQUIRED:
                    node.lock_held = True
                    break
                if result.status is LockAcquisitionStatus.ALREADY_COMPLETED:
                    if not cleared and await self._stale_completion_cleared(task, key):
                        cleared = True
                        continue  # the record outlived its output: take the lock, rebuild
                    await self._await_visible_completion(task)
                    raise _CompletedElsewhere()
                if result.status is LockAcquisitionStatus.ERROR:
                    raise RuntimeError(
                        f"could not acquire the global lock of {task!r:.100}: "
                        f"{result.error_message}"
                    )
                if not announced:
                    announced = True
                    self._waiting_for_lock += 1
                    await self.registry.task_waiting_for_lock_aio(self._started_id, task, None)
                    self._emit(BuildEventKind.TASK_WAITING_FOR_LOCK, task)
                    self._progress.set()
                if await task.complete_aio():
                    raise _CompletedElsewhere()
                if deadline is None or time.monotonic() >= deadline:
                    raise LockWaitTimeoutError(
                        repr(task), cfg.lock_wait_timeout_seconds or 0, result.status.value
                    )
                await asyncio.sleep(interval)
                interval = min(
                    interval * cfg.lock_wait_backoff_factor, cfg.lock_wait_max_interval_seconds
                )
        finally:
            if announced:
                self._waiting_for_lock -= 1
        # Double-checked: the output may have appeared between discovery and the lock.
        if await task.complete_aio():
            await self._release_lock(node, completed=True)
            raise _CompletedElsewhere()
        renew = getattr(self.lock_manager, "renew", None)
        ttl = getattr(self.lock_manager, "ttl_seconds", 60.0)
        if renew is not None:
            node.renewer = asyncio.ensure_future(_renew_forever(renew, key, ttl / 3))

    async def _stale_completion_cleared(self, task: BaseTask, key: str) -> bool:
        """A completion record whose output is missing (deleted, or the target root
        changed) cannot outrank it: clear the record so the task can be rebuilt. Outputs
        are written before their completion is recorded, so a missing one is not late."""
        clear = getattr(self.lock_manager, "clear_completion", None)
        if clear is None or await self._complete(task):
            return False
        if not await clear(key):
            return False
        logger.warning(
            "%s is recorded as completed, but its output %s is missing: building it again",
            repr(task)[:100],
            _output_uri(task),
        )
        return True

    async def _await_visible_completion(self, task: BaseTask) -> None:
        cfg = self.lock_config
        deadline = time.monotonic() + cfg.completion_retry_timeout_seconds
        while not await task.complete_aio():
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{task!r:.100} is recorded as completed elsewhere, but its output is not "
                    f"visible after {cfg.completion_retry_timeout_seconds} s"
                )
            await asyncio.sleep(cfg.completion_retry_interval_seconds)

    async def _release_lock(self, node: _Node, completed: bool) -> None:
        if not node.lock_held or self.lock_manager is None:
            return
        node.lock_held = False
        if node.renewer is not None:
            node.renewer.cancel()
            node.renewer = None
        try:
            await self.lock_manager.release(str(node.task.id), task_completed=completed)
        except Exception:
            logger.exception("could not release the global lock of %s", node.task)

    # -- the end ------------------------------------------------------------------------

    async def _finish(self, cancelled: bool) -> None:
        self._ending = True  # callbacks of tasks followed directly now change nothing
        if self.running or self.direct:
            self._cancel_running()
            await asyncio.gather(*self.running, return_exceptions=True)
        # A cancelled build leaves no task pending or running in the registry.
        unfinished: tuple[_State, ...] = (_State.RUNNING, _State.SUSPENDED)
        if cancelled:
            unfinished += (_State.PENDING, _State.BLOCKED)
        for node in list(self.nodes.values()):
            if node.state in unfinished:
                if time.perf_counter() >= self._slice_end:
                    await self._yield_slice()
                await self._cancel(node)
        try:
            await _teardown(self.executor, wait=not cancelled)
        except Exception:
            logger.exception("executor teardown failed")
        if not cancelled and not self.errors and not self._exit_early:
            self._check_deadlock()
        reg, build_id = self.registry, self.build_id
        try:
            if cancelled:
                await reg.build_cancel_aio(self._started_id)
            elif self._exit_early:
                await reg.build_exit_early_aio(
                    self._started_id, "every remaining task is locked by another build"
                )
            elif self.errors:
                await reg.build_fail_aio(self._started_id, _describe(self.last_error))
            else:
                await reg.build_complete_aio(self._started_id)
        except Exception:
            logger.exception("registry: could not record the end of build %s", build_id)

    def _check_deadlock(self) -> None:
        stuck = [n for n in self.nodes.values() if n.state in (_State.PENDING, _State.SUSPENDED)]
        if stuck:
            error = RuntimeError(
                "dependency cycle: these tasks wait on each other and cannot run: "
                + ", ".join(repr(n.task)[:80] for n in stuck[:5])
                + (" ..." if len(stuck) > 5 else "")
            )
            self.errors[stuck[0].task.id] = error
            self.last_error = error

    def _summary(self) -> BuildSummary:
        if self._exit_early:
            status = BuildExitStatus.EXIT_EARLY
        elif self.errors:
            status = BuildExitStatus.FAILURE
        else:
            status = BuildExitStatus.SUCCESS
        summary = BuildSummary(
            status, self.count, self.build_id, self.last_error, dict(self.errors)
        )
        self._emit(BuildEventKind.BUILD_FINISHED, summary=summary)
        return summary


async def _renew_forever(renew: Any, key: str, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await renew(key)
        except Exception:  # pragma: no cover - logged, retried next period
            logger.exception("could not renew the global lock %s", key)


def _output_uri(task: BaseTask) -> str:
    try:
        return str(getattr(task.output(), "uri", "?"))  # type: ignore[attr-defined]
    except Exception:
        return "?"


def _describe(error: BaseException | None) -> str:
    """The error as the registry records it (NUL characters, which PostgreSQL refuses
    in text, shown as U+FFFD)."""
    text = f"{type(error).__name__}: {error}" if error is not None else ""
    return text.replace("\x00", "\ufffd")
