"""The asyncpg connection beneath a pooled SQLAlchemy one, for the hot writes that
run their own statements on it (:mod:`.batch_pg`, :mod:`.builds_pg`): the driver's
errors as SQLAlchemy's, and connections discarded when an error or a cancellation left
them in an unknown state.

Errors are mapped so that callers handle them as any other: ``OperationalError`` (a
503, which the client sends again) for a lost connection, which also renews the pool as
SQLAlchemy's own disconnect handling does, and for a transaction the server gave up for
now (a deadlock, a disk full, a timeout); ``DBAPIError`` carrying the SQLSTATE
otherwise (22, a value refused: a 422). A connection is never handed back to the pool
inside a transaction, nor with a statement interrupted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "database_error",
    "discard_unless_clean",
    "driver_connection",
    "one_statement_errors",
]

# SQLSTATE classes of a connection lost (the server went away or shut it down)
_LOST = ("08", "57P")
# ... and of a transaction the server gave up for now (a deadlock, a serialization
# failure, a disk or memory full, a lock or statement timeout): nothing was written, and
# sending the request again is safe
_RETRY = ("40", "53", "55P03", "57014")


async def driver_connection(conn: AsyncConnection) -> Any:
    """The asyncpg connection beneath ``conn`` (checked out by it)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def database_error(conn: AsyncConnection, pg: Any, exc: Exception) -> DBAPIError | None:
    """The driver's error ``exc`` as SQLAlchemy's (None: not a database error): a lost
    connection or a transaction the server gave up for now as ``OperationalError`` (the
    client is told to retry: 503), any other as ``DBAPIError`` carrying the SQLSTATE (a
    value the database refused: 422). A lost connection renews the pool, as SQLAlchemy
    does on a disconnect (a restarted server dropped all of them)."""
    import asyncpg

    sqlstate = str(getattr(exc, "sqlstate", "") or "")
    lost = (
        pg.is_closed()
        or sqlstate.startswith(_LOST)
        # (InternalClientError: left mid-operation by a connection lost under it)
        or isinstance(
            exc,
            asyncpg.ConnectionDoesNotExistError
            | asyncpg.InternalClientError
            | OSError
            | TimeoutError,
        )
    )
    if lost:
        await _discard(conn, exc, whole_pool=True)
        return OperationalError("(driver)", None, exc, connection_invalidated=True)
    if sqlstate.startswith(_RETRY):
        return OperationalError("(driver)", None, exc)
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return DBAPIError("(driver)", None, exc)  # SQLSTATE 22, a value refused: 422
    return None


async def discard_unless_clean(conn: AsyncConnection, pg: Any, owned: bool) -> None:
    """After an error or a cancellation in a transaction: discard the connection unless
    it is as it was before (closed, or a transaction of the caller's left open, even
    half-started: a pooled connection inside one would make every later transaction on
    it a savepoint of a transaction never committed)."""
    if conn.invalidated:
        return  # discarded already (a lost connection)
    if pg.is_closed() or (
        owned and (pg.is_in_transaction() or getattr(pg, "_top_xact", None) is not None)
    ):
        await _discard(conn)


async def _discard(
    conn: AsyncConnection, exc: BaseException | None = None, whole_pool: bool = False
) -> None:
    """Close the driver's connection now and have the pool replace it (``whole_pool``:
    every pooled connection as old as it too, at its next checkout). The closing is
    done before any await, so that a second cancellation cannot interrupt it and hand
    the connection back to the pool half-closed (outside SQLAlchemy's greenlet, its
    invalidation terminates the connection at once); the await only marks ``conn``."""
    sync = conn.sync_connection
    if sync is None or conn.invalidated:
        return
    pooled = sync.connection
    if whole_pool:
        conn.sync_engine.pool._invalidate(pooled, exc, _checkin=False)
    pooled.invalidate(exc)
    await conn.invalidate(exc)


@asynccontextmanager
async def one_statement_errors(conn: AsyncConnection, pg: Any) -> AsyncIterator[None]:
    """Around statements run outside a transaction: the driver's errors raised as
    SQLAlchemy's (see :func:`database_error`); after any other exception or a
    cancellation, which may have interrupted a statement, the connection is discarded
    (an error the server reported leaves it ready for the next statement)."""
    import asyncpg

    try:
        yield
    except BaseException as exc:
        error = await database_error(conn, pg, exc) if isinstance(exc, Exception) else None
        if not isinstance(exc, asyncpg.PostgresError):
            await _discard(conn)
        if error is not None:
            raise error from exc
        raise
