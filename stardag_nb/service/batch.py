"""Batched writes of one build (protocol extension ``batch-v1``).

A batch is a list of operations (register a task, task events, edges, assets, the
build's end), each what one v1 route would do, applied in order and atomically with a
handful of statements whatever its length: on SQLite, in one transaction, the tasks in
one multi-row insert, their primary keys in one select, then the events, edges and
assets in one insert each; on PostgreSQL the same rows in a look-up and one statement
on the driver's connection (:mod:`.batch_pg`). The operations are applied to rows by
the same code on both.

Retries are harmless: the batch's receipt (environment, ``batch_id``) is written
with it, atomically (by the statement that checks that the build is the caller's), so
a batch sent again (its answer was lost) finds the receipt and is answered from it,
never applied twice; two copies racing each other serialise on the receipt's key.

Events of a batch share one ``created_at`` and take increasing ids (UUIDv7, strictly
increasing within the process), so ordering by ``(created_at, id)`` (every status
derivation) and by ``id`` (the lock routes' newest completion) both give the order of
the operations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any
from uuid import UUID

from fastapi import HTTPException
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ..registry.wire import BatchOp, BatchOpKind, BatchRequest
from . import batch_pg, pg_driver
from .auth import SdkScope
from .db.ids import new_ids, utcnow
from .db.models import Asset, BatchReceipt, Build, Event, Task, TaskDependency, table_of
from .queries import CHUNK, TASK_NOT_FOUND, check_build_in_scope, dialect_insert
from .status import EventType, in_build_status

__all__ = ["BatchOutcome", "apply_batch"]

K = BatchOpKind

# the event each task operation appends (register: pending or referenced; see below)
_TASK_EVENTS: dict[BatchOpKind, EventType] = {
    K.START: EventType.TASK_STARTED,
    K.COMPLETE: EventType.TASK_COMPLETED,
    K.FAIL: EventType.TASK_FAILED,
    K.SUSPEND: EventType.TASK_SUSPENDED,
    K.RESUME: EventType.TASK_RESUMED,
    K.CANCEL: EventType.TASK_CANCELLED,
    K.WAITING_FOR_LOCK: EventType.TASK_WAITING_FOR_LOCK,
    K.ALREADY_COMPLETE: EventType.TASK_ALREADY_COMPLETE,
}
_BUILD_EVENTS: dict[BatchOpKind, EventType] = {
    K.BUILD_COMPLETE: EventType.BUILD_COMPLETED,
    K.BUILD_FAIL: EventType.BUILD_FAILED,
    K.BUILD_CANCEL: EventType.BUILD_CANCELLED,
    K.BUILD_EXIT_EARLY: EventType.BUILD_EXIT_EARLY,
}

_TASKS = table_of(Task)
_EVENTS = table_of(Event)
_EDGES = table_of(TaskDependency)
_ASSETS = table_of(Asset)
_RECEIPTS = table_of(BatchReceipt)
_BUILDS = table_of(Build)

# statements built once (per dialect where the dialect matters; see queries.py)
_INSERT_EVENTS = insert(_EVENTS)
_TASK_PKS = select(_TASKS.c.task_id, _TASKS.c.id).where(
    _TASKS.c.environment_id == bindparam("env_id"),
    _TASKS.c.task_id.in_(bindparam("task_ids", expanding=True)),
)
_RECEIPT = select(_RECEIPTS.c.build_id, _RECEIPTS.c.op_count, _RECEIPTS.c.results).where(
    _RECEIPTS.c.environment_id == bindparam("env_id"),
    _RECEIPTS.c.batch_id == bindparam("batch_id"),
)
_RECEIPT_RESULTS = (
    update(_RECEIPTS)
    .where(
        _RECEIPTS.c.environment_id == bindparam("env_id"),
        _RECEIPTS.c.batch_id == bindparam("the_batch_id"),
    )
    .values(results=bindparam("new_results"))
)
_by_dialect: dict[tuple[str, str], Any] = {}


def _dialect_statement(conn: AsyncConnection, name: str, build: Callable[[Any], Any]) -> Any:
    """A statement that depends on the dialect (``ON CONFLICT``), built once per dialect."""
    key = (conn.dialect.name, name)
    statement = _by_dialect.get(key)
    if statement is None:
        statement = _by_dialect[key] = build(conn)
    return statement


def _insert_receipt(conn: AsyncConnection) -> Any:
    """The receipt, inserted only if the build is in the caller's environment (one
    statement for the check and the insert): no row back means a replay or a build
    that is not the caller's."""

    def build(c: AsyncConnection) -> Any:
        r = _RECEIPTS.c
        columns = (r.environment_id, r.batch_id, r.build_id, r.op_count, r.created_at)
        source = select(
            bindparam("env_id", type_=r.environment_id.type),
            bindparam("batch_id", type_=r.batch_id.type),
            _BUILDS.c.id,
            bindparam("op_count", type_=r.op_count.type),
            bindparam("created_at", type_=r.created_at.type),
        ).where(
            _BUILDS.c.id == bindparam("build_id"), _BUILDS.c.environment_id == bindparam("env_id")
        )
        return (
            dialect_insert(c, _RECEIPTS)
            .from_select(columns, source)
            .on_conflict_do_nothing(index_elements=["environment_id", "batch_id"])
            .returning(r.batch_id)
        )

    return _dialect_statement(conn, "receipt", build)


def _insert_tasks(conn: AsyncConnection) -> Any:
    return _dialect_statement(
        conn,
        "tasks",
        lambda s: (
            dialect_insert(s, _TASKS)
            .on_conflict_do_nothing(index_elements=["environment_id", "task_id"])
            .returning(_TASKS.c.task_id)
        ),
    )


def _insert_edges(conn: AsyncConnection) -> Any:
    return _dialect_statement(
        conn,
        "edges",
        lambda s: dialect_insert(s, _EDGES).on_conflict_do_nothing(
            index_elements=["upstream_id", "downstream_id"]
        ),
    )


def _upsert_assets(conn: AsyncConnection) -> Any:
    def build(s: AsyncConnection) -> Any:
        statement = dialect_insert(s, _ASSETS)
        return statement.on_conflict_do_update(
            index_elements=["task_pk", "asset_type", "name"],
            set_={
                "body": statement.excluded.body,
                "build_id": statement.excluded.build_id,
                "updated_at": statement.excluded.updated_at,
            },
        )

    return _dialect_statement(conn, "assets", build)


Result = tuple[str | None, str | None]
"""One operation's outcome: (status, None) when applied, (None, detail) when not."""
_OK: Result = (None, None)


def _error(detail: str) -> Result:
    return None, detail


_ID_BLOCK = 256  # ids drawn at once (the most)

# the answer's JSON, one piece per outcome (most are one of a few: made once)
_PIECES: dict[Result, bytes] = {}


def _piece(result: Result) -> bytes:
    piece = _PIECES.get(result)
    if piece is None:
        status, detail = result
        data = {"ok": detail is None, "status": status, "detail": detail}
        piece = json.dumps(data, separators=(",", ":")).encode()
        if detail is None:
            _PIECES[result] = piece
    return piece


class BatchOutcome:
    """What a batch did: one :data:`Result` per operation; ``replayed`` when an earlier
    request with its ``batch_id`` applied it. :meth:`json` is the ``BatchResponse``."""

    def __init__(self, batch_id: UUID, results: list[Result], replayed: bool = False) -> None:
        self.batch_id = batch_id
        self.results = results
        self.replayed = replayed

    def json(self) -> bytes:
        """The ``BatchResponse`` as JSON, built from pieces (no model per operation)."""
        head = (
            f'{{"batch_id":"{self.batch_id}","replayed":{"true" if self.replayed else "false"},'
            '"results":['
        )
        return b"".join((head.encode(), b",".join(map(_piece, self.results)), b"]}"))


class _Batch:
    """The rows a batch writes, gathered in one pass over its operations."""

    def __init__(self, scope: SdkScope, build_id: UUID, now: Any, ops: list[BatchOp]) -> None:
        self.env_id = scope.env_id
        self.build_id = build_id
        self.now = now
        self.pks: dict[str, UUID] = {}
        self.created: set[str] = set()  # tasks this batch created (task_pending once)
        self.events: list[dict[str, Any]] = []
        self.edges: dict[tuple[UUID, UUID], bool] = {}
        self.assets: dict[tuple[UUID, str, str], dict[str, Any]] = {}
        self.results: list[Result] = []
        self._ids: list[UUID] = []
        # ids are drawn in blocks (see new_ids): the first for what the batch needs
        # without assets (an event per operation, a row per task it registers), more
        # if it needs more
        registers = sum(1 for op in ops if op.task is not None)
        self._block = max(1, min(_ID_BLOCK, len(ops) + registers))

    def new_id(self) -> UUID:
        """An id for a row of the batch."""
        if not self._ids:
            self._ids = new_ids(self._block)
            self._ids.reverse()
            self._block = _ID_BLOCK
        return self._ids.pop()

    def event(
        self,
        task_pk: UUID | None,
        event_type: str,
        error_message: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.events.append(
            {
                "id": self.new_id(),
                "environment_id": self.env_id,
                "build_id": self.build_id,
                "task_pk": task_pk,
                "event_type": event_type,
                "created_at": self.now,
                "error_message": error_message,
                "event_metadata": metadata,
            }
        )

    def edge_rows(self) -> list[tuple[UUID, UUID, bool]]:
        """(upstream, downstream, dynamic) of the edges, in key order (as every batch
        writes its rows: batches racing each other cannot deadlock)."""
        return sorted((up, down, dynamic) for (up, down), dynamic in self.edges.items())

    def asset_rows(self) -> list[dict[str, Any]]:
        """The assets' rows, in key order (see :meth:`edge_rows`)."""
        return [self.assets[key] for key in sorted(self.assets)]

    def edges_into(self, downstream: UUID, upstream_ids: Iterable[str], dynamic: bool) -> None:
        """Edges from the upstream tasks registered in the environment (others skipped,
        as in v1); an edge met twice keeps its first kind."""
        for upstream_id in upstream_ids:
            upstream = self.pks.get(upstream_id)
            if upstream is not None and upstream != downstream:
                self.edges.setdefault((upstream, downstream), dynamic)

    def apply(self, op: BatchOp) -> Result:
        kind = op.op
        if kind is K.REGISTER:
            if op.task is None:
                return _error("'register' needs 'task' (a TaskCreate)")
            task = op.task
            pk = self.pks[task.task_id]
            created = task.task_id in self.created
            self.created.discard(task.task_id)  # a second registration is a reference
            self.event(
                pk,
                EventType.TASK_PENDING if created else EventType.TASK_REFERENCED,
                metadata={"code_hash": task.code_hash} if task.code_hash else None,
            )
            self.edges_into(pk, task.dependency_task_ids, dynamic=False)
            return ("created" if created else "referenced"), None
        build_event = _BUILD_EVENTS.get(kind)
        if build_event is not None:
            self.event(None, build_event, op.error_message)
            return _OK
        if not op.task_id:
            return _error(f"{kind.value!r} needs 'task_id'")
        pk_or_none = self.pks.get(op.task_id)
        if pk_or_none is None:
            return _error(TASK_NOT_FOUND)
        pk = pk_or_none
        if kind is K.DEPENDENCIES:
            self.edges_into(pk, op.dependency_task_ids, op.dynamic)
            return _OK
        if kind is K.ASSETS:
            for asset in op.assets:  # the last of a (type, name) wins, as in v1
                self.assets[(pk, asset.type, asset.name)] = {
                    "id": self.new_id(),
                    "environment_id": self.env_id,
                    "task_pk": pk,
                    "build_id": self.build_id,
                    "asset_type": asset.type,
                    "name": asset.name,
                    "body": asset.body,
                    "created_at": self.now,
                    "updated_at": self.now,
                }
            return _OK
        event_type = _TASK_EVENTS[kind]
        metadata = {"lock_owner": op.lock_owner} if op.lock_owner is not None else None
        error = op.error_message if kind is K.FAIL else None
        self.event(pk, event_type, error, metadata)
        return in_build_status(event_type), None


def _task_rows(batch: _Batch, ops: list[BatchOp]) -> dict[str, dict[str, Any]]:
    """The row of each task the batch registers (its first registration's), by task id."""
    rows: dict[str, dict[str, Any]] = {}
    for op in ops:
        task = op.task
        if op.op is K.REGISTER and task is not None and task.task_id not in rows:
            rows[task.task_id] = {
                "id": batch.new_id(),
                "environment_id": batch.env_id,
                "task_id": task.task_id,
                "task_namespace": task.task_namespace or "",
                "task_name": task.task_name,
                "task_data": task.task_data,
                "version": task.version,
                "output_uri": task.output_uri,
                "created_at": batch.now,
            }
    return rows


def _named_tasks(ops: list[BatchOp]) -> set[str]:
    """The ids of every task the batch names (its own, and upstream ones)."""
    wanted: set[str] = set()
    for op in ops:
        if op.task_id:
            wanted.add(op.task_id)
        if op.task is not None:
            wanted.add(op.task.task_id)
            wanted.update(op.task.dependency_task_ids)
        wanted.update(op.dependency_task_ids)
    return wanted


async def _register_tasks(conn: AsyncConnection, batch: _Batch, ops: list[BatchOp]) -> None:
    """Insert the batch's new tasks (an existing row is kept as it is, as in v1) and look
    up the primary keys of every task the batch names."""
    rows = _task_rows(batch, ops)
    if rows:
        inserted = await conn.execute(_insert_tasks(conn), list(rows.values()))
        batch.created = set(inserted.scalars())
        batch.pks.update((task_id, rows[task_id]["id"]) for task_id in batch.created)
    missing = sorted(_named_tasks(ops) - batch.pks.keys())
    for start in range(0, len(missing), CHUNK):
        found = await conn.execute(
            _TASK_PKS, {"env_id": batch.env_id, "task_ids": missing[start : start + CHUNK]}
        )
        batch.pks.update((task_id, pk) for task_id, pk in found.tuples())


async def _write(conn: AsyncConnection, batch: _Batch) -> None:
    if batch.events:
        await conn.execute(_INSERT_EVENTS, batch.events)
    if batch.edges:
        await conn.execute(
            _insert_edges(conn),
            [
                {
                    "upstream_id": up,
                    "downstream_id": down,
                    "environment_id": batch.env_id,
                    "dynamic": dynamic,
                    "created_at": batch.now,
                }
                for (up, down), dynamic in batch.edges.items()
            ],
        )
    if batch.assets:
        await conn.execute(_upsert_assets(conn), list(batch.assets.values()))


async def _replay(
    conn: AsyncConnection, scope: SdkScope, build_id: UUID, request: BatchRequest
) -> BatchOutcome:
    """The answer to a batch applied before (its receipt)."""
    row = (
        await conn.execute(_RECEIPT, {"env_id": scope.env_id, "batch_id": request.batch_id})
    ).first()
    if row is None or row[0] != build_id or row[1] != len(request.ops):
        raise HTTPException(
            409,
            f"batch_id {request.batch_id} was used before for another batch; send every "
            "new batch with a new batch_id (and a retried one with its own)",
        )
    stored: dict[str, Any] = row[2] or {}
    results = [_error(str(stored[str(i)])) if str(i) in stored else _OK
               for i in range(len(request.ops))]  # fmt: skip
    return BatchOutcome(request.batch_id, results, replayed=True)


async def apply_batch(
    session: AsyncSession | AsyncConnection, scope: SdkScope, build_id: UUID, request: BatchRequest
) -> BatchOutcome:
    """Apply ``request`` to the build (in the caller's environment, else 404); answer one
    result per operation. An operation that cannot be applied (a task not registered in
    the environment: ``"Task not found"``) is reported in its result and skipped; the
    others are applied.

    On SQLite the batch is written in the session's (or connection's) transaction, which
    the caller commits. On PostgreSQL it runs on the driver's connection beneath (see
    :mod:`.batch_pg`): as one statement after a look-up, committed when this returns (in
    a transaction of its own when another registered one of its tasks meanwhile), or in
    a savepoint when the session's transaction had begun (committed with it)."""
    # the statements run on the session's connection through SQLAlchemy Core (or the
    # driver): the ORM session adds nothing to them but its per-call cost
    conn = session if isinstance(session, AsyncConnection) else await session.connection()
    if conn.dialect.name == "postgresql":
        outcome = await _apply_on_postgres(conn, scope, build_id, request)
    else:
        outcome = await _apply_with_core(conn, scope, build_id, request)
    if outcome is None:  # not the caller's build (404), or a replay
        await check_build_in_scope(conn, scope, build_id)
        return await _replay(conn, scope, build_id, request)
    return outcome


def _refused(results: list[Result]) -> dict[str, str]:
    """The details of the operations not applied, by index (what a replay answers)."""
    return {str(i): detail for i, (_, detail) in enumerate(results) if detail is not None}


async def _apply_with_core(
    conn: AsyncConnection, scope: SdkScope, build_id: UUID, request: BatchRequest
) -> BatchOutcome | None:
    now = utcnow()
    receipt = await conn.execute(
        _insert_receipt(conn),
        {
            "env_id": scope.env_id,
            "batch_id": request.batch_id,
            "build_id": build_id,
            "op_count": len(request.ops),
            "created_at": now,
        },
    )
    if receipt.scalar_one_or_none() is None:
        return None
    batch = _Batch(scope, build_id, now, request.ops)
    await _register_tasks(conn, batch, request.ops)
    batch.results = [batch.apply(op) for op in request.ops]
    await _write(conn, batch)
    refused = _refused(batch.results)
    if refused:  # a replay answers these; the others are plain successes
        await conn.execute(
            _RECEIPT_RESULTS,
            {"env_id": scope.env_id, "the_batch_id": request.batch_id, "new_results": refused},
        )
    return BatchOutcome(request.batch_id, batch.results)


async def _apply_on_postgres(
    conn: AsyncConnection, scope: SdkScope, build_id: UUID, request: BatchRequest
) -> BatchOutcome | None:
    """The batch on the driver's connection (see :mod:`.batch_pg`): a look-up and one
    statement that writes it, or, within a transaction the session began and when a
    task it registers was registered meanwhile by another, two in a transaction."""
    pg = await pg_driver.driver_connection(conn)
    if not pg.is_in_transaction():
        try:
            return await _apply_in_one_statement(conn, pg, scope, build_id, request)
        except DBAPIError as exc:
            if not batch_pg.registered_meanwhile(exc.orig):
                raise
            # it wrote nothing: applied again below, in a transaction that sees that task
    return await _apply_in_transaction(conn, pg, scope, build_id, request)


async def _apply_in_one_statement(
    conn: AsyncConnection, pg: Any, scope: SdkScope, build_id: UUID, request: BatchRequest
) -> BatchOutcome | None:
    """The batch as a look-up and one statement, outside any transaction (None: a
    replay, or not a build of the caller's)."""
    now = utcnow()
    batch = _Batch(scope, build_id, now, request.ops)
    rows = _task_rows(batch, request.ops)
    async with pg_driver.one_statement_errors(conn, pg):
        found = await batch_pg.look_up(
            pg, scope.env_id, request.batch_id, list(_named_tasks(request.ops))
        )
        if found is None:
            return None  # a replay
        batch.pks.update(found)
        new = [row for task_id, row in rows.items() if task_id not in found]
        for row in new:
            batch.created.add(row["task_id"])
            batch.pks[row["task_id"]] = row["id"]
        batch.results = [batch.apply(op) for op in request.ops]
        applied = await batch_pg.apply_in_one_statement(
            pg,
            scope.env_id,
            build_id,
            request,
            now,
            sorted(new, key=itemgetter("task_id")),  # one order for every batch
            batch.events,
            batch.edge_rows(),
            batch.asset_rows(),
            _refused(batch.results),
        )
    return BatchOutcome(request.batch_id, batch.results) if applied else None


async def _apply_in_transaction(
    conn: AsyncConnection, pg: Any, scope: SdkScope, build_id: UUID, request: BatchRequest
) -> BatchOutcome | None:
    """The batch in two statements in a transaction (a savepoint of the session's)."""
    now = utcnow()
    batch = _Batch(scope, build_id, now, request.ops)
    rows = _task_rows(batch, request.ops)
    named = _named_tasks(request.ops)
    owned = not pg.is_in_transaction()  # else a savepoint of the session's transaction
    try:
        async with pg.transaction():
            claimed = await batch_pg.claim_and_register(
                pg,
                scope.env_id,
                build_id,
                request,
                now,
                sorted(rows.values(), key=itemgetter("task_id")),  # one order for every batch
                list(named),
            )
            if claimed is None:
                return None
            batch.created, earlier = claimed
            batch.pks.update(earlier)
            batch.pks.update((task_id, rows[task_id]["id"]) for task_id in batch.created)
            missing = named - batch.pks.keys()
            if missing:  # created by another transaction meanwhile, or not registered
                batch.pks.update(await batch_pg.find_tasks(pg, scope.env_id, list(missing)))
            batch.results = [batch.apply(op) for op in request.ops]
            await batch_pg.write_rows(
                pg,
                scope.env_id,
                build_id,
                request.batch_id,
                now,
                batch.events,
                batch.edge_rows(),
                batch.asset_rows(),
                _refused(batch.results),
            )
    except BaseException as exc:  # a cancellation too: see discard_unless_clean
        error = (
            await pg_driver.database_error(conn, pg, exc) if isinstance(exc, Exception) else None
        )
        await pg_driver.discard_unless_clean(conn, pg, owned)
        if error is not None:
            raise error from exc
        raise
    return BatchOutcome(request.batch_id, batch.results)
