"""What a registry returns: its records (builds, tasks, events, edges, workspaces and
environments), the kinds of event in its log, and its lookup errors. Shared by every
registry (the embedded store, the service client) and their callers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from ..exceptions import StardagError

__all__ = [
    "BuildNotFoundError",
    "BuildRecord",
    "BuildTaskRecord",
    "DependencyRecord",
    "EnvironmentRecord",
    "EnvironmentUnavailableError",
    "EventRecord",
    "RegistryEventKind",
    "TaskNotFoundError",
    "WorkspaceRecord",
]


class TaskNotFoundError(StardagError, LookupError):
    """The registry has no task with this id (in its workspace and environment)."""


class BuildNotFoundError(StardagError, LookupError):
    """The registry has no build with this id (in its workspace and environment)."""


class EnvironmentUnavailableError(StardagError):
    """The registry's environment takes no builds: it was deleted, or it is not running
    (its provisioning failed, or has not finished)."""


class RegistryEventKind(StrEnum):
    """The kinds of event in the registry's append-only log."""

    BUILD_STARTED = "build_started"
    BUILD_COMPLETED = "build_completed"
    BUILD_FAILED = "build_failed"
    BUILD_CANCELLED = "build_cancelled"
    BUILD_EXIT_EARLY = "build_exit_early"
    BUILD_ABANDONED = "build_abandoned"
    TASK_REGISTERED = "task_registered"
    TASK_STARTED = "task_started"
    TASK_SUSPENDED = "task_suspended"
    TASK_RESUMED = "task_resumed"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_CANCELLED = "task_cancelled"
    TASK_WAITING_FOR_LOCK = "task_waiting_for_lock"
    TASK_ALREADY_COMPLETE = "task_already_complete"


@dataclass(frozen=True)
class WorkspaceRecord:
    """A workspace: a namespace of environments."""

    name: str
    created_at: datetime


@dataclass(frozen=True)
class EnvironmentRecord:
    """An environment within a workspace: tasks and builds are scoped to one."""

    workspace: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class BuildRecord:
    """One build: its status is ``running``, ``completed``, ``failed``, ``cancelled``,
    ``exit_early`` or ``abandoned`` (its process died while it ran: ``error_message``
    says which and when it was last seen). ``host`` and ``pid`` name the process that
    ran it, ``heartbeat_at`` when that process last said it was alive (when known)."""

    id: UUID
    name: str
    workspace: str
    environment: str
    status: str
    description: str | None
    commit_hash: str | None
    root_task_ids: tuple[UUID, ...]
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    host: str | None = None
    pid: int | None = None
    heartbeat_at: datetime | None = None


@dataclass(frozen=True)
class BuildTaskRecord:
    """A task as seen by one build, with its status in that build (``pending``,
    ``running``, ``suspended``, ``completed``, ``failed``, ``cancelled``, or
    ``already_complete`` when its output existed before the build). The unfinished tasks
    of an abandoned build are ``cancelled``, with an error message saying so."""

    task_id: UUID
    name: str
    namespace: str
    status: str
    registered_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None


@dataclass(frozen=True)
class EventRecord:
    """One entry of the event log (``task_id`` is None for build events)."""

    id: int
    build_id: UUID
    task_id: UUID | None
    kind: str
    created_at: datetime
    error_message: str | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class DependencyRecord:
    """An edge ``upstream -> downstream``: the downstream task depends on the upstream
    one; ``dynamic`` when it was yielded by ``run`` rather than returned by ``requires``."""

    upstream_task_id: UUID
    downstream_task_id: UUID
    dynamic: bool
