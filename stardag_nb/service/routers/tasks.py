"""SDK routes of tasks: registration, task events, assets and edges within a build, and
the environment's tasks (list, one, its assets, events and metadata)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...registry.wire import (
    AssetIn,
    AssetList,
    BuildTaskResponse,
    DependenciesAdd,
    EventResponse,
    GraphEdge,
    TaskCreate,
    TaskList,
    TaskMetadataResponse,
    TaskResponse,
    TaskStatusResponse,
)
from ..auth import SdkScope, SdkScopeDep, SessionDep, autocommit
from ..db.ids import new_id, utcnow
from ..db.models import Asset, Build, Event, Task, TaskDependency, table_of
from ..queries import (
    BUILD_NOT_FOUND,
    add_task_event,
    asset_counts,
    build_and_task,
    dialect_insert,
    task_in_scope,
    task_states,
)
from ..status import EventType, in_build_status, task_status_in_build
from ..views import asset_out, build_task_response, event_response, task_response

__all__ = ["TASK_EVENT_ROUTES", "record_task_event", "register", "router"]

router = APIRouter(prefix="/api/v1", tags=["tasks"])

_TASK = "/builds/{build_id}/tasks/{task_id}"
_TASK_COLUMNS = (
    "id", "environment_id", "task_id", "task_namespace", "task_name", "task_data", "version",
    "output_uri", "created_at",
)  # fmt: skip


TASK_EVENT_ROUTES: dict[str, EventType] = {
    "start": EventType.TASK_STARTED,
    "complete": EventType.TASK_COMPLETED,
    "fail": EventType.TASK_FAILED,
    "suspend": EventType.TASK_SUSPENDED,
    "resume": EventType.TASK_RESUMED,
    "cancel": EventType.TASK_CANCELLED,
    "waiting-for-lock": EventType.TASK_WAITING_FOR_LOCK,
    "already-complete": EventType.TASK_ALREADY_COMPLETE,
}
"""The last path segment of each task event route, and the event it appends."""

# statements of the hot routes, built once (see queries.py)
_UPSTREAM_PKS = select(Task.id).where(
    Task.environment_id == bindparam("env_id"),
    Task.task_id.in_(bindparam("task_ids", expanding=True)),
)
_TASK_BY_ID = select(Task).where(
    Task.environment_id == bindparam("env_id"), Task.task_id == bindparam("task_id")
)
_TASK_TABLE = table_of(Task)
_ASSET_TABLE = table_of(Asset)
_EDGE_TABLE = table_of(TaskDependency)
_EVENT_TABLE = table_of(Event)
# a registration's event, written only if the build is the caller environment's: the
# build check and the insert in one statement (RETURNING nothing: not the caller's)
_INSERT_REGISTERED = (
    insert(_EVENT_TABLE)
    .from_select(
        ["environment_id", "build_id", "task_pk", "event_type", "created_at", "event_metadata"],
        select(
            table_of(Build).c.environment_id,
            table_of(Build).c.id,
            bindparam("task_pk", type_=_EVENT_TABLE.c.task_pk.type),
            bindparam("event_type", type_=_EVENT_TABLE.c.event_type.type),
            bindparam("created_at", type_=_EVENT_TABLE.c.created_at.type),
            bindparam("event_metadata", type_=_EVENT_TABLE.c.event_metadata.type),
        ).where(
            table_of(Build).c.id == bindparam("build_id"),
            table_of(Build).c.environment_id == bindparam("env_id"),
        ),
    )
    .returning(_EVENT_TABLE.c.task_pk)
)
_static_edges: dict[str, Any] = {}


def _insert_static_edges(session: AsyncSession) -> Any:
    """``INSERT … SELECT`` of the edges from the named upstream tasks registered in the
    environment (one statement; built once per dialect)."""
    dialect = session.get_bind().dialect.name
    statement = _static_edges.get(dialect)
    if statement is None:
        tasks = _TASK_TABLE.c
        statement = _static_edges[dialect] = (
            dialect_insert(session, _EDGE_TABLE)
            .from_select(
                ["upstream_id", "downstream_id", "environment_id", "dynamic", "created_at"],
                select(
                    tasks.id,
                    bindparam("downstream", type_=_EDGE_TABLE.c.downstream_id.type),
                    tasks.environment_id,
                    bindparam("dynamic", type_=_EDGE_TABLE.c.dynamic.type),
                    bindparam("created_at", type_=_EDGE_TABLE.c.created_at.type),
                ).where(
                    tasks.environment_id == bindparam("env_id"),
                    tasks.task_id.in_(bindparam("task_ids", expanding=True)),
                    tasks.id != bindparam("downstream"),
                ),
            )
            .on_conflict_do_nothing(index_elements=["upstream_id", "downstream_id"])
        )
    return statement


# --------------------------------------------------------------------------------------------
# within a build


async def _add_edges(
    session: AsyncSession, scope: SdkScope, downstream: UUID, upstream_ids: list[str], dynamic: bool
) -> list[UUID]:
    """Record ``upstream → downstream`` for the upstream tasks registered in the
    environment (the others are skipped, as in v1); return their primary keys."""
    if not upstream_ids:
        return []
    upstream = list(
        (
            await session.execute(
                _UPSTREAM_PKS, {"env_id": scope.env_id, "task_ids": list(set(upstream_ids))}
            )
        ).scalars()
    )
    upstream = [pk for pk in upstream if pk != downstream]
    if upstream:
        now = utcnow()
        await session.execute(
            dialect_insert(session, table_of(TaskDependency))
            .values(
                [
                    {
                        "upstream_id": pk,
                        "downstream_id": downstream,
                        "environment_id": scope.env_id,
                        "dynamic": dynamic,
                        "created_at": now,
                    }
                    for pk in upstream
                ]
            )
            .on_conflict_do_nothing(index_elements=["upstream_id", "downstream_id"])
        )
    return upstream


@router.post("/builds/{build_id}/tasks", status_code=201)
async def register_task(
    build_id: UUID, body: TaskCreate, scope: SdkScopeDep, session: SessionDep
) -> TaskResponse:
    """Register a task in a build: created if new (``task_pending``), else reused as it is
    (``task_referenced``); edges to already registered dependencies are recorded."""
    return await register(session, scope, build_id, body)


async def register(
    session: AsyncSession, scope: SdkScope, build_id: UUID, body: TaskCreate
) -> TaskResponse:
    """What ``POST /builds/{build_id}/tasks`` does (also run by the hot-route fast path):
    the task, its edges, then its event together with the build check (404 ``"Build not
    found"``, and nothing is committed, when the build is not the caller's)."""
    candidate = Task(
        id=new_id(),
        environment_id=scope.env_id,
        task_id=body.task_id,
        task_namespace=body.task_namespace or "",
        task_name=body.task_name,
        task_data=body.task_data,
        version=body.version,
        output_uri=body.output_uri,
        created_at=utcnow(),
    )
    # insert first (one statement for a new task); an existing row is kept as it is
    inserted = (
        await session.execute(
            dialect_insert(session, _TASK_TABLE)
            .on_conflict_do_nothing(index_elements=["environment_id", "task_id"])
            .returning(_TASK_TABLE.c.id),
            {column: getattr(candidate, column) for column in _TASK_COLUMNS},
        )
    ).scalar_one_or_none()
    created = inserted is not None
    if created:
        task = candidate
    else:
        task = (
            await session.execute(_TASK_BY_ID, {"env_id": scope.env_id, "task_id": body.task_id})
        ).scalar_one()
    now = utcnow()
    if body.dependency_task_ids:
        await session.execute(
            _insert_static_edges(session),
            {
                "downstream": task.id,
                "env_id": scope.env_id,
                "task_ids": list(set(body.dependency_task_ids)),
                "dynamic": False,
                "created_at": now,
            },
        )
    event = await session.execute(
        _INSERT_REGISTERED,
        {
            "build_id": build_id,
            "env_id": scope.env_id,
            "task_pk": task.id,
            "event_type": EventType.TASK_PENDING if created else EventType.TASK_REFERENCED,
            "created_at": now,
            "event_metadata": {"code_hash": body.code_hash} if body.code_hash else None,
        },
    )
    if event.scalar_one_or_none() is None:
        raise HTTPException(404, BUILD_NOT_FOUND)
    return task_response(task)


async def record_task_event(
    session: AsyncSession,
    scope: SdkScope,
    build_id: UUID,
    task_id: str,
    event_type: EventType,
    error_message: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> TaskStatusResponse:
    """Append a task event; answer the task's status within the build (what the task
    event routes do; also run by the hot-route fast path)."""
    task_pk = await add_task_event(
        session, scope, build_id, task_id, event_type, utcnow(), error_message, metadata
    )
    status = in_build_status(event_type)
    if status is None:
        events = (
            await session.execute(
                select(Event)
                .where(Event.build_id == build_id, Event.task_pk == task_pk)
                .order_by(Event.created_at, Event.id)
            )
        ).scalars()
        status = task_status_in_build(events)
    return TaskStatusResponse(task_id=task_id, status=status)


@router.post(_TASK + "/start")
@autocommit  # one INSERT (add_task_event)
async def start_task(
    build_id: UUID, task_id: str, scope: SdkScopeDep, session: SessionDep
) -> TaskStatusResponse:
    """The task started running (``task_started``)."""
    return await record_task_event(session, scope, build_id, task_id, EventType.TASK_STARTED)


@router.post(_TASK + "/complete")
@autocommit  # one INSERT (add_task_event)
async def complete_task(
    build_id: UUID, task_id: str, scope: SdkScopeDep, session: SessionDep
) -> TaskStatusResponse:
    """The task completed (``task_completed``)."""
    return await record_task_event(session, scope, build_id, task_id, EventType.TASK_COMPLETED)


@router.post(_TASK + "/fail")
@autocommit  # one INSERT (add_task_event)
async def fail_task(
    build_id: UUID,
    task_id: str,
    scope: SdkScopeDep,
    session: SessionDep,
    error_message: str | None = None,
) -> TaskStatusResponse:
    """The task failed (``task_failed`` with the error)."""
    return await record_task_event(
        session, scope, build_id, task_id, EventType.TASK_FAILED, error_message
    )


@router.post(_TASK + "/suspend")
@autocommit  # one INSERT (add_task_event)
async def suspend_task(
    build_id: UUID, task_id: str, scope: SdkScopeDep, session: SessionDep
) -> TaskStatusResponse:
    """The task waits for dynamic dependencies (``task_suspended``)."""
    return await record_task_event(session, scope, build_id, task_id, EventType.TASK_SUSPENDED)


@router.post(_TASK + "/resume")
@autocommit  # one INSERT (add_task_event)
async def resume_task(
    build_id: UUID, task_id: str, scope: SdkScopeDep, session: SessionDep
) -> TaskStatusResponse:
    """The task runs again after its dynamic dependencies (``task_resumed``)."""
    return await record_task_event(session, scope, build_id, task_id, EventType.TASK_RESUMED)


@router.post(_TASK + "/cancel")
@autocommit  # one INSERT (add_task_event)
async def cancel_task(
    build_id: UUID, task_id: str, scope: SdkScopeDep, session: SessionDep
) -> TaskStatusResponse:
    """The task was cancelled (``task_cancelled``)."""
    return await record_task_event(session, scope, build_id, task_id, EventType.TASK_CANCELLED)


@router.post(_TASK + "/waiting-for-lock")
# a transaction, not autocommit: the status is read after the INSERT, and a failed
# read must not leave the event behind (a retried request would record it twice)
async def task_waiting_for_lock(
    build_id: UUID,
    task_id: str,
    scope: SdkScopeDep,
    session: SessionDep,
    lock_owner: str | None = None,
) -> TaskStatusResponse:
    """The task waits for its global lock (``task_waiting_for_lock``; status unchanged)."""
    metadata = {"lock_owner": lock_owner} if lock_owner is not None else None
    return await record_task_event(
        session, scope, build_id, task_id, EventType.TASK_WAITING_FOR_LOCK, metadata=metadata
    )


@router.post(_TASK + "/already-complete")
@autocommit  # one INSERT (add_task_event)
async def task_already_complete(
    build_id: UUID, task_id: str, scope: SdkScopeDep, session: SessionDep
) -> TaskStatusResponse:
    """The task's output existed before the build (``task_already_complete``, which
    counts as completed)."""
    return await record_task_event(
        session, scope, build_id, task_id, EventType.TASK_ALREADY_COMPLETE
    )


@router.post(_TASK + "/assets", status_code=201)
async def upload_assets(
    build_id: UUID, task_id: str, body: list[AssetIn], scope: SdkScopeDep, session: SessionDep
) -> AssetList:
    """Upsert the task's assets by (type, name); the body of an existing one is replaced."""
    _, task_pk = await build_and_task(session, scope, build_id, task_id)
    latest: dict[tuple[str, str], AssetIn] = {}
    for asset in body:
        latest.pop((asset.type, asset.name), None)  # keep the last, at its position
        latest[(asset.type, asset.name)] = asset
    if not latest:
        return AssetList(assets=[])
    now = utcnow()
    insert = dialect_insert(session, _ASSET_TABLE)
    statement = (
        insert.values(
            [
                {
                    "id": new_id(),
                    "environment_id": scope.env_id,
                    "task_pk": task_pk,
                    "build_id": build_id,
                    "asset_type": asset.type,
                    "name": asset.name,
                    "body": asset.body,
                    "created_at": now,
                    "updated_at": now,
                }
                for asset in latest.values()
            ]
        )
        .on_conflict_do_update(
            index_elements=["task_pk", "asset_type", "name"],
            set_={
                "body": insert.excluded.body,
                "build_id": insert.excluded.build_id,
                "updated_at": insert.excluded.updated_at,
            },
        )
        .returning(*_ASSET_TABLE.c)
    )
    rows = {(a.asset_type, a.name): a for a in (await session.execute(statement)).all()}
    return AssetList(assets=[asset_out(rows[key], task_id) for key in latest if key in rows])


@router.post(_TASK + "/dependencies", status_code=201)
async def add_dependencies(
    build_id: UUID, task_id: str, body: DependenciesAdd, scope: SdkScopeDep, session: SessionDep
) -> list[GraphEdge]:
    """Record edges ``upstream → task`` (``dynamic`` for those yielded by ``run()``);
    answer them as stored (an edge recorded before keeps its kind; upstream tasks not
    registered yet are skipped)."""
    _, task_pk = await build_and_task(session, scope, build_id, task_id)
    upstream = await _add_edges(
        session, scope, task_pk, body.dependency_task_ids, dynamic=body.dynamic
    )
    if not upstream:
        return []
    edges = await session.execute(
        select(TaskDependency).where(
            TaskDependency.downstream_id == task_pk, TaskDependency.upstream_id.in_(upstream)
        )
    )
    return [
        GraphEdge(source=e.upstream_id, target=e.downstream_id, dynamic=e.dynamic)
        for e in edges.scalars()
    ]


# --------------------------------------------------------------------------------------------
# the environment's tasks


@router.get("/tasks")
async def list_tasks(
    scope: SdkScopeDep,
    session: SessionDep,
    task_name: str | None = None,
    task_namespace: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> TaskList:
    """The environment's tasks, newest first, with their global status."""
    conditions = [Task.environment_id == scope.env_id]
    if task_name is not None:
        conditions.append(Task.task_name == task_name)
    if task_namespace is not None:
        conditions.append(Task.task_namespace == task_namespace)
    total = (
        await session.execute(select(func.count()).select_from(Task).where(*conditions))
    ).scalar_one()
    tasks = list(
        (
            await session.execute(
                select(Task)
                .where(*conditions)
                .order_by(Task.created_at.desc(), Task.id.desc())
                .offset((page - 1) * page_size)
                .limit(page_size)
            )
        ).scalars()
    )
    pks = [t.id for t in tasks]
    states = await task_states(session, pks)
    counts = await asset_counts(session, pks)
    return TaskList(
        tasks=[build_task_response(t, states[t.id], counts.get(t.id, 0)) for t in tasks],
        total=total,
        page=page,
        page_size=page_size,
    )


@router.get("/tasks/{task_id}")
async def get_task(task_id: str, scope: SdkScopeDep, session: SessionDep) -> BuildTaskResponse:
    """One task of the environment, with its global status."""
    task = await task_in_scope(session, scope, task_id)
    state = (await task_states(session, [task.id]))[task.id]
    count = (await asset_counts(session, [task.id])).get(task.id, 0)
    return build_task_response(task, state, count)


@router.get("/tasks/{task_id}/assets")
async def get_task_assets(task_id: str, scope: SdkScopeDep, session: SessionDep) -> AssetList:
    """The task's assets, oldest first."""
    task = await task_in_scope(session, scope, task_id)
    assets = (
        await session.execute(
            select(Asset).where(Asset.task_pk == task.id).order_by(Asset.created_at, Asset.id)
        )
    ).scalars()
    return AssetList(assets=[asset_out(a, task.task_id) for a in assets])


@router.get("/tasks/{task_id}/events")
async def get_task_events(
    task_id: str, scope: SdkScopeDep, session: SessionDep
) -> list[EventResponse]:
    """The task's events in every build, newest first."""
    task = await task_in_scope(session, scope, task_id)
    events = (
        await session.execute(
            select(Event)
            .where(Event.task_pk == task.id)
            .order_by(Event.created_at.desc(), Event.id.desc())
        )
    ).scalars()
    return [event_response(e, task.task_id) for e in events]


@router.get("/tasks/{task_id}/metadata")
async def get_task_metadata(
    task_id: str, scope: SdkScopeDep, session: SessionDep
) -> TaskMetadataResponse:
    """What the registry knows of a task, with its global status (``from_registry``)."""
    task = await task_in_scope(session, scope, task_id)
    state = (await task_states(session, [task.id]))[task.id]
    return TaskMetadataResponse(
        id=task.task_id,
        body=task.task_data,
        name=task.task_name,
        namespace=task.task_namespace,
        version=task.version or "",
        output_uri=task.output_uri,
        status=state.status,
        registered_at=task.created_at,
        started_at=state.started_at,
        completed_at=state.completed_at,
        error_message=state.error_message,
        code_hash=state.code_hash,
    )
