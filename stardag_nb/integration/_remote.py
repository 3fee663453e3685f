"""Running one task body in another process (a cluster worker), with the client's roots.

Nothing here imports a cluster library: the functions are shipped by reference (this
module must be importable on the workers) and the task by value or by reference, as
the cluster's serializer chooses (cloudpickle sends ``__main__`` classes by value).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import os
import pickle
import socket
import sys
import threading
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from .._task import BaseTask, _has_custom_run, _has_custom_run_aio, flatten_task_struct

__all__ = [
    "ClientContext",
    "RemoteOutcome",
    "TaskPacker",
    "capture_context",
    "run_packed",
    "run_remotely",
]


@dataclass(frozen=True)
class ClientContext:
    """What a worker needs to see the build as the client does: the target factory
    (the resolved target roots, by key) and the namespace task ids are computed in.
    Credentials (API keys, tokens) are not part of it."""

    target_factory: Any
    task_uuid5_namespace: UUID


@dataclass(frozen=True)
class RemoteOutcome:
    """What a worker sends back: the dependencies a generator task yielded that are not
    complete yet (None when the task finished), and where it ran."""

    missing: list[BaseTask] | None
    pid: int
    host: str


def capture_context() -> bytes:
    """The client's :class:`ClientContext`, pickled (cloudpickle, so a target factory
    defined in ``__main__`` travels too)."""
    try:
        import cloudpickle
    except ImportError:
        raise ImportError(
            "Sending tasks to a cluster needs cloudpickle: pip install 'stardag_nb[dask]'"
        ) from None

    from .._task import task_uuid5_namespace_provider
    from ..target import target_factory_provider

    factory = target_factory_provider.get()
    context = ClientContext(factory, task_uuid5_namespace_provider.get())
    try:
        payload: bytes = cloudpickle.dumps(context)
        return payload
    except Exception as exc:
        raise TypeError(
            f"Cannot send the target factory {factory!r} to the workers: it does not pickle "
            f"({type(exc).__name__}: {exc}). Use a TargetFactory whose prototypes are "
            "importable functions or classes."
        ) from exc


def _sent_by_value(cls: type) -> bool:
    """True for a class cloudpickle sends by value: defined in ``__main__`` (a script, a
    notebook) or not reachable by importing its module and qualified name."""
    if cls.__module__ in ("__main__", "__mp_main__"):
        return True
    obj: Any = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is not cls


class TaskPacker:
    """Pickles tasks for workers, sending each task class defined by value (in
    ``__main__`` or a notebook) once rather than with every task.

    ``pack(task)`` gives the task's pickle, in which such classes are tokens, and the
    classes it needs as ``{token: class pickle}``; a worker unpickles each class once
    (:func:`run_packed`). A redefined class (a re-run cell) is a new token.
    """

    def __init__(self) -> None:
        import cloudpickle

        self._cloudpickle = cloudpickle
        self._tokens: dict[type, str] = {}
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        packer = self

        class _Pickler(cloudpickle.Pickler):
            needed: dict[str, bytes]

            def persistent_id(self, obj: Any) -> Any:
                if isinstance(obj, type) and issubclass(obj, BaseTask) and _sent_by_value(obj):
                    token = packer._token(obj)
                    self.needed[token] = packer._blobs[token]
                    return token
                return None

        self._pickler = _Pickler

    def _token(self, cls: type) -> str:
        token = self._tokens.get(cls)
        if token is None:
            with self._lock:
                token = self._tokens.get(cls)
                if token is None:
                    token = f"{cls.__module__}.{cls.__qualname__}-{uuid.uuid4().hex}"
                    self._blobs[token] = self._cloudpickle.dumps(cls)
                    self._tokens[cls] = token
        return token

    def pack(self, task: BaseTask) -> tuple[bytes, dict[str, bytes]]:
        """``(task pickle, {token: class pickle})``."""
        buffer = io.BytesIO()
        pickler = self._pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.needed = {}
        pickler.dump(task)
        return buffer.getvalue(), pickler.needed


_classes: dict[str, type] = {}


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        try:
            return _classes[pid]
        except KeyError:
            raise pickle.UnpicklingError(f"task class {pid} was not sent to this worker") from None


def run_packed(payload: bytes, classes: dict[str, bytes], context: bytes | None) -> RemoteOutcome:
    """:func:`run_remotely` for a task packed by :class:`TaskPacker` (each class in
    ``classes`` is unpickled once per process)."""
    for token, blob in classes.items():
        if token not in _classes:
            _classes[token] = pickle.loads(blob)
    if context is not None:
        _apply_context(context)  # before the task: its fields may build targets
    return run_remotely(_Unpickler(io.BytesIO(payload)).load(), None)


_applied: str | None = None
_applied_lock = threading.Lock()


def _apply_context(blob: bytes) -> None:
    """Use the client's target factory and id namespace in this worker process (once per
    distinct context; one process serves one client environment at a time)."""
    global _applied
    digest = hashlib.sha1(blob).hexdigest()
    if digest == _applied:
        return
    with _applied_lock:
        if digest == _applied:
            return
        from .._task import task_uuid5_namespace_provider
        from ..target import target_factory_provider

        context: ClientContext = pickle.loads(blob)
        target_factory_provider.set(context.target_factory)
        task_uuid5_namespace_provider.set(context.task_uuid5_namespace)
        _applied = digest


def _runs_async(task: BaseTask) -> bool:
    """Async tasks (a custom ``run_aio``) run with ``asyncio.run`` unless the class asks
    for a sync mode and has a ``run()``."""
    if not _has_custom_run_aio(task):
        return False
    if not _has_custom_run(task):
        return True
    requested = getattr(type(task), "__execution_mode__", None)
    return requested is None or str(requested) in ("async", "async_main_loop")


def _incomplete(struct: Any) -> list[BaseTask]:
    return [dep for dep in flatten_task_struct(struct) if not dep.complete()]


def _run_sync(task: BaseTask) -> list[BaseTask] | None:
    result = task.run()
    return _finish_generator(result) if inspect.isgenerator(result) else None


async def _run_async(task: BaseTask) -> list[BaseTask] | None:
    result = task.run_aio()
    if not inspect.isasyncgen(result):
        value = await result
        if inspect.isgenerator(value):  # a sync generator run() reached through run_aio()
            return await asyncio.to_thread(_finish_generator, value)
        return None
    try:
        struct = await result.__anext__()
        while True:
            missing = [d for d in flatten_task_struct(struct) if not await d.complete_aio()]
            if missing:
                await result.aclose()
                return missing
            struct = await result.asend(None)
    except StopAsyncIteration:
        return None


def _finish_generator(gen: Any) -> list[BaseTask] | None:
    """Step a generator ``run()`` while what it yields is complete; the incomplete
    dependencies of the first yield that has some (None once it returns)."""
    try:
        struct = next(gen)
        while True:
            missing = _incomplete(struct)
            if missing:
                gen.close()
                return missing
            struct = gen.send(None)
    except StopIteration:
        return None


def run_remotely(task: BaseTask, context: bytes | None) -> RemoteOutcome:
    """Run ``task`` here (a worker) with the client's ``context``.

    A generator task runs until it yields a dependency that is not complete; it then
    stops and the dependencies go back to the client, which builds them and submits the
    task again: its ``run()`` starts over (what it did before that yield runs again).
    An async task runs with ``asyncio.run`` in the worker's thread.
    """
    if context is not None:
        _apply_context(context)
    missing = asyncio.run(_run_async(task)) if _runs_async(task) else _run_sync(task)
    return RemoteOutcome(missing, os.getpid(), socket.gethostname())
