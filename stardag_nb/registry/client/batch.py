"""Build writes to the registry service in batches (protocol extension ``batch-v1``).

:class:`WriteBatcher` queues an :class:`~stardag_nb.registry.APIRegistry`'s writes
(task registrations, task events, edges, assets, the build's end) and sends them from
one daemon thread to ``POST /api/v1/ext/batch/builds/{build_id}``, so a build waits for
no round trip per task: the caller's method returns once the write is queued. Each batch
is one transaction on the server; the operations keep their order.

When a batch goes out: as soon as its oldest operation has waited :data:`WINDOW_SECONDS`,
or :data:`MAX_OPS` are queued, or someone waits for a flush (:meth:`WriteBatcher.flush`,
:meth:`~WriteBatcher.flush_aio`). Operations queued while a batch is in flight go out
right after it. Tasks are turned into JSON in the thread, not by the build.

Acknowledged means committed: a write is acknowledged when the batch holding it got the
server's answer. :meth:`~WriteBatcher.flush` waits until everything queued so far is
acknowledged (or given up, and logged); the build's end is sent in the build's last
batch and waited for, so a build recorded as finished has every write before it
recorded. Who needs a write on the server before going on flushes first: the lock
manager before a release that records a completion (:func:`flush_writes_aio`), and the
registry before any read (a client reads its own writes).

A batch that did not get an answer is sent again with the same ``batch_id`` (the
server applies a batch once: its receipt answers a copy), through the retries of
:class:`~stardag_nb.registry.client.http.RegistryHTTP` (connection errors, 502/503/504 and
read timeouts, for up to ``$STARDAG_API_RETRY_SECONDS``). A batch that still fails is
logged (one line; of an outage, only the first) and dropped, as a failed v1 call is. If
the server no longer has the route (it was downgraded), the batch is sent over the v1
routes and batching stops for this registry.

Every live batcher is flushed at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ...exceptions import APIError
from .http import RegistryHTTP, error_for_response, is_missing_route

__all__ = [
    "BATCH_PATH",
    "MAX_OPS",
    "WINDOW_SECONDS",
    "WriteBatcher",
    "flush_writes",
    "flush_writes_aio",
]

logger = logging.getLogger("stardag_nb.registry")

BATCH_PATH = "/ext/batch/builds/{build_id}"
MAX_OPS = 500
"""Operations per batch at most (the server takes up to ``MAX_BATCH_OPS``)."""
MAX_BATCH_BYTES = 4 * 1024 * 1024
"""A batch's body at most (an operation larger than that goes alone)."""
WINDOW_SECONDS = 0.02
"""How long the first operation of a batch waits for company."""
SEND_AT = 100
"""A batch goes out without waiting for the window once this many operations wait (the
server works on it while the build goes on: a build's last batch stays small)."""
EXIT_FLUSH_SECONDS = 30.0
"""At interpreter exit, how long the queued writes may take to go out."""
IDLE_SECONDS = 10.0
"""The sending thread ends after this long without writes (the next write starts one)."""


@dataclass
class _Op:
    """A queued write: ``encode`` makes its JSON (in the sending thread)."""

    build_id: UUID
    encode: Callable[[], dict[str, Any]]
    ack: concurrent.futures.Future[dict[str, Any]] | None = None
    queued_at: float = 0.0


class BatchWriteError(APIError):
    """A batched write was not recorded: the server refused it (its detail says why)."""


class WriteBatcher:
    """Queues one registry client's writes; a daemon thread sends them in batches.

    Args:
        http: The client's HTTP plumbing (its sync client is used from the thread).
        v1_fallback: Sends one operation (its JSON) over the v1 routes; called for the
            operations of a batch the server answered "no such route" (then batching
            stops: :attr:`enabled` turns False).
    """

    def __init__(
        self, http: RegistryHTTP, v1_fallback: Callable[[UUID, dict[str, Any]], None]
    ) -> None:
        self.http = http
        self.v1_fallback = v1_fallback
        self.enabled = True
        self._cond = threading.Condition()
        self._queue: deque[_Op] = deque()
        self._queued = 0  # operations queued so far
        self._settled = 0  # ... of which sent (acknowledged, or given up)
        self._flush_to = 0  # a flush waits for the operations up to this count
        self._waiters: list[tuple[int, concurrent.futures.Future[None]]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches_sent = 0
        _live.add(self)

    def __repr__(self) -> str:
        return f"WriteBatcher({self.http.settings.api_url!r}, queued={len(self._queue)})"

    @property
    def api_url(self) -> str:
        return self.http.settings.api_url

    # -- queueing ------------------------------------------------------------------------

    def submit(
        self, build_id: UUID, encode: Callable[[], dict[str, Any]], ack: bool = False
    ) -> concurrent.futures.Future[dict[str, Any]] | None:
        """Queue a write of ``build_id``; ``encode()`` gives its JSON when it is sent.
        With ``ack``, a future of its result (``{"ok": ..., "detail": ...}``), which
        fails with the batch's error when the batch was not recorded (e.g.
        :class:`~stardag_nb.exceptions.RegistryUnreachableError`)."""
        future: concurrent.futures.Future[dict[str, Any]] | None = (
            concurrent.futures.Future() if ack else None
        )
        op = _Op(build_id, encode, future, time.monotonic())
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            self._queue.append(op)
            self._queued += 1
            if self._thread is None:  # the first write, or the last thread went idle
                self._start_thread()
            elif len(self._queue) == 1 or len(self._queue) == SEND_AT:
                self._cond.notify()
        return future

    def _start_thread(self) -> None:
        """(``self._cond`` held) Start the sending thread."""
        self._thread = threading.Thread(
            target=self._run, name="stardag-nb-registry-writes", daemon=True
        )
        self._thread.start()

    @property
    def pending(self) -> int:
        """Operations queued and not yet sent."""
        return self._queued - self._settled

    def flush_future(self) -> concurrent.futures.Future[None]:
        """A future done when everything queued so far was sent (acknowledged, or given
        up and logged)."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._cond:
            if self._settled >= self._queued:
                future.set_result(None)
                return future
            self._waiters.append((self._queued, future))
            self._flush_to = max(self._flush_to, self._queued)
            self._cond.notify()
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far was sent."""
        if self._settled >= self._queued:
            return
        if threading.current_thread() is self._thread:
            return  # the sending thread itself (a fallback): it sends in order anyway
        self.flush_future().result(timeout)

    async def flush_aio(self) -> None:
        """:meth:`flush` without blocking the event loop."""
        if self._settled >= self._queued:
            return
        await asyncio.wrap_future(self.flush_future())

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, then stop the thread (a later :meth:`submit` raises)."""
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify()
            _live.discard(self)

    # -- the sending thread --------------------------------------------------------------

    def _take(self) -> list[_Op] | None:
        """The next batch (operations of one build, in order); None when closed and empty."""
        idle = False
        with self._cond:
            while True:
                queue = self._queue
                if not queue:
                    if self._closed or idle:
                        self._thread = None
                        return None
                    idle = not self._cond.wait(IDLE_SECONDS)
                    continue
                idle = False
                if len(queue) >= SEND_AT or self._flush_to > self._settled:
                    break
                wait = queue[0].queued_at + WINDOW_SECONDS - time.monotonic()
                if wait <= 0:
                    break
                self._cond.wait(wait)
            build_id = queue[0].build_id
            batch: list[_Op] = []
            while queue and len(batch) < MAX_OPS and queue[0].build_id == build_id:
                batch.append(queue.popleft())
            return batch

    def _run(self) -> None:
        try:
            while True:
                batch = self._take()
                if batch is None:
                    return
                try:
                    self._send(batch)
                except Exception as exc:  # never let the thread die with writes queued
                    logger.exception("registry: sending a batch of writes failed: %s", exc)
                    _fail(batch, exc)
                except BaseException as exc:  # the thread dies (below): nobody may wait
                    _fail(batch, RuntimeError(f"sending the registry writes stopped: {exc!r}"))
                    raise
                finally:
                    self._settle(len(batch))
        except BaseException:
            # The thread dies anyway: let the next write (or a queued one) start another,
            # or every later write and flush would wait forever.
            with self._cond:
                if self._thread is threading.current_thread():
                    self._thread = None
                    if self._queue and not self._closed:
                        self._start_thread()
            raise

    def _settle(self, count: int) -> None:
        with self._cond:
            self._settled += count
            done = [f for upto, f in self._waiters if upto <= self._settled]
            if done:
                self._waiters = [(u, f) for u, f in self._waiters if u > self._settled]
        for future in done:  # a waiter may have been cancelled (its build stopped)
            _resolve(future, None)

    def _encoded(self, batch: list[_Op]) -> list[tuple[_Op, bytes]]:
        encoded = []
        for op in batch:
            try:
                encoded.append((op, json.dumps(op.encode(), separators=(",", ":")).encode()))
            except Exception as exc:  # recorded, not raised: the build must go on
                logger.warning("registry: cannot encode a write for the registry: %s", exc)
                _fail([op], exc)
        return encoded

    def _send(self, batch: list[_Op]) -> None:
        build_id = batch[0].build_id
        if not self.enabled:
            self._send_v1(build_id, [(op, op.encode()) for op in batch])
            return
        part: list[tuple[_Op, bytes]] = []
        size = 0
        for op, data in self._encoded(batch):
            if part and size + len(data) > MAX_BATCH_BYTES:
                self._post(build_id, part)
                part, size = [], 0
            part.append((op, data))
            size += len(data) + 1
        if part:
            self._post(build_id, part)

    def _post(self, build_id: UUID, part: list[tuple[_Op, bytes]]) -> None:
        if not self.enabled:  # an earlier part found the route missing
            self._send_v1(build_id, [(op, json.loads(data)) for op, data in part])
            return
        batch_id = uuid.uuid4()
        body = b"".join(
            (b'{"batch_id":"', str(batch_id).encode(), b'","ops":[',
             b",".join(data for _, data in part), b"]}")
        )  # fmt: skip
        path = BATCH_PATH.format(build_id=build_id)
        ops = [op for op, _ in part]
        try:
            response = self.http.request("POST", path, content=body, ok=(404, 405), idempotent=True)
        except Exception as exc:
            self._lost(build_id, ops, exc)
            return
        self.batches_sent += 1
        if response.status_code in (404, 405):
            if is_missing_route(response):
                self.enabled = False
                logger.warning(
                    "The registry service at %s no longer takes batched writes: using the "
                    "v1 routes.", self.api_url,
                )  # fmt: skip
                self._send_v1(build_id, [(op, json.loads(data)) for op, data in part])
                return
            error = error_for_response(response, f"POST {path}", self.http.settings.environment_id)
            self._lost(build_id, ops, error)
            return
        results = response.json().get("results") or []
        refused = []
        for index, op in enumerate(ops):
            result = results[index] if index < len(results) else {"ok": True}
            if not result.get("ok", True):
                refused.append((index, result.get("detail")))
            if op.ack is not None:
                _resolve(op.ack, result)
        if refused:
            index, detail = refused[0]
            logger.warning(
                "registry: the service refused %d of %d write(s) of build %s, e.g. %s: %s",
                len(refused), len(ops), build_id, _describe(json.loads(part[index][1])), detail,
            )  # fmt: skip

    def _lost(self, build_id: UUID, ops: list[_Op], exc: BaseException) -> None:
        logger.error(
            "registry: could not record %d write(s) of build %s",
            len(ops), build_id, exc_info=exc,
        )  # fmt: skip
        _fail(ops, exc)

    def _send_v1(self, build_id: UUID, ops: list[tuple[_Op, dict[str, Any]]]) -> None:
        for op, data in ops:
            try:
                self.v1_fallback(build_id, data)
            except Exception as exc:
                self._lost(build_id, [op], exc)
                continue
            if op.ack is not None:
                _resolve(op.ack, {"ok": True})


def _fail(ops: list[_Op], error: BaseException) -> None:
    for op in ops:
        if op.ack is not None:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                op.ack.set_exception(error)


def _resolve(future: concurrent.futures.Future[Any], result: Any) -> None:
    """Set ``future``'s result unless it is done already: its waiter cancelled it (the
    build stopped). Raising here would end the sending thread with writes queued."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(result)


def _describe(data: dict[str, Any]) -> str:
    task = data.get("task_id") or (data.get("task") or {}).get("task_id")
    return f"{data.get('op')} of task {task}" if task else str(data.get("op"))


# --------------------------------------------------------------------------------------------
# every batcher of the process

_live: weakref.WeakSet[WriteBatcher] = weakref.WeakSet()


def _at(api_url: str) -> list[WriteBatcher]:
    url = api_url.rstrip("/")
    return [b for b in list(_live) if b.api_url == url and b.pending]


def flush_writes(api_url: str, timeout: float | None = None) -> None:
    """Wait until the writes queued for the service at ``api_url`` (by every registry of
    this process) were sent."""
    for batcher in _at(api_url):
        batcher.flush(timeout)


async def flush_writes_aio(api_url: str) -> None:
    """:func:`flush_writes` without blocking the event loop."""
    for batcher in _at(api_url):
        await batcher.flush_aio()


@atexit.register
def _flush_at_exit() -> None:
    deadline = time.monotonic() + EXIT_FLUSH_SECONDS
    for batcher in list(_live):
        if batcher.pending:
            try:
                batcher.flush(max(0.1, deadline - time.monotonic()))
            except Exception as exc:  # exiting anyway: say what was not sent
                logger.error(
                    "registry: %d write(s) to %s were not sent before exit: %s",
                    batcher.pending, batcher.api_url, exc,
                )  # fmt: skip
