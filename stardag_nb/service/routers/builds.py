"""SDK routes of builds: start, finish, list, and a build's tasks, events and graph."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import and_, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...registry.wire import (
    BuildCreate,
    BuildList,
    BuildResponse,
    BuildTaskResponse,
    EnvironmentState,
    EventResponse,
    GraphEdge,
    GraphNode,
    GraphResponse,
)
from ..auth import SdkScope, SdkScopeDep, SessionDep
from ..db.ids import new_id, utcnow
from ..db.models import Build, Event, Task, TaskDependency, User, WorkspaceMember, table_of
from ..names import build_name
from ..queries import add_event, asset_counts, build_in_scope, build_states, chunks, task_states
from ..status import BuildState, EventType
from ..views import build_response, build_task_response, event_response

__all__ = ["new_build", "router", "started_build_response"]

router = APIRouter(prefix="/api/v1/builds", tags=["builds"])

_INSERT_BUILD = insert(table_of(Build))
_BUILD_COLUMNS = tuple(table_of(Build).columns)


def _not_running_message(scope: SdkScope) -> str:
    env = scope.environment
    text = f"Environment '{scope.label}' is {env.state}"
    if env.state_reason:
        text += f": {env.state_reason}"
    if env.state == EnvironmentState.PROVISIONING:
        return f"{text}. Wait until it is running: stardag-nb environment events {env.slug}"
    return f"{text}. Run: stardag-nb environment provision {env.slug}"


@router.post("", status_code=201)
async def create_build(body: BuildCreate, scope: SdkScopeDep, session: SessionDep) -> BuildResponse:
    """Start a build (event ``build_started``); the environment must be running."""
    build = new_build(body, scope)
    # Core inserts: the ORM's unit of work costs more than the two statements
    await session.execute(
        _INSERT_BUILD,
        {column.name: getattr(build, column.key) for column in _BUILD_COLUMNS},
    )
    await add_event(
        session,
        environment_id=scope.env_id,
        build_id=build.id,
        event_type=EventType.BUILD_STARTED,
        created_at=build.created_at,
    )
    return started_build_response(build)


def new_build(body: BuildCreate, scope: SdkScope) -> Build:
    """The row of a build ``body`` starts (not yet written); 409 unless the environment
    is running."""
    if scope.environment.state != EnvironmentState.RUNNING:
        raise HTTPException(409, _not_running_message(scope))
    return Build(
        id=new_id(),
        environment_id=scope.env_id,
        user_id=scope.user.id if scope.user else None,
        name=build_name(),
        description=body.description,
        commit_hash=body.commit_hash,
        root_task_ids=list(body.root_task_ids),
        created_at=utcnow(),
    )


def started_build_response(build: Build) -> BuildResponse:
    """The answer to starting ``build``."""
    return build_response(build, BuildState("running", started_at=build.created_at))


@router.get("")
async def list_builds(
    scope: SdkScopeDep,
    session: SessionDep,
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BuildList:
    """The environment's builds, newest first."""
    where = Build.environment_id == scope.env_id
    total = (
        await session.execute(select(func.count()).select_from(Build).where(where))
    ).scalar_one()
    builds = list(
        (
            await session.execute(
                select(Build)
                .where(where)
                .order_by(Build.created_at.desc(), Build.id.desc())
                .offset((page - 1) * page_size)
                .limit(page_size)
            )
        ).scalars()
    )
    states = await build_states(session, [b.id for b in builds])
    return BuildList(
        builds=[build_response(b, states[b.id]) for b in builds],
        total=total,
        page=page,
        page_size=page_size,
    )


@router.get("/{build_id}")
async def get_build(build_id: UUID, scope: SdkScopeDep, session: SessionDep) -> BuildResponse:
    """One build of the environment."""
    build = await build_in_scope(session, scope, build_id)
    return build_response(build, (await build_states(session, [build.id]))[build.id])


async def _triggered_by(
    session: AsyncSession, scope: SdkScope, user_id: UUID | None
) -> dict[str, object] | None:
    if user_id is None:
        return None
    row = (
        await session.execute(
            select(User.id, User.username)
            .join(
                WorkspaceMember,
                and_(
                    WorkspaceMember.user_id == User.id,
                    WorkspaceMember.workspace_id == scope.environment.workspace_id,
                ),
            )
            .where(User.id == user_id)
        )
    ).first()
    if row is None:
        raise HTTPException(
            404, f"triggered_by_user_id {user_id} is not a member of this environment's workspace"
        )
    return {"triggered_by_user": {"id": str(row[0]), "username": row[1]}}


async def finish_build(
    session: AsyncSession,
    scope: SdkScope,
    build_id: UUID,
    event_type: EventType,
    error_message: str | None = None,
    triggered_by_user_id: UUID | None = None,
) -> BuildResponse:
    build = await build_in_scope(session, scope, build_id)
    metadata = await _triggered_by(session, scope, triggered_by_user_id)
    await add_event(
        session,
        environment_id=scope.env_id,
        build_id=build.id,
        event_type=event_type,
        created_at=utcnow(),
        error_message=error_message,
        event_metadata=metadata,
    )
    return build_response(build, (await build_states(session, [build.id]))[build.id])


@router.post("/{build_id}/complete")
async def complete_build(
    build_id: UUID,
    scope: SdkScopeDep,
    session: SessionDep,
    triggered_by_user_id: UUID | None = None,
) -> BuildResponse:
    """Mark the build completed (event ``build_completed``)."""
    return await finish_build(
        session, scope, build_id, EventType.BUILD_COMPLETED, None, triggered_by_user_id
    )


@router.post("/{build_id}/fail")
async def fail_build(
    build_id: UUID,
    scope: SdkScopeDep,
    session: SessionDep,
    error_message: str | None = None,
    triggered_by_user_id: UUID | None = None,
) -> BuildResponse:
    """Mark the build failed (event ``build_failed`` with the error)."""
    return await finish_build(
        session, scope, build_id, EventType.BUILD_FAILED, error_message, triggered_by_user_id
    )


@router.post("/{build_id}/cancel")
async def cancel_build(
    build_id: UUID,
    scope: SdkScopeDep,
    session: SessionDep,
    triggered_by_user_id: UUID | None = None,
) -> BuildResponse:
    """Mark the build cancelled (event ``build_cancelled``)."""
    return await finish_build(
        session, scope, build_id, EventType.BUILD_CANCELLED, None, triggered_by_user_id
    )


@router.post("/{build_id}/exit-early")
async def exit_early_build(
    build_id: UUID, scope: SdkScopeDep, session: SessionDep, reason: str | None = None
) -> BuildResponse:
    """Mark the build exited early (event ``build_exit_early``, the reason as its error)."""
    return await finish_build(session, scope, build_id, EventType.BUILD_EXIT_EARLY, reason)


async def _build_task_pks(session: AsyncSession, build_id: UUID) -> list[UUID]:
    """The tasks a build touched, in the order it first did."""
    rows = await session.execute(
        select(Event.task_pk, func.min(Event.created_at).label("first"))
        .where(Event.build_id == build_id, Event.task_pk.is_not(None))
        .group_by(Event.task_pk)
        .order_by("first")
    )
    return [pk for pk, _ in rows.tuples() if pk is not None]


async def _tasks_by_pk(session: AsyncSession, pks: list[UUID]) -> dict[UUID, Task]:
    found: dict[UUID, Task] = {}
    for part in chunks(pks):
        tasks = (await session.execute(select(Task).where(Task.id.in_(part)))).scalars()
        found.update((task.id, task) for task in tasks)
    return found


@router.get("/{build_id}/tasks")
async def list_build_tasks(
    build_id: UUID, scope: SdkScopeDep, session: SessionDep
) -> list[BuildTaskResponse]:
    """The tasks of a build with their global status, in the order the build met them."""
    await build_in_scope(session, scope, build_id)
    pks = await _build_task_pks(session, build_id)
    tasks = await _tasks_by_pk(session, pks)
    states = await task_states(session, pks)
    counts = await asset_counts(session, pks)
    return [build_task_response(tasks[pk], states[pk], counts.get(pk, 0)) for pk in pks]


@router.get("/{build_id}/events")
async def list_build_events(
    build_id: UUID, scope: SdkScopeDep, session: SessionDep
) -> list[EventResponse]:
    """The events of a build, oldest first."""
    await build_in_scope(session, scope, build_id)
    rows = await session.execute(
        select(Event, Task.task_id)
        .outerjoin(Task, Task.id == Event.task_pk)
        .where(Event.build_id == build_id)
        .order_by(Event.created_at, Event.id)
    )
    return [event_response(event, task_id) for event, task_id in rows.tuples()]


@router.get("/{build_id}/graph")
async def build_graph(build_id: UUID, scope: SdkScopeDep, session: SessionDep) -> GraphResponse:
    """The build's tasks (global status) and the edges between them (server ids)."""
    await build_in_scope(session, scope, build_id)
    pks = await _build_task_pks(session, build_id)
    tasks = await _tasks_by_pk(session, pks)
    states = await task_states(session, pks)
    counts = await asset_counts(session, pks)
    edges: list[GraphEdge] = []
    if pks:
        in_build = select(Event.task_pk).where(Event.build_id == build_id)
        rows = await session.execute(
            select(TaskDependency).where(
                TaskDependency.environment_id == scope.env_id,
                TaskDependency.downstream_id.in_(in_build),
                TaskDependency.upstream_id.in_(in_build),
            )
        )
        edges = [
            GraphEdge(source=edge.upstream_id, target=edge.downstream_id, dynamic=edge.dynamic)
            for edge in rows.scalars()
        ]
    nodes = [
        GraphNode(
            id=pk,
            task_id=tasks[pk].task_id,
            task_name=tasks[pk].task_name,
            task_namespace=tasks[pk].task_namespace,
            status=states[pk].status,
            asset_count=counts.get(pk, 0),
        )
        for pk in pks
    ]
    return GraphResponse(nodes=nodes, edges=edges)
