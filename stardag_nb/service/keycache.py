"""A short-lived cache of verified API keys: key digest → who calls and in which environment.

Every SDK request carries an API key; looking it up (key, environment, workspace and the
creator's membership) was one query per request. :class:`ApiKeyCache` keeps a verified
key's scope for ``ttl`` seconds (``STARDAG_SERVICE_API_KEY_CACHE_SECONDS``; 0 turns it
off). Only keys that passed every check are kept; a refused key is looked up every time.

Invalidation: the database engine is watched (:func:`watch_auth_changes`): any ``UPDATE``
or ``DELETE`` of ``api_keys`` (other than the ``last_used_at`` touch), ``environments``,
``workspaces``, ``workspace_members`` or ``users`` advances an :class:`AuthEpoch` when the
statement runs and again when its connection goes back to the pool (after the commit).
An entry is used only while the epoch is the one read *before* its lookup began, so a
revoked key, a removed member's key or a deleted environment's key stops working at once
for the next request. Entries are dropped wholesale on a change (changes are rare).

Scope of "at once": with one process, always. ``stardag-nb serve --workers N`` shares the
epoch between its workers through a small memory-mapped file (:meth:`AuthEpoch.shared`),
so all workers of one ``serve`` see a change at once too. Servers on other hosts (or other
``serve`` commands) on the same database are bounded by ``ttl``.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["ApiKeyCache", "AuthEpoch", "CachedKey", "watch_auth_changes"]

EPOCH_FILE_ENV = "STARDAG_SERVICE_AUTH_EPOCH_FILE"
_WATCHED = frozenset({"api_keys", "environments", "workspaces", "workspace_members", "users"})
_STATEMENT = re.compile(
    r"\s*(?:UPDATE\s+|DELETE\s+FROM\s+)\"?(\w+)\"?(?:\s+SET\s+(.*?)\s+WHERE\b)?",
    re.IGNORECASE | re.DOTALL,
)
_TOUCH_ONLY = re.compile(r"\"?last_used_at\"?\s*=[^,]*", re.IGNORECASE)  # one assignment
_DIRTY = "stardag_auth_dirty"


class AuthEpoch:
    """A counter that advances whenever credentials or their scope may have changed.

    In-process by default; :meth:`shared` backs it by an 8-byte memory-mapped file so that
    several worker processes of one server see each other's changes.
    """

    def __init__(self) -> None:
        self._local = 0
        self._map: mmap.mmap | None = None
        self._fd: int | None = None

    @classmethod
    def shared(cls, path: str) -> AuthEpoch:
        """An epoch kept in the file ``path`` (created with 8 zero bytes if missing)."""
        epoch = cls()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(fd).st_size < 8:
            os.pwrite(fd, b"\0" * 8, 0)
        epoch._fd = fd
        epoch._map = mmap.mmap(fd, 8)
        return epoch

    @classmethod
    def from_environment(cls) -> AuthEpoch:
        """:meth:`shared` on ``$STARDAG_SERVICE_AUTH_EPOCH_FILE`` when set, else in-process."""
        path = os.environ.get(EPOCH_FILE_ENV)
        return cls.shared(path) if path else cls()

    def current(self) -> int:
        """The epoch now."""
        if self._map is None:
            return self._local
        return int(struct.unpack_from("<Q", self._map, 0)[0])

    def bump(self) -> None:
        """Advance the epoch (atomically across processes when shared)."""
        self._local += 1
        if self._map is None or self._fd is None:
            return
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            value = struct.unpack_from("<Q", self._map, 0)[0] + 1
            struct.pack_into("<Q", self._map, 0, value)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the mapped file (a shared epoch)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class CachedKey:
    """What :func:`~stardag_nb.service.auth.sdk_scope` needs of a verified key."""

    key_id: UUID
    environment: Any  # a detached Environment row, read only
    workspace_slug: str
    api_key: Any  # a detached ApiKey row, read only
    last_used_at: Any
    stamp: int
    expires: float


class ApiKeyCache:
    """Verified API keys by digest, for ``ttl`` seconds and one :class:`AuthEpoch`."""

    def __init__(self, ttl: float, epoch: AuthEpoch, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.epoch = epoch
        self.max_entries = max_entries
        self._entries: dict[str, CachedKey] = {}
        self._seen = -1

    @property
    def enabled(self) -> bool:
        """Whether anything is cached (``ttl > 0``)."""
        return self.ttl > 0

    def get(self, key_hash: str) -> CachedKey | None:
        """The live entry of ``key_hash``, or None."""
        epoch = self.epoch.current()
        if epoch != self._seen:
            self._entries.clear()
            self._seen = epoch
            return None
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry.stamp != epoch or entry.expires <= time.monotonic():
            del self._entries[key_hash]
            return None
        return entry

    def put(
        self,
        key_hash: str,
        *,
        stamp: int,
        environment: Any,
        workspace_slug: str,
        api_key: Any,
    ) -> None:
        """Keep a key verified by a lookup that began at epoch ``stamp`` (dropped if the
        epoch moved on meanwhile)."""
        if not self.enabled or self.epoch.current() != stamp:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key_hash] = CachedKey(
            key_id=api_key.id,
            environment=environment,
            workspace_slug=workspace_slug,
            api_key=api_key,
            last_used_at=api_key.last_used_at,
            stamp=stamp,
            expires=time.monotonic() + self.ttl,
        )


def changes_auth(statement: str) -> bool:
    """Whether SQL ``statement`` may change a credential or its scope (see the module
    docstring; the ``last_used_at`` touch of a key does not)."""
    match = _STATEMENT.match(statement)
    if match is None or match.group(1).lower() not in _WATCHED:
        return False
    assignments = match.group(2)
    if match.group(1).lower() == "api_keys" and assignments is not None:
        return _TOUCH_ONLY.fullmatch(assignments.strip()) is None
    return True


def watch_auth_changes(engine: AsyncEngine, epoch: AuthEpoch) -> None:
    """Advance ``epoch`` around every statement of ``engine`` that :func:`changes_auth`:
    when it runs and when its connection is returned to the pool (after the commit)."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before(
        conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        if statement[:1] in ("U", "D", "u", "d", " ", "\n") and changes_auth(statement):
            conn.info[_DIRTY] = True
            epoch.bump()

    @event.listens_for(sync_engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(_DIRTY, False):
            epoch.bump()
