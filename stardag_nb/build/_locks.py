"""Global concurrency locks: across processes, each task runs at most once at a time.

The build acquires a task's lock (named by the task id) before running it and
releases it after, marking the task completed. While a lock is held elsewhere the
build waits with backoff, re-checking completion; a task completed elsewhere counts
as previously completed. Implementations: the embedded SQLite registry's
(:class:`stardag_nb.registry.SQLiteGlobalLockManager`) and, later, the registry
service's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._task import BaseTask

__all__ = [
    "DefaultGlobalLockSelector",
    "GlobalConcurrencyLockManager",
    "GlobalLockConfig",
    "GlobalLockSelector",
    "LockAcquisitionResult",
    "LockAcquisitionStatus",
    "LockHandle",
]


class LockAcquisitionStatus(StrEnum):
    """The outcome of one attempt to acquire a lock."""

    ACQUIRED = "acquired"
    ALREADY_COMPLETED = "already_completed"
    HELD_BY_OTHER = "held_by_other"
    CONCURRENCY_LIMIT_REACHED = "concurrency_limit_reached"
    ERROR = "error"


@dataclass
class LockAcquisitionResult:
    """The outcome of :meth:`GlobalConcurrencyLockManager.acquire`."""

    status: LockAcquisitionStatus
    acquired: bool
    error_message: str | None = None


@runtime_checkable
class LockHandle(Protocol):
    """An acquired lock as an async context manager that renews its lease while held."""

    async def __aenter__(self) -> LockHandle: ...

    async def __aexit__(self, exc_type: object, exc_val: object, exc_tb: object) -> bool: ...

    def mark_completed(self) -> None:
        """Release as completed when the block exits."""


@runtime_checkable
class GlobalConcurrencyLockManager(Protocol):
    """Leases on task ids, shared by every build that uses the same store."""

    def lock(self, task_id: str) -> LockHandle:
        """A handle that acquires on enter, renews while held and releases on exit."""

    async def acquire(self, task_id: str) -> LockAcquisitionResult:
        """Try once to take the lease on ``task_id`` (re-entrant for the same owner)."""

    async def release(self, task_id: str, task_completed: bool = False) -> bool:
        """Give the lease back; with ``task_completed`` also record the completion."""


@dataclass
class GlobalLockConfig:
    """How builds use global locks (stardag's fields and defaults)."""

    enabled: bool | Callable[[BaseTask], bool] = False
    completion_retry_timeout_seconds: float = 30
    completion_retry_interval_seconds: float = 1.0
    lock_wait_timeout_seconds: float | None = 300
    lock_wait_initial_interval_seconds: float = 1.0
    lock_wait_max_interval_seconds: float = 30.0
    lock_wait_backoff_factor: float = 2.0
    exit_early_when_all_locked: bool = False


class GlobalLockSelector(Protocol):
    """Decides whether a task uses a global lock."""

    def __call__(self, task: BaseTask) -> bool: ...


class DefaultGlobalLockSelector:
    """Uses ``config.enabled``: a bool for every task, or a predicate."""

    def __init__(self, config: GlobalLockConfig) -> None:
        self.config = config

    def __call__(self, task: BaseTask) -> bool:
        enabled = self.config.enabled
        return bool(enabled(task)) if callable(enabled) else bool(enabled)
