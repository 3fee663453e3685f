"""Statuses derived from the event log (protocol v1 rules; nothing is stored).

- A build's status comes from its build-level events, the newest winning: started →
  ``running``; completed, failed, cancelled and exit_early end it (``completed_at``).
  No event: ``pending``.
- A task's status *in a build* is that of its newest status-changing event there
  (``task_referenced`` and ``task_waiting_for_lock`` change nothing).
- A task's *global* status: completed in any build dominates (``task_completed`` or
  our ``task_already_complete``); otherwise started/resumed → ``running``, failed,
  cancelled and skipped apply, suspended is ignored; only-registered stays ``pending``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

__all__ = [
    "BUILD_TERMINAL",
    "COMPLETION_EVENTS",
    "BuildState",
    "EventLike",
    "EventType",
    "TaskState",
    "build_state",
    "global_task_state",
    "in_build_status",
    "task_status_in_build",
]


class EventType(StrEnum):
    """The kinds of entry in the build event log."""

    BUILD_STARTED = "build_started"
    BUILD_COMPLETED = "build_completed"
    BUILD_FAILED = "build_failed"
    BUILD_CANCELLED = "build_cancelled"
    BUILD_EXIT_EARLY = "build_exit_early"
    TASK_PENDING = "task_pending"
    TASK_REFERENCED = "task_referenced"
    TASK_STARTED = "task_started"
    TASK_SUSPENDED = "task_suspended"
    TASK_RESUMED = "task_resumed"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_SKIPPED = "task_skipped"
    TASK_CANCELLED = "task_cancelled"
    TASK_WAITING_FOR_LOCK = "task_waiting_for_lock"
    TASK_ALREADY_COMPLETE = "task_already_complete"


E = EventType

BUILD_TERMINAL: dict[str, str] = {
    E.BUILD_COMPLETED: "completed",
    E.BUILD_FAILED: "failed",
    E.BUILD_CANCELLED: "cancelled",
    E.BUILD_EXIT_EARLY: "exit_early",
}
COMPLETION_EVENTS: tuple[str, ...] = (E.TASK_COMPLETED, E.TASK_ALREADY_COMPLETE)

# The in-build status each task event sets (None: no change).
_IN_BUILD: dict[str, str | None] = {
    E.TASK_PENDING: "pending",
    E.TASK_REFERENCED: None,
    E.TASK_STARTED: "running",
    E.TASK_SUSPENDED: "suspended",
    E.TASK_RESUMED: "running",
    E.TASK_COMPLETED: "completed",
    E.TASK_FAILED: "failed",
    E.TASK_SKIPPED: "skipped",
    E.TASK_CANCELLED: "cancelled",
    E.TASK_WAITING_FOR_LOCK: None,
    E.TASK_ALREADY_COMPLETE: "completed",
}


class EventLike(Protocol):
    """What the derivations read of an event row."""

    build_id: UUID
    event_type: str
    created_at: datetime
    error_message: str | None
    event_metadata: dict[str, Any] | None


@dataclass(frozen=True)
class BuildState:
    """A build's derived status."""

    status: str
    started_at: datetime | None = None
    completed_at: datetime | None = None
    triggered_by: dict[str, Any] | None = None


@dataclass(frozen=True)
class TaskState:
    """A task's derived global status."""

    status: str
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    waiting_for_lock: bool = False
    status_build_id: UUID | None = None
    code_hash: str | None = None


def build_state(events: Iterable[EventLike]) -> BuildState:
    """The status of a build from its build-level events, oldest first."""
    status, started_at, completed_at, triggered = "pending", None, None, None
    for event in events:
        if event.event_type == E.BUILD_STARTED:
            status, started_at = "running", started_at or event.created_at
            completed_at = triggered = None
        elif event.event_type in BUILD_TERMINAL:
            status, completed_at = BUILD_TERMINAL[event.event_type], event.created_at
            triggered = (event.event_metadata or {}).get("triggered_by_user")
    return BuildState(status, started_at, completed_at, triggered)


def in_build_status(event_type: str) -> str | None:
    """The in-build status an event of this type sets, or None if it changes nothing."""
    return _IN_BUILD.get(event_type)


def task_status_in_build(events: Iterable[EventLike]) -> str:
    """The status of a task within one build, from its events there, oldest first."""
    status = "pending"
    for event in events:
        new = _IN_BUILD.get(event.event_type)
        if new is not None:
            status = new
    return status


def global_task_state(events: Iterable[EventLike]) -> TaskState:
    """The global status of a task from its events across all builds, oldest first."""
    status = "pending"
    status_build: UUID | None = None
    error: str | None = None
    finished: datetime | None = None
    waiting = False
    started_by_build: dict[UUID, datetime] = {}
    last_started: datetime | None = None
    code_by_build: dict[UUID, str] = {}
    completion: EventLike | None = None
    run_completion: EventLike | None = None  # the newest task_completed (a real run)
    for event in events:
        kind = event.event_type
        if kind in (E.TASK_PENDING, E.TASK_REFERENCED):
            code = (event.event_metadata or {}).get("code_hash")
            if isinstance(code, str):
                code_by_build[event.build_id] = code
            if status_build is None:
                status_build = event.build_id
        elif kind in COMPLETION_EVENTS:
            completion = event
            if kind == E.TASK_COMPLETED:
                run_completion = event
        elif kind in (E.TASK_STARTED, E.TASK_RESUMED):
            if kind == E.TASK_STARTED:
                last_started = started_by_build[event.build_id] = event.created_at
            status, status_build, error, waiting = "running", event.build_id, None, False
            finished = None
        elif kind in (E.TASK_FAILED, E.TASK_CANCELLED, E.TASK_SKIPPED):
            status, status_build = _IN_BUILD[kind] or status, event.build_id
            error = event.error_message if kind == E.TASK_FAILED else None
            finished = event.created_at
        elif kind == E.TASK_WAITING_FOR_LOCK:
            waiting = True
    code_hash = code_by_build.get(run_completion.build_id) if run_completion else None
    if completion is not None:
        return TaskState(
            status="completed",
            started_at=started_by_build.get(completion.build_id, last_started),
            completed_at=completion.created_at,
            status_build_id=completion.build_id,
            code_hash=code_hash,
        )
    return TaskState(
        status=status,
        started_at=last_started,
        completed_at=finished,
        error_message=error if status == "failed" else None,
        waiting_for_lock=waiting and status == "pending",
        status_build_id=status_build,
        code_hash=code_hash,
    )
