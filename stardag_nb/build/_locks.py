"""Global concurrency locks: across processes, each task runs at most once at a time.

The build acquires a task's lock (named by the task id) before running it and
releases it after, marking the task completed. While a lock is held elsewhere the
build waits with backoff, re-checking completion; a task completed elsewhere counts
as previously completed; a wait longer than ``lock_wait_timeout_seconds`` fails the task
with :class:`~stardag_nb.exceptions.LockWaitTimeoutError` (a ``TimeoutError``). A
completion record never outranks a missing output: a
manager that can (:class:`CompletionClearingLockManager`) clears the record of a task
whose output is gone, so it can be built again. Implementations: the embedded SQLite
registry's (:class:`stardag_nb.registry.SQLiteGlobalLockManager`) and the registry
service's (:class:`stardag_nb.registry.RegistryGlobalConcurrencyLockManager`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from ..exceptions import LockWaitTimeoutError

if TYPE_CHECKING:
    from .._task import BaseTask

__all__ = [
    "CompletionClearingLockManager",
    "DefaultGlobalLockSelector",
    "GlobalConcurrencyLockManager",
    "GlobalLockConfig",
    "GlobalLockSelector",
    "LockAcquisitionResult",
    "LockAcquisitionStatus",
    "LockHandle",
    "LockWaitTimeoutError",
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

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool: ...

    def mark_completed(self) -> None:
        """Release as completed when the block exits."""


@runtime_checkable
class GlobalConcurrencyLockManager(Protocol):
    """Leases on task ids, shared by every build that uses the same store.

    One manager may serve several builds at once (in one process): it hands a lease to
    one holder at a time, so a second ``acquire`` of a lease it holds answers
    ``HELD_BY_OTHER`` until the first holder releases it.
    """

    def lock(self, task_id: str) -> LockHandle:
        """A handle that acquires on enter, renews while held and releases on exit."""

    async def acquire(self, task_id: str) -> LockAcquisitionResult:
        """Try once to take the lease on ``task_id``."""

    async def release(self, task_id: str, task_completed: bool = False) -> bool:
        """Give the lease back; with ``task_completed`` also record the completion."""


@runtime_checkable
class CompletionClearingLockManager(GlobalConcurrencyLockManager, Protocol):
    """A lock manager that can forget a task's completion (both built-in ones can; the
    method is optional for other managers)."""

    async def clear_completion(self, task_id: str) -> bool:
        """Remove the completion record of ``task_id`` in the manager's own scope (so the
        next ``acquire`` can answer ``ACQUIRED``); leases are untouched. True when no
        record remains; False when it could not be cleared (then it stays)."""


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
