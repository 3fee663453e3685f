"""Build events: what a progress bar, a CLI or a notebook widget follows during a build.

A build emits, in order: ``BUILD_STARTED``; for each task met, ``TASK_REGISTERED`` (with
its dependencies, so the DAG's nodes and edges arrive as they are discovered; already
complete tasks arrive with ``already_complete=True``); then ``TASK_STARTED``,
``TASK_SUSPENDED`` (waiting on dynamic dependencies, which arrive as edges),
``TASK_RESUMED``, and one of ``TASK_COMPLETED`` / ``TASK_FAILED`` / ``TASK_CANCELLED``;
finally ``BUILD_FINISHED`` with the summary.

Pass handlers as ``build(..., event_handlers=[fn])``: each is called synchronously, on
the build's event loop, with each :class:`BuildEvent`; keep them fast (batch and
throttle rendering). :class:`BuildEventStream` is a handler that is also an async
iterator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from .._task import BaseTask
    from ._base import BuildSummary

__all__ = ["BuildEvent", "BuildEventHandler", "BuildEventKind", "BuildEventStream", "TaskNode"]


class BuildEventKind(StrEnum):
    """What happened."""

    BUILD_STARTED = "build_started"
    TASK_REGISTERED = "task_registered"
    TASK_STARTED = "task_started"
    TASK_SUSPENDED = "task_suspended"
    TASK_RESUMED = "task_resumed"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_CANCELLED = "task_cancelled"
    TASK_WAITING_FOR_LOCK = "task_waiting_for_lock"
    BUILD_FINISHED = "build_finished"


@dataclass(frozen=True)
class TaskNode:
    """A task as a DAG node: enough to draw it without touching the task object."""

    id: UUID
    name: str
    namespace: str
    already_complete: bool
    dependencies: tuple[UUID, ...] = ()
    """Static dependencies (``requires()``): the edges dependency -> this task."""
    dynamic: bool = False
    """True when the task was first met as a dynamic dependency."""


@dataclass(frozen=True)
class BuildEvent:
    """One event of a build."""

    kind: BuildEventKind
    build_id: UUID | None
    task: BaseTask | None = None
    node: TaskNode | None = None
    """With ``TASK_REGISTERED``: the new node and its static edges."""
    dependencies: tuple[UUID, ...] = ()
    """With ``TASK_SUSPENDED``: the dynamic dependencies it now waits for (new edges)."""
    error: BaseException | None = None
    summary: BuildSummary | None = None
    """With ``BUILD_FINISHED``."""
    timestamp: float = field(default_factory=time.time)

    @property
    def task_id(self) -> UUID | None:
        """The id of the task the event is about, if any."""
        return self.task.id if self.task is not None else None


BuildEventHandler = Callable[[BuildEvent], Any]
"""Called with each event; the return value is ignored."""


class BuildEventStream:
    """A handler that collects events and lets you ``async for`` over them.

    The iteration ends after ``BUILD_FINISHED``::

        stream = BuildEventStream()
        build = asyncio.create_task(sd.build_aio(task, event_handlers=[stream]))
        async for event in stream:
            print(event.kind, event.task_id)
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[BuildEvent] = asyncio.Queue()
        self.events: list[BuildEvent] = []

    def __call__(self, event: BuildEvent) -> None:
        self.events.append(event)
        self._queue.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[BuildEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[BuildEvent]:
        while True:
            event = await self._queue.get()
            yield event
            if event.kind is BuildEventKind.BUILD_FINISHED:
                return


def emit(handlers: Sequence[BuildEventHandler], event: BuildEvent) -> None:
    """Call every handler; a failing handler is logged, never breaks the build."""
    for handler in handlers:
        try:
            handler(event)
        except Exception:  # pragma: no cover - reported, not raised
            import logging

            logging.getLogger(__name__).exception("build event handler %r failed", handler)
