"""Global concurrency locks in the SQLite registry file: leases on task ids, shared by
every process that opens the file."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Self, TypeVar
from uuid import UUID, uuid4

from .._lease_handle import LeaseHandle
from . import schema
from .store import SQLiteRegistry, default_registry_path

if TYPE_CHECKING:
    from ...build._locks import LockAcquisitionResult, LockAcquisitionStatus

# stardag_nb.build imports this package, so its lock types are imported when first used.

__all__ = ["SQLiteGlobalLockManager", "SQLiteLockHandle"]

_T = TypeVar("_T")

logger = logging.getLogger("stardag_nb.registry")

_HELD_HERE = "Lock is held by another holder of this lock manager"


class SQLiteGlobalLockManager:
    """Leases on task ids, stored in the registry's SQLite file.

    Args:
        registry_or_path: A :class:`SQLiteRegistry` (its file, workspace and environment
            are used), or a file path (workspace ``default``, environment ``local``), or
            None for the default registry file.
        owner_id: Who holds the leases taken through this manager (default: a new UUID;
            two managers with the same owner id share their leases in the file).
        ttl_seconds: How long a lease lasts unless renewed; a lease left by a crashed
            process is taken over once it expires.
        max_concurrent_locks: At most this many leases of *other* owners may be active
            when a new one is taken (None: no limit).

    Each operation is one short ``BEGIN IMMEDIATE`` transaction on the manager's own
    connection, never buffered. ``acquire`` answers, in this order: ``HELD_BY_OTHER``
    when this manager holds the lease already (another build of this process sharing
    the manager runs the task; no transaction); ``ALREADY_COMPLETED`` when a completion
    record exists for the task; ``ACQUIRED`` when the file's lease is this owner's
    (another manager with the same owner id, or one left by this manager: it is
    extended); ``HELD_BY_OTHER`` when another owner's lease has not expired;
    ``CONCURRENCY_LIMIT_REACHED`` when the limit is reached; else ``ACQUIRED`` (a free
    or expired lease is taken). Each acquisition bumps the lease's ``version``.
    ``release(task_completed=True)`` deletes the lease and writes the completion record
    in the same transaction, so a task whose completion is recorded is not acquired
    again (every process sees ``ALREADY_COMPLETED``) until :meth:`clear_completion`
    removes the record (its output is gone).

    The transactions run on the calling thread (they take well under a millisecond
    unless another process holds the file's write lock).
    """

    def __init__(
        self,
        registry_or_path: SQLiteRegistry | str | Path | None = None,
        owner_id: str | None = None,
        ttl_seconds: float = 60,
        max_concurrent_locks: int | None = None,
        *,
        workspace: str = "default",
        environment: str = "local",
    ) -> None:
        if isinstance(registry_or_path, SQLiteRegistry):
            self.path = registry_or_path.path
            workspace = registry_or_path.workspace
            environment = registry_or_path.environment
        elif registry_or_path is None:
            self.path = default_registry_path()
        else:
            self.path = Path(registry_or_path).expanduser()
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        self.workspace = workspace
        self.environment = environment
        self.owner_id = str(owner_id) if owner_id is not None else str(uuid4())
        self.ttl_seconds = float(ttl_seconds)
        self.max_concurrent_locks = max_concurrent_locks
        self._lock = threading.Lock()
        self._held: set[str] = set()  # leases handed out by this manager, not yet released
        self._held_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._env_id = 0
        self._finalizer: weakref.finalize | None = None

    def __repr__(self) -> str:
        return f"SQLiteGlobalLockManager({str(self.path)!r}, owner_id={self.owner_id!r})"

    def close(self) -> None:
        """Close the manager's connection (it reopens on next use)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._conn = None
            self._finalizer = None

    def _connection(self) -> sqlite3.Connection:
        # Called with self._lock held.
        if self._conn is None:
            conn = schema.connect(self.path)
            try:
                self._env_id = schema.ensure_environment(conn, self.workspace, self.environment)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._finalizer = weakref.finalize(self, _close_in_owner, conn, os.getpid())
        return self._conn

    def _transaction(self, fn: Callable[[sqlite3.Connection, int, float], _T]) -> _T:
        """Run ``fn(conn, env_id, now)`` in one BEGIN IMMEDIATE transaction."""
        with self._lock:
            conn = self._connection()

            def attempt() -> _T:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn, self._env_id, time.time())
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result

            return schema.retry_while_locked(attempt)

    # -- sync operations ---------------------------------------------------------------

    def acquire_sync(self, task_id: str | UUID) -> LockAcquisitionResult:
        """:meth:`acquire`, blocking."""
        from ...build._locks import LockAcquisitionResult, LockAcquisitionStatus

        name = str(task_id)
        owner, ttl, limit = self.owner_id, self.ttl_seconds, self.max_concurrent_locks

        def attempt(conn: sqlite3.Connection, env: int, now: float) -> LockAcquisitionStatus:
            if conn.execute(
                "SELECT 1 FROM task_completions WHERE environment_id = ? AND task_id = ?",
                (env, name),
            ).fetchone():
                return LockAcquisitionStatus.ALREADY_COMPLETED
            row = conn.execute(
                "SELECT owner_id, expires_at FROM locks WHERE environment_id = ? AND name = ?",
                (env, name),
            ).fetchone()
            mine = row is not None and row[0] == owner
            if row is not None and not mine and row[1] > now:
                return LockAcquisitionStatus.HELD_BY_OTHER
            if not mine and limit is not None:
                (active,) = conn.execute(
                    "SELECT count(*) FROM locks WHERE environment_id = ? AND expires_at > ?"
                    " AND owner_id != ?",
                    (env, now, owner),
                ).fetchone()
                if active >= limit:
                    return LockAcquisitionStatus.CONCURRENCY_LIMIT_REACHED
            conn.execute(
                "INSERT INTO locks (environment_id, name, owner_id, acquired_at, expires_at,"
                " version) VALUES (?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (environment_id, name) DO UPDATE SET"
                " acquired_at = CASE WHEN locks.owner_id = excluded.owner_id"
                " THEN locks.acquired_at ELSE excluded.acquired_at END,"
                " owner_id = excluded.owner_id, expires_at = excluded.expires_at,"
                " version = locks.version + 1",
                (env, name, owner, now, now + ttl),
            )
            return LockAcquisitionStatus.ACQUIRED

        if not self._claim(name):
            return LockAcquisitionResult(
                LockAcquisitionStatus.HELD_BY_OTHER, False, f"{_HELD_HERE} ({self.path})"
            )
        status = LockAcquisitionStatus.ERROR
        try:
            status = self._transaction(attempt)
        except (sqlite3.Error, OSError) as exc:  # OSError: the file's directory is unusable
            return LockAcquisitionResult(
                LockAcquisitionStatus.ERROR, False, f"lock {name} in {self.path}: {exc}"
            )
        except Exception as exc:  # StardagError from opening the file (schema, not a db)
            return LockAcquisitionResult(LockAcquisitionStatus.ERROR, False, str(exc))
        finally:
            if status is not LockAcquisitionStatus.ACQUIRED:
                self._unclaim(name)
        return LockAcquisitionResult(status, status is LockAcquisitionStatus.ACQUIRED)

    def _claim(self, name: str) -> bool:
        """Reserve ``name`` for one holder; False when this manager holds it already."""
        with self._held_lock:
            if name in self._held:
                return False
            self._held.add(name)
            return True

    def _unclaim(self, name: str) -> None:
        with self._held_lock:
            self._held.discard(name)

    def release_sync(self, task_id: str | UUID, task_completed: bool = False) -> bool:
        """:meth:`release`, blocking."""
        name, owner = str(task_id), self.owner_id

        def release(conn: sqlite3.Connection, env: int, now: float) -> bool:
            deleted = conn.execute(
                "DELETE FROM locks WHERE environment_id = ? AND name = ? AND owner_id = ?",
                (env, name, owner),
            ).rowcount
            if deleted and task_completed:
                conn.execute(
                    "INSERT INTO task_completions (environment_id, task_id, build_id,"
                    " completed_at) VALUES (?, ?, NULL, ?) ON CONFLICT DO NOTHING",
                    (env, name, now),
                )
            return bool(deleted)

        try:
            return self._guarded("release", name, release)
        finally:
            self._unclaim(name)  # after the transaction: no second holder meanwhile

    def renew_sync(self, task_id: str | UUID, ttl_seconds: float | None = None) -> bool:
        """:meth:`renew`, blocking."""
        name, owner = str(task_id), self.owner_id
        ttl = self.ttl_seconds if ttl_seconds is None else float(ttl_seconds)

        def renew(conn: sqlite3.Connection, env: int, now: float) -> bool:
            return bool(
                conn.execute(
                    "UPDATE locks SET expires_at = ? WHERE environment_id = ? AND name = ?"
                    " AND owner_id = ?",
                    (now + ttl, env, name, owner),
                ).rowcount
            )

        return self._guarded("renew", name, renew)

    def check_task_completed_sync(self, task_id: str | UUID) -> bool:
        """:meth:`check_task_completed`, blocking."""
        name = str(task_id)

        def check(conn: sqlite3.Connection, env: int, now: float) -> bool:
            return (
                conn.execute(
                    "SELECT 1 FROM task_completions WHERE environment_id = ? AND task_id = ?",
                    (env, name),
                ).fetchone()
                is not None
            )

        return self._guarded("check completion of", name, check)

    def clear_completion_sync(self, task_id: str | UUID) -> bool:
        """:meth:`clear_completion`, blocking."""
        name = str(task_id)

        def clear(conn: sqlite3.Connection, env: int, now: float) -> bool:
            conn.execute(
                "DELETE FROM task_completions WHERE environment_id = ? AND task_id = ?",
                (env, name),
            )
            return True

        return self._guarded("clear the completion of", name, clear)

    def _guarded(
        self, what: str, name: str, fn: Callable[[sqlite3.Connection, int, float], bool]
    ) -> bool:
        try:
            return self._transaction(fn)
        except Exception as exc:
            logger.warning("Could not %s lock %s in %s: %s", what, name, self.path, exc)
            return False

    # -- the async protocol ------------------------------------------------------------

    async def acquire(self, task_id: str | UUID) -> LockAcquisitionResult:
        """Try once to take the lease on ``task_id`` (see the class docstring)."""
        return self.acquire_sync(task_id)

    async def release(self, task_id: str | UUID, task_completed: bool = False) -> bool:
        """Give the lease back; with ``task_completed`` also record the task's completion
        (atomically). False when this owner does not hold the lease (then nothing is
        recorded)."""
        return self.release_sync(task_id, task_completed)

    async def renew(self, task_id: str | UUID, ttl_seconds: float | None = None) -> bool:
        """Extend the lease to ``ttl_seconds`` (default: the manager's) from now. False
        when this owner does not hold it (a lease that expired is still ours to renew
        until someone else takes it)."""
        return self.renew_sync(task_id, ttl_seconds)

    async def check_task_completed(self, task_id: str | UUID) -> bool:
        """True when a completion record exists for ``task_id``."""
        return self.check_task_completed_sync(task_id)

    async def clear_completion(self, task_id: str | UUID) -> bool:
        """Remove the completion record of ``task_id`` in this manager's workspace and
        environment (when its output is gone), so the next :meth:`acquire` can take the
        lease. Leases are untouched. True when no record remains (False: the file could
        not be written; a warning is logged)."""
        return self.clear_completion_sync(task_id)

    def lock(self, task_id: str | UUID) -> SQLiteLockHandle:
        """An async context manager: acquires on enter (see ``handle.result``), renews
        every ``ttl / 3`` while held, releases on exit (as completed if
        :meth:`SQLiteLockHandle.mark_completed` was called)."""
        return SQLiteLockHandle(self, str(task_id))


def _close_in_owner(conn: sqlite3.Connection, pid: int) -> None:
    if os.getpid() == pid:  # a forked child must not close its parent's connection
        conn.close()


class SQLiteLockHandle(LeaseHandle):
    """One lease of the embedded registry file, held for the duration of an ``async with``
    block (see :class:`~stardag_nb.registry._lease_handle.LeaseHandle`)."""

    def __init__(self, manager: SQLiteGlobalLockManager, task_id: str) -> None:
        super().__init__(manager, task_id)

    def _where(self) -> str:
        return str(self.manager.path)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        return self
