"""The engine and sessions: one :class:`AsyncSession` per request, short transactions.

SQLite (aiosqlite) is set up for many concurrent clients:

- WAL journal, ``synchronous=NORMAL`` (a killed process loses no committed write),
  ``busy_timeout`` 30 s, foreign keys on;
- the driver's implicit transactions are off and we emit ``BEGIN`` ourselves: write
  sessions begin with ``BEGIN IMMEDIATE``, so a transaction that read first never fails
  with "database is locked" when it then writes;
- write sessions of this process are serialized by an :class:`asyncio.Lock` (SQLite
  allows one writer anyway): waiting there is fair and costs no busy-retry sleeps.

PostgreSQL (asyncpg) needs none of that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = ["Database"]

_IMMEDIATE = "stardag_sqlite_immediate"
_HELD = "stardag_write_lock_held"
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA foreign_keys=ON",
)


class Database:
    """An async engine plus a session factory for one database URL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            _ensure_sqlite_dir(self.url.database)
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 8
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
            kwargs["pool_pre_ping"] = True
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @asynccontextmanager
    async def session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """A session; uncommitted work is rolled back when the block ends.

        ``write=True`` for a transaction that writes: on SQLite it takes this process's
        write lock and begins with ``BEGIN IMMEDIATE`` (see :meth:`pause_writes`).
        """
        session = self._sessions()
        try:
            async with session:
                if write:
                    await self.resume_writes(session)
                yield session
        finally:
            if session.info.pop(_HELD, False):
                assert self._write_lock is not None
                self._write_lock.release()

    async def pause_writes(self, session: AsyncSession) -> None:
        """Commit ``session`` and let other writers in, e.g. around slow I/O.

        Call :meth:`resume_writes` before writing with the session again.
        """
        await session.commit()
        if session.info.pop(_HELD, False):
            assert self._write_lock is not None
            self._write_lock.release()

    async def resume_writes(self, session: AsyncSession) -> None:
        """Begin a write transaction on ``session`` (on SQLite: take the write lock first)."""
        if self._write_lock is None or session.info.get(_HELD):
            return
        await self._write_lock.acquire()
        session.info[_HELD] = True
        await session.connection(execution_options={_IMMEDIATE: True})

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _ensure_sqlite_dir(database: str | None) -> None:
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (below); the driver must not open transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
