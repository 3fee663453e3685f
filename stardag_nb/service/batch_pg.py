"""Batched writes on PostgreSQL: a batch in two statements on the driver's connection
(a look-up, then one that writes it).

:mod:`~stardag_nb.service.batch` applies a batch through SQLAlchemy Core, five or six
statements in a transaction. On PostgreSQL that is most of a batch's cost: each
statement is a round trip, and SQLAlchemy's work per statement and per row (compiling,
processing parameters, one bind per row of an ``executemany``) costs several times the
database's own. Here the same rows are written by statements with fixed texts (prepared
once per connection), their rows passed as arrays (``unnest``), on the asyncpg
connection beneath a pooled one (:mod:`.pg_driver`). Two statements, and no
transaction around them (no BEGIN and COMMIT, two round trips fewer):

1. *look up*: whether the batch has a receipt (a replay), and the primary keys of the
   tasks it names;
2. *apply*: the receipt (only for a build in the caller's environment, with the
   results of refused operations), and, only when it was inserted, the tasks not found
   (with keys the batch gave them), then the events, edges and assets. One statement is
   atomic on its own; its row locks are taken in the transactional way's order
   (receipt, tasks, the rest), so the two ways cannot deadlock each other.

A task that another transaction registers between the two makes the second fail
without writing anything (see ``_APPLY``); the batch is then applied in a transaction,
the way a batch within a session's transaction always is:

1. *claim and register*: the receipt, then the new tasks (only when the receipt was
   inserted); it returns the receipt, the tasks it created and the primary keys of the
   named tasks that existed before it (named tasks it did not find are looked up once
   more, in a new snapshot: another transaction may have created them meanwhile);
2. *write*: the events, edges and assets, and the results of refused operations.

The operations themselves are applied by the same code as on SQLite (``_Batch``), so
all ways write the same rows. Rows are written in the order of their keys, so that
batches racing to register the same tasks cannot deadlock.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from ..registry.wire import BatchRequest

__all__ = [
    "apply_in_one_statement",
    "claim_and_register",
    "find_tasks",
    "look_up",
    "registered_meanwhile",
    "write_rows",
]


def _arrays(first: int, *types: str) -> str:
    """``$first::type[], ...``: a run of array parameters, numbered from ``first``."""
    return ", ".join(f"${first + i}::{t}[]" for i, t in enumerate(types))


_CREATED = f"""created AS (
    INSERT INTO tasks (id, environment_id, task_id, task_namespace, task_name, task_data,
                       version, output_uri, created_at)
    SELECT t.id, $1, t.task_id, t.task_namespace, t.task_name, t.task_data::json,
           t.version, t.output_uri, $5
    FROM unnest({_arrays(6, "uuid", "text", "text", "text", "text", "text", "text")})
        AS t(id, task_id, task_namespace, task_name, task_data, version, output_uri)
    WHERE EXISTS (SELECT FROM receipt)
    ON CONFLICT (environment_id, task_id) DO NOTHING
    RETURNING task_id
)"""
# the tasks a batch registers that are new ($1 environment, $5 time, $6-$12 their
# columns), only when its receipt was inserted; both ways write them with this text


def _row_writes(build: str, now: str, first: int, when: str = "") -> str:
    """The CTEs that write a batch's events, edges and assets (``when``: a condition on
    all three), their columns as arrays from parameter ``first`` on (5, 3 and 5
    arrays), with ``$1`` the environment and ``build`` and ``now`` the parameters of the
    build and the time."""
    edges, assets = first + 5, first + 8
    return f"""new_events AS (
    INSERT INTO events (id, environment_id, build_id, task_pk, event_type, created_at,
                        error_message, event_metadata)
    SELECT e.id, $1, {build}, e.task_pk, e.event_type, {now}, e.error_message,
           e.event_metadata::json
    FROM unnest({_arrays(first, "uuid", "uuid", "text", "text", "text")})
        AS e(id, task_pk, event_type, error_message, event_metadata)
    {when}
), new_edges AS (
    INSERT INTO task_dependencies (upstream_id, downstream_id, environment_id, dynamic,
                                   created_at)
    SELECT d.upstream_id, d.downstream_id, $1, d.dynamic, {now}
    FROM unnest({_arrays(edges, "uuid", "uuid", "bool")}) AS d(upstream_id, downstream_id, dynamic)
    {when}
    ON CONFLICT (upstream_id, downstream_id) DO NOTHING
), new_assets AS (
    INSERT INTO assets (id, environment_id, task_pk, build_id, asset_type, name, body,
                        created_at, updated_at)
    SELECT a.id, $1, a.task_pk, {build}, a.asset_type, a.name, a.body::json, {now}, {now}
    FROM unnest({_arrays(assets, "uuid", "uuid", "text", "text", "text")})
        AS a(id, task_pk, asset_type, name, body)
    {when}
    ON CONFLICT (task_pk, asset_type, name) DO UPDATE
        SET body = excluded.body, build_id = excluded.build_id, updated_at = excluded.updated_at
)"""


_CLAIM = f"""
WITH receipt AS (
    INSERT INTO batch_receipts (environment_id, batch_id, build_id, op_count, created_at)
    SELECT $1, $2, builds.id, $4, $5 FROM builds
    WHERE builds.id = $3 AND builds.environment_id = $1
    ON CONFLICT (environment_id, batch_id) DO NOTHING
    RETURNING 1
), {_CREATED}
SELECT 0, NULL::text, NULL::uuid FROM receipt
UNION ALL SELECT 1, task_id, NULL FROM created
UNION ALL SELECT 2, task_id, id FROM tasks
    WHERE environment_id = $1 AND task_id = ANY($13::text[]) AND EXISTS (SELECT FROM receipt)
"""
# 0: the receipt was inserted (the batch is new, its build the caller's); 1: a task the
# statement created; 2: a named task that existed before it

_FIND = "SELECT task_id, id FROM tasks WHERE environment_id = $1 AND task_id = ANY($2::text[])"

_WRITE = f"""
WITH {_row_writes("$2", "$3", 4)}, refused AS (
    UPDATE batch_receipts SET results = $18::json
    WHERE $18::text IS NOT NULL AND environment_id = $1 AND batch_id = $17
)
SELECT 1
"""
# $1 environment, $2 build, $3 time, $4-$16 rows, $17 batch, $18 refused operations

_LOOK_UP = """
SELECT 0, NULL::text, NULL::uuid FROM batch_receipts WHERE environment_id = $1 AND batch_id = $2
UNION ALL SELECT 1, task_id, id FROM tasks WHERE environment_id = $1 AND task_id = ANY($3::text[])
"""
# 0: the batch has a receipt (a replay); 1: a named task and its primary key

_APPLY = f"""
WITH build AS (
    SELECT id FROM builds WHERE id = $3 AND environment_id = $1
), receipt AS (
    INSERT INTO batch_receipts (environment_id, batch_id, build_id, op_count, created_at,
                                results)
    SELECT $1, $2, build.id, $4, $5, $13::json FROM build
    ON CONFLICT (environment_id, batch_id) DO NOTHING
    RETURNING 1
), {_CREATED}, {_row_writes("$3", "$5", 14, "WHERE EXISTS (SELECT FROM receipt)")}
SELECT (SELECT count(*) FROM receipt), (SELECT count(*) FROM created)
"""
# $1 environment, $2 batch, $3 build, $4 operations, $5 time, $6-$12 new tasks, $13
# refused operations, $14-$26 rows.
# The tasks the look-up did not find are inserted with the primary keys the batch gave
# them, and its events (each registration has one), edges and assets name them by those
# keys. A task another transaction registered since the look-up is left as it is (ON
# CONFLICT), so a key of ours then names no row: the foreign key check of events.task_pk
# at the end of the statement fails it (SQLSTATE 23503), the statement writes nothing,
# and the batch is applied again in a transaction (see registered_meanwhile). That
# detection needs both the foreign key and an event for every registration. `created`
# is read by the final SELECT, so it runs right after `receipt` (data-modifying CTEs
# that nothing reads run last), before the events, edges and assets.


def _columns(rows: list[dict[str, Any]], *keys: str) -> list[list[Any]]:
    """The values of ``keys`` in ``rows``, a list per key (the arrays ``unnest`` reads)."""
    return [[row[key] for row in rows] for key in keys]


def _json(value: Any) -> str:
    """A JSON column's text, as SQLAlchemy's ``JSON`` type writes it (``None``: ``null``)."""
    return "null" if value is None else json.dumps(value)


async def look_up(
    pg: Any, env_id: UUID, batch_id: UUID, named: list[str]
) -> dict[str, UUID] | None:
    """The primary keys of the named tasks in the environment, or None when the batch
    has a receipt (a replay). One statement, outside any transaction."""
    rows = await pg.fetch(_LOOK_UP, env_id, batch_id, named)
    found: dict[str, UUID] = {}
    for kind, task_id, pk in rows:
        if kind == 0:
            return None
        found[task_id] = pk
    return found


async def apply_in_one_statement(
    pg: Any,
    env_id: UUID,
    build_id: UUID,
    request: BatchRequest,
    now: Any,
    new_tasks: list[dict[str, Any]],
    events: list[dict[str, Any]],
    edges: list[tuple[UUID, UUID, bool]],
    assets: list[dict[str, Any]],
    refused: dict[str, str] | None,
) -> bool:
    """Write the batch (its receipt, new tasks, events, edges and assets) in one
    statement, atomic without a transaction around it: False when it wrote nothing (not
    a build of the caller's environment, or a copy of the batch applied meanwhile)."""
    return bool(
        await pg.fetchval(
            _APPLY,
            env_id,
            request.batch_id,
            build_id,
            len(request.ops),
            now,
            *_columns(new_tasks, "id", "task_id", "task_namespace", "task_name"),
            [_json(row["task_data"]) for row in new_tasks],
            *_columns(new_tasks, "version", "output_uri"),
            _json(refused) if refused else None,
            *_columns(events, "id", "task_pk", "event_type", "error_message"),
            [_json(e["event_metadata"]) for e in events],
            [up for up, _, _ in edges],
            [down for _, down, _ in edges],
            [dynamic for _, _, dynamic in edges],
            *_columns(assets, "id", "task_pk", "asset_type", "name"),
            [_json(a["body"]) for a in assets],
        )
    )


def registered_meanwhile(exc: BaseException | None) -> bool:
    """Whether :func:`apply_in_one_statement` failed because a task it was to create was
    registered by another transaction after the look-up (it wrote nothing)."""
    return str(getattr(exc, "sqlstate", "") or "") == "23503"


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
