"""The engine and sessions: one :class:`AsyncSession` per request, short transactions.

SQLite (aiosqlite) is set up for many concurrent clients:

- WAL journal, ``synchronous=NORMAL`` (a killed process loses no committed write),
  ``busy_timeout`` 30 s, foreign keys on;
- the driver's implicit transactions are off and we emit ``BEGIN`` ourselves: write
  sessions begin with ``BEGIN IMMEDIATE``, so a transaction that read first never fails
  with "database is locked" when it then writes;
- write sessions of this process are serialized by an :class:`asyncio.Lock` (SQLite
  allows one writer anyway): waiting there is fair and costs no busy-retry sleeps;
- an *autocommit* write session (``session(write=True, autocommit=True)``, for a route
  whose writes are one statement) takes the lock but emits no ``BEGIN``: each statement
  commits by itself, and ``COMMIT``/``ROLLBACK`` outside a transaction cost no trip;
- each statement is one trip to aiosqlite's worker thread (create a cursor, execute,
  fetch every row, close it), not four: see :class:`_PrefetchingCursor`.

PostgreSQL (asyncpg) needs none of that; its autocommit sessions, and every read-only
session, run in the driver's autocommit mode (no ``BEGIN``/``COMMIT`` round trips).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import cache, partial
from pathlib import Path
from typing import Any, Self

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = ["RETRY_AFTER", "Database", "database_reason", "unavailable_detail"]

_IMMEDIATE = "stardag_sqlite_immediate"
_AUTOCOMMIT = "stardag_sqlite_autocommit"
_HELD = "stardag_write_lock_held"
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA foreign_keys=ON",
)


RETRY_AFTER = {"Retry-After": "1"}
"""Headers of a 503 answer: the database is unavailable right now."""


def database_reason(exc: BaseException) -> str:
    """The driver's first line of a database error, shortened (SQLAlchemy's text would
    show the statement's parameters)."""
    return (str(getattr(exc, "orig", None) or type(exc).__name__).splitlines() or ["?"])[0][:200]


def unavailable_detail(exc: BaseException) -> str:
    """What a client is told when the database failed (a 503)."""
    return f"The registry database is unavailable right now ({database_reason(exc)}); retry"


class Database:
    """An async engine plus a session factory for one database URL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        # no reset (a ROLLBACK, one more trip) when a connection returns to the pool: every
        # session and connection ends its own transaction (commit, or rollback on close)
        kwargs: dict[str, Any] = {"echo": echo, "pool_reset_on_return": None}
        if self.is_sqlite:
            _ensure_sqlite_dir(self.url.database)
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 8
            creator = _aiosqlite_creator(self.url)
            if creator is not None:
                kwargs["async_creator"] = creator
        else:
            # enough connections for bursts of concurrent requests, and no overflow ones:
            # under a steady load above the pool size, overflow connections are opened
            # and closed again and again (a TCP handshake, a TLS attempt and a backend
            # start-up each); more requests than that wait for a connection instead.
            # Last in, first out: the few connections a steady load needs are reused,
            # warm (their prepared statements planned, the backend's caches filled),
            # while those a burst opened stay idle. Handed out in turn, every checkout
            # went to a backend last used 40 checkouts ago: the database's CPU per batch
            # request was a third higher.
            kwargs["pool_size"] = 40
            kwargs["max_overflow"] = 0
            kwargs["pool_use_lifo"] = True
            # ... so those may idle for long: a connection is renewed at checkout once it
            # is POOL_RECYCLE_SECONDS old, before a NAT or load balancer on the way could
            # have dropped its idle flow without a word (a ping on it would then wait for
            # TCP to give up, ~15 minutes)
            kwargs["pool_recycle"] = POOL_RECYCLE_SECONDS
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        else:
            _ping_when_idle(self.engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @asynccontextmanager
    async def session(
        self, *, write: bool = False, autocommit: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """A session; uncommitted work is rolled back when the block ends.

        ``write=True`` for a transaction that writes: on SQLite it takes this process's
        write lock and begins with ``BEGIN IMMEDIATE`` (see :meth:`pause_writes`).
        ``autocommit=True`` (with ``write``): every statement commits by itself, for work
        that is one write statement (plus reads that need no isolation from it).
        """
        session = self._sessions()
        try:
            async with session:
                if write and autocommit:
                    await self._begin_autocommit(session)
                elif write:
                    await self.resume_writes(session)
                elif not self.is_sqlite:
                    # PostgreSQL reads in READ COMMITTED take a snapshot per statement in
                    # a transaction too: without one they are the same, minus the BEGIN
                    # and COMMIT round trips (two of a one-query request's three)
                    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
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

    async def _begin_autocommit(self, session: AsyncSession) -> None:
        if self._write_lock is None:
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            return
        await self._write_lock.acquire()
        session.info[_HELD] = True
        await session.connection(execution_options={_AUTOCOMMIT: True})

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _ensure_sqlite_dir(database: str | None) -> None:
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


IDLE_PING_SECONDS = 5.0
POOL_RECYCLE_SECONDS = 180
"""A pooled PostgreSQL connection this old is renewed at its next checkout (below the
idle timeouts of common NATs and load balancers, 4 minutes and more)."""
_CHECKED_IN = "stardag_checked_in"


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Ping a pooled connection at checkout when it was idle for ``IDLE_PING_SECONDS``
    (a dead one is replaced, e.g. after the database server restarted). SQLAlchemy's
    ``pool_pre_ping`` pings at every checkout: a round trip on every request. A connection
    that died while in steady use fails one request with 503 (and the pool is renewed)."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get(_CHECKED_IN)
        if checked_in is None or time.monotonic() - checked_in < IDLE_PING_SECONDS:
            return  # new, or in steady use
        try:
            alive = sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the driver's error for a dead connection
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc
        if not alive:
            raise DisconnectionError("pooled connection is dead")


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
        options = conn.get_execution_options()
        if options.get(_AUTOCOMMIT, False):
            return  # each statement is its own transaction
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_IMMEDIATE, False) else "BEGIN")


# --------------------------------------------------------------------------------------------
# aiosqlite, one worker-thread trip per statement


def _aiosqlite_creator(url: Any) -> Callable[[], Any] | None:
    """``async_creator`` for the engine: an aiosqlite connection (with the URL's connect
    arguments, as the dialect would make it) whose cursors prefetch their rows. None (the
    dialect's own connections) when this aiosqlite lacks the internals it relies on
    (``Connection._execute``, ``._conn``, ``._thread``; aiosqlite 0.17 to 0.22 have them)."""
    import aiosqlite

    if not callable(getattr(aiosqlite.Connection, "_execute", None)):
        return None
    args, kwargs = url.get_dialect()().create_connect_args(url)

    async def creator() -> Any:
        connection = _prefetching_connection_class()(partial(sqlite3.connect, *args, **kwargs), 64)
        connection._thread.daemon = True  # as SQLAlchemy's own aiosqlite connect does
        return await connection

    return creator


class _PrefetchingCursor:
    """A cursor for SQLAlchemy's aiosqlite adapter that runs a statement in one trip to
    the connection's worker thread: a sqlite3 cursor is created, executes, has all its
    rows fetched and is closed there; ``description``, ``rowcount`` and ``lastrowid`` are
    kept. (aiosqlite's own cursor makes a trip for each of those steps, and every trip
    costs the event loop a wake-up.) SQLAlchemy fetches every row right after executing
    anyway (it buffers non-streaming results), so the results are the same."""

    arraysize = 1

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __await__(self) -> Any:
        return self.__aenter__().__await__()

    def _run(self, method: str, operation: str, parameters: Any) -> tuple[Any, list[Any], int, Any]:
        cursor = self._connection._conn.cursor()
        try:
            getattr(cursor, method)(operation, parameters)
            description = cursor.description
            rows = cursor.fetchall() if description else []
            return description, rows, cursor.rowcount, cursor.lastrowid
        finally:
            cursor.close()

    async def _call(self, method: str, operation: str, parameters: Any) -> _PrefetchingCursor:
        (
            self.description,
            self._rows,
            self.rowcount,
            self.lastrowid,
        ) = await self._connection._execute(self._run, method, operation, parameters)
        return self

    async def execute(self, operation: str, parameters: Any = None) -> _PrefetchingCursor:
        return await self._call("execute", operation, () if parameters is None else parameters)

    async def executemany(
        self, operation: str, seq_of_parameters: Iterable[Any]
    ) -> _PrefetchingCursor:
        return await self._call("executemany", operation, seq_of_parameters)

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while self._rows:
            yield self._rows.pop(0)

    async def close(self) -> None:
        self._rows = []

    async def setinputsizes(self, *sizes: Any) -> None:
        return None


@cache
def _prefetching_connection_class() -> type:
    """``aiosqlite.Connection`` whose ``cursor()`` is a :class:`_PrefetchingCursor` (made
    without a trip to the worker thread); aiosqlite is imported on first use only."""
    import aiosqlite

    class _PrefetchingConnection(aiosqlite.Connection):
        def cursor(self) -> _PrefetchingCursor:  # type: ignore[override]
            return _PrefetchingCursor(self)

        # outside a transaction (autocommit sessions, or after an error ended it) both are
        # no-ops for sqlite3: skip the trip to the worker thread. (in_transaction is read
        # between statements, never while the worker runs one on this connection.)
        async def commit(self) -> None:
            if self._connection is not None and self._conn.in_transaction:
                await super().commit()

        async def rollback(self) -> None:
            if self._connection is not None and self._conn.in_transaction:
                await super().rollback()

    return _PrefetchingConnection
