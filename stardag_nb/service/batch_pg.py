"""Batched writes on PostgreSQL: a batch in two statements on the driver's connection.

:mod:`~stardag_nb.service.batch` applies a batch through SQLAlchemy Core, five or six
statements in a transaction. On PostgreSQL that is most of a batch's cost: each
statement is a round trip, and SQLAlchemy's work per statement and per row (compiling,
processing parameters, one bind per row of an ``executemany``) costs several times the
database's own. Here the same rows are written by two statements with fixed texts
(prepared once per connection), their rows passed as arrays (``unnest``), run on the
asyncpg connection beneath the session in one transaction:

1. *claim and register*: the receipt is inserted (only for a build in the caller's
   environment), then the new tasks (only when the receipt was), and the statement
   returns the receipt, the tasks it created and the primary keys of the named tasks
   that existed before it;
2. *write*: the events, edges and assets, and the results of refused operations on the
   receipt.

The operations themselves are applied by the same code as on SQLite (``_Batch``), so
both write the same rows. A task another transaction creates while the first statement
runs is not in that statement's snapshot: named tasks it did not find are looked up
once more (a new snapshot), as the Core path does. Database errors are raised as
SQLAlchemy's, so callers handle them as any other: ``OperationalError`` (a 503, which
the client sends again) for a lost connection, which also renews the pool as
SQLAlchemy's own disconnect handling does, and for a transaction the server gave up for
now (a deadlock, a disk full, a timeout); ``DBAPIError`` carrying the SQLSTATE
otherwise (22, a value refused: a 422). A
connection is never handed back to the pool inside a transaction of a batch: one that
an error or a cancellation (at any await) left open is discarded. Rows are written in
the order of their keys, so that batches racing to register the same tasks cannot
deadlock.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..registry.wire import BatchRequest

__all__ = [
    "claim_and_register",
    "database_error",
    "discard_unless_clean",
    "driver_connection",
    "find_tasks",
    "write_rows",
]

_CLAIM = """
WITH receipt AS (
    INSERT INTO batch_receipts (environment_id, batch_id, build_id, op_count, created_at)
    SELECT $1, $2, builds.id, $4, $5 FROM builds
    WHERE builds.id = $3 AND builds.environment_id = $1
    ON CONFLICT (environment_id, batch_id) DO NOTHING
    RETURNING 1
), created AS (
    INSERT INTO tasks (id, environment_id, task_id, task_namespace, task_name, task_data,
                       version, output_uri, created_at)
    SELECT t.id, $1, t.task_id, t.task_namespace, t.task_name, t.task_data::json,
           t.version, t.output_uri, $5
    FROM unnest($6::uuid[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                $12::text[])
        AS t(id, task_id, task_namespace, task_name, task_data, version, output_uri)
    WHERE EXISTS (SELECT FROM receipt)
    ON CONFLICT (environment_id, task_id) DO NOTHING
    RETURNING task_id
)
SELECT 0, NULL::text, NULL::uuid FROM receipt
UNION ALL SELECT 1, task_id, NULL FROM created
UNION ALL SELECT 2, task_id, id FROM tasks
    WHERE environment_id = $1 AND task_id = ANY($13::text[]) AND EXISTS (SELECT FROM receipt)
"""
# 0: the receipt was inserted (the batch is new, its build the caller's); 1: a task the
# statement created; 2: a named task that existed before it

_FIND = "SELECT task_id, id FROM tasks WHERE environment_id = $1 AND task_id = ANY($2::text[])"

_WRITE = """
WITH new_events AS (
    INSERT INTO events (id, environment_id, build_id, task_pk, event_type, created_at,
                        error_message, event_metadata)
    SELECT e.id, $1, $2, e.task_pk, e.event_type, $3, e.error_message, e.event_metadata::json
    FROM unnest($4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[])
        AS e(id, task_pk, event_type, error_message, event_metadata)
), new_edges AS (
    INSERT INTO task_dependencies (upstream_id, downstream_id, environment_id, dynamic,
                                   created_at)
    SELECT d.upstream_id, d.downstream_id, $1, d.dynamic, $3
    FROM unnest($9::uuid[], $10::uuid[], $11::bool[]) AS d(upstream_id, downstream_id, dynamic)
    ON CONFLICT (upstream_id, downstream_id) DO NOTHING
), new_assets AS (
    INSERT INTO assets (id, environment_id, task_pk, build_id, asset_type, name, body,
                        created_at, updated_at)
    SELECT a.id, $1, a.task_pk, $2, a.asset_type, a.name, a.body::json, $3, $3
    FROM unnest($12::uuid[], $13::uuid[], $14::text[], $15::text[], $16::text[])
        AS a(id, task_pk, asset_type, name, body)
    ON CONFLICT (task_pk, asset_type, name) DO UPDATE
        SET body = excluded.body, build_id = excluded.build_id, updated_at = excluded.updated_at
), refused AS (
    UPDATE batch_receipts SET results = $18::json
    WHERE $18::text IS NOT NULL AND environment_id = $1 AND batch_id = $17
)
SELECT 1
"""

# SQLSTATE classes of a connection lost (the server went away or shut it down)
_LOST = ("08", "57P")
# ... and of a transaction the server gave up for now (a deadlock, a serialization
# failure, a disk or memory full, a lock or statement timeout): nothing was written, and
# sending the batch again is safe (its receipt)
_RETRY = ("40", "53", "55P03", "57014")


def _columns(rows: list[dict[str, Any]], *keys: str) -> list[list[Any]]:
    """The values of ``keys`` in ``rows``, a list per key (the arrays ``unnest`` reads)."""
    return [[row[key] for row in rows] for key in keys]


def _json(value: Any) -> str:
    """A JSON column's text, as SQLAlchemy's ``JSON`` type writes it (``None``: ``null``)."""
    return json.dumps(value)


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
        return OperationalError("(batch)", None, exc, connection_invalidated=True)
    if sqlstate.startswith(_RETRY):
        return OperationalError("(batch)", None, exc)
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return DBAPIError("(batch)", None, exc)  # SQLSTATE 22, a value refused: 422
    return None


async def discard_unless_clean(conn: AsyncConnection, pg: Any, owned: bool) -> None:
    """After an error or a cancellation: discard the connection unless it is as it was
    before the batch (closed, or a transaction of the batch's left open, even
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


async def claim_and_register(
    pg: Any,
    env_id: UUID,
    build_id: UUID,
    request: BatchRequest,
    now: Any,
    task_rows: list[dict[str, Any]],
    named: list[str],
) -> tuple[set[str], dict[str, UUID]] | None:
    """Run statement 1: (the tasks it created, primary keys of named tasks that existed
    before it), or None when it claimed nothing (a replay, or another's build)."""
    rows = await pg.fetch(
        _CLAIM,
        env_id,
        request.batch_id,
        build_id,
        len(request.ops),
        now,
        *_columns(task_rows, "id", "task_id", "task_namespace", "task_name"),
        [_json(row["task_data"]) for row in task_rows],
        *_columns(task_rows, "version", "output_uri"),
        named,
    )
    if not rows:
        return None
    created: set[str] = set()
    earlier: dict[str, UUID] = {}
    for kind, task_id, pk in rows:
        if kind == 1:
            created.add(task_id)
        elif kind == 2:
            earlier[task_id] = pk
    return created, earlier


async def find_tasks(pg: Any, env_id: UUID, task_ids: list[str]) -> dict[str, UUID]:
    """Primary keys of the named tasks in the environment (a new snapshot)."""
    return {task_id: pk for task_id, pk in await pg.fetch(_FIND, env_id, task_ids)}


async def write_rows(
    pg: Any,
    env_id: UUID,
    build_id: UUID,
    batch_id: UUID,
    now: Any,
    events: list[dict[str, Any]],
    edges: list[tuple[UUID, UUID, bool]],
    assets: list[dict[str, Any]],
    refused: dict[str, str] | None,
) -> None:
    """Run statement 2: the batch's events, edges and assets, and its refused operations."""
    await pg.execute(
        _WRITE,
        env_id,
        build_id,
        now,
        *_columns(events, "id", "task_pk", "event_type", "error_message"),
        [_json(e["event_metadata"]) for e in events],
        [up for up, _, _ in edges],
        [down for _, down, _ in edges],
        [dynamic for _, _, dynamic in edges],
        *_columns(assets, "id", "task_pk", "asset_type", "name"),
        [_json(a["body"]) for a in assets],
        batch_id,
        _json(refused) if refused else None,
    )
