"""Run task bodies on a dask.distributed cluster: :class:`DaskTaskExecutor`.

The build (dependency resolution, completeness checks, the registry, global locks,
events) stays in the client process; only ``run()``/``run_aio()`` runs on the workers.
Install with ``pip install 'stardag_nb[dask]'``. Usage::

    from distributed import Client, LocalCluster
    from stardag_nb.integration.dask import DaskTaskExecutor

    client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    sd.build(root, task_executor=DaskTaskExecutor(client))

What travels: each task (cloudpickle sends classes and functions of ``__main__`` or a
notebook by value; those of importable modules by reference, so those modules must be
importable on the workers) and, with ``ship_context=True``, the client's target factory
(its resolved target roots) and task-id namespace, so a worker writes where the
client's ``complete()`` looks. Roots must be reachable from the workers (an object
store or a shared file system; ``in-memory://`` and a client-local path are not).

Dynamic dependencies: a generator task runs on a worker until it yields a dependency
that is not complete; the worker stops it and sends the dependencies back, the build
runs them, and the task is submitted again and starts over (what ran before that yield
runs again: keep it cheap). A worker that keeps reporting a dependency the build has
completed (it does not see the client's outputs) fails the task, naming it.

Async tasks run on the worker too, with ``asyncio.run`` in the worker's thread. Route
tasks that must run in the client (a notebook's kernel) elsewhere with
:class:`~stardag_nb.build.RoutedTaskExecutor`.

Resources: a class attribute ``__dask_resources__ = {"GPU": 1}`` (or ``resources=``, a
callable of the task) becomes Dask's ``resources=`` for that task: it runs only on
workers that declare them (``dask worker --resources "GPU=1"``; a task nobody can take
waits, as in Dask).

Cancellation (Ctrl-C, fail-fast, ``task.cancel()`` on ``build_aio``) cancels the task's
futures: tasks not started never start. A body already running on a worker thread runs
to its end (Dask cannot stop a thread); its output is then written but not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .._task import BaseTask, TaskStruct
from ..build._base import TaskExecutorABC
from ._remote import TaskPacker, capture_context, run_packed

__all__ = ["DaskTaskExecutor"]

logger = logging.getLogger(__name__)

ResourcesFn = Callable[[BaseTask], Mapping[str, float] | None]

_SUCCESS = object()


def _task_resources(task: BaseTask) -> Mapping[str, float] | None:
    """The task class's ``__dask_resources__``, checked."""
    value = getattr(type(task), "__dask_resources__", None)
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        raise TypeError(
            f"{type(task).__qualname__}.__dask_resources__ = {value!r}; use a dict of "
            'resource name to amount, e.g. {"GPU": 1}'
        )
    return dict(value)


class DaskTaskExecutor(TaskExecutorABC):
    """Runs each task's body on a dask.distributed cluster through ``client``.

    Args:
        client: a ``distributed.Client`` (a synchronous one: the usual
            ``Client(cluster)`` or ``Client("tcp://scheduler:8786")``).
        resources: ``task -> {"GPU": 1}`` (or None); defaults to the task class's
            ``__dask_resources__``.
        ship_context: send the client's target roots and id namespace with each task
            (workers then write where the client looks). Turn off only if the workers
            are configured identically by other means.
        retries: Dask retries per task (a lost worker, a raised error).
        key_prefix: the start of the Dask key of each submission (shown in Dask's
            dashboard as ``<prefix>-<task name>-<id[:8]>-<executor salt><serial>``).
    """

    def __init__(
        self,
        client: Any,
        *,
        resources: ResourcesFn | None = None,
        ship_context: bool = True,
        retries: int = 0,
        key_prefix: str = "stardag",
    ) -> None:
        if not callable(getattr(client, "submit", None)):
            raise TypeError(
                f"DaskTaskExecutor needs a distributed.Client; got {type(client).__name__}"
            )
        if getattr(client, "asynchronous", False):
            raise TypeError(
                "DaskTaskExecutor needs a synchronous distributed.Client (the build runs "
                "on its own event loop): create it without asynchronous=True."
            )
        self.client = client
        self.resources = resources or _task_resources
        self.ship_context = ship_context
        self.retries = retries
        self.key_prefix = key_prefix
        self._context: bytes | None = None
        self._packer = TaskPacker()
        self._scattered: dict[str, Any] = {}  # class token -> Dask future of its pickle
        self._scatter_lock = threading.Lock()
        self._futures: set[Any] = set()
        self._reported: dict[uuid.UUID, set[uuid.UUID]] = {}
        self._cancelled = False
        self._salt = uuid.uuid4().hex[:8]  # keys unique per executor and submission
        self._serial = itertools.count()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client={self.client!r})"

    async def setup(self) -> None:
        self._cancelled = False
        self._reported.clear()
        self._context = capture_context() if self.ship_context else None

    async def submit(self, task: BaseTask) -> TaskStruct | Exception | None:
        if self._cancelled:
            return RuntimeError(f"the build was cancelled before {task!r:.100} started")
        try:
            payload, needed = self._packer.pack(task)
        except Exception as exc:
            return TypeError(
                f"Cannot send {task!r:.100} to the Dask workers: it does not pickle "
                f"({type(exc).__name__}: {exc}). Its parameters must pickle; create open "
                "files, locks or clients inside run()."
            )
        try:
            if any(token not in self._scattered for token in needed):
                await asyncio.to_thread(self._scatter, needed)
            classes = {token: self._scattered[token] for token in needed}
            future = self.client.submit(
                run_packed,
                payload,
                classes,
                self._context,
                key=f"{self.key_prefix}-{task.get_name()}-{str(task.id)[:8]}-{self._salt}{next(self._serial)}",
                resources=self.resources(task),
                retries=self.retries,
                pure=False,
            )
        except Exception as exc:  # a closed client, bad resources
            return exc
        self._futures.add(future)
        try:
            outcome = await self._outcome(future, fetch=type(task).has_dynamic_deps())
        except asyncio.CancelledError:
            self._cancel_futures([future])
            raise
        finally:
            self._futures.discard(future)
        if isinstance(outcome, BaseException):
            self._reported.pop(task.id, None)
            return outcome if isinstance(outcome, Exception) else RuntimeError(repr(outcome))
        if outcome is _SUCCESS or outcome.missing is None:
            self._reported.pop(task.id, None)
            return None
        return self._check_progress(task, outcome.missing)

    def _scatter(self, needed: dict[str, bytes]) -> None:
        """Put each new class pickle on every worker once (a worker that joins later
        fetches it from another when a task needs it)."""
        with self._scatter_lock:
            for token, blob in needed.items():
                if token not in self._scattered:
                    self._scattered[token] = self.client.scatter(blob, broadcast=True, hash=False)

    async def _outcome(self, future: Any, fetch: bool) -> Any:
        """Wait for ``future`` without blocking the loop; the :class:`RemoteOutcome`
        (fetched only when ``fetch``: a plain task's result is None), or its error."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()

        def settle(value: Any) -> None:
            if not waiter.done():
                waiter.set_result(value)

        def on_done(fut: Any) -> None:  # on Dask's callback thread: may block
            status = fut.status
            try:
                if status == "finished":
                    value: Any = fut.result() if fetch else _SUCCESS
                elif status == "cancelled":
                    value = RuntimeError(f"the Dask future {fut.key} was cancelled")
                else:
                    fut.result()  # raises the task's error, with the worker's traceback
                    value = RuntimeError(f"the Dask future {fut.key} ended as {status!r}")
            except BaseException as exc:  # the task's error, or its result was lost
                value = exc
            with contextlib.suppress(RuntimeError):  # the build's loop is gone
                loop.call_soon_threadsafe(settle, value)

        future.add_done_callback(on_done)
        return await waiter

    def _check_progress(self, task: BaseTask, missing: list[BaseTask]) -> TaskStruct | Exception:
        """A generator task came back with incomplete dependencies. One that it reported
        before, and that the build has since completed, means the worker does not see
        the client's outputs: fail rather than loop."""
        before = self._reported.get(task.id, set())
        again = [dep for dep in missing if dep.id in before]
        if again:
            self._reported.pop(task.id, None)
            dep = again[0]
            where = getattr(getattr(dep, "output", lambda: None)(), "uri", None)
            return RuntimeError(
                f"{task!r:.100} yielded {dep!r:.100}, which this build completed, but on the "
                f"Dask worker it is still not complete{f' (output {where})' if where else ''}: "
                "the worker does not see the outputs the client sees. Use target roots the "
                "workers can reach (an object store or a shared file system) and keep "
                "ship_context=True."
            )
        self._reported[task.id] = before | {dep.id for dep in missing}
        return missing

    def _cancel_futures(self, futures: list[Any]) -> None:
        if not futures:
            return
        try:
            self.client.cancel(futures)
        except Exception:  # a closed client: nothing left to cancel
            logger.debug("could not cancel %d Dask futures", len(futures), exc_info=True)

    def cancel(self) -> None:
        """The build stops: cancel every future not finished (running bodies finish on
        their worker, Dask cannot interrupt them); nothing new is submitted."""
        self._cancelled = True
        self._cancel_futures(list(self._futures))

    def discard(self, task: BaseTask) -> None:
        """Forget what was noted for a suspended generator task."""
        self._reported.pop(task.id, None)

    async def teardown(self, wait: bool = True) -> None:
        if not wait:
            self._cancel_futures(list(self._futures))
        self._futures.clear()
        self._reported.clear()
