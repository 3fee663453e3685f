"""Lookups shared by the routers; each loads a batch in one query (no N+1)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from fastapi import HTTPException
from sqlalchemy import and_, bindparam, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ..registry.wire import EnvironmentInfo
from .auth import SdkScope, parse_uuid
from .db.models import Asset, Build, Environment, Event, TargetRoot, Task, Workspace, table_of
from .names import slugify
from .status import BuildState, TaskState, build_state, global_task_state
from .views import environment_info

__all__ = [
    "BUILD_NOT_FOUND",
    "TASK_NOT_FOUND",
    "add_event",
    "add_task_event",
    "asset_counts",
    "build_and_task",
    "build_in_scope",
    "build_states",
    "check_build_in_scope",
    "chunks",
    "dialect_insert",
    "environment_info_for",
    "get_live_environment",
    "task_in_scope",
    "task_states",
]

BUILD_NOT_FOUND = "Build not found"
CHUNK = 5000  # ids per IN (...) list: well below SQLite's and asyncpg's parameter limits
TASK_NOT_FOUND = "Task not found"


def dialect_insert(session: AsyncSession | AsyncConnection, table: Any) -> Any:
    """``INSERT`` with ``on_conflict_do_*`` for the dialect (SQLite or PostgreSQL) of a
    session or connection."""
    bind = session if isinstance(session, AsyncConnection) else session.get_bind()
    name = bind.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {name!r}")


def chunks(ids: Sequence[UUID]) -> list[Sequence[UUID]]:
    """``ids`` in slices of at most :data:`CHUNK`."""
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


# --------------------------------------------------------------------------------------------
# builds and tasks


def _check_build_env(build_env: UUID | None, scope: SdkScope) -> None:
    """404 for a missing build and for another environment's (the same answer)."""
    if build_env is None or build_env != scope.env_id:
        raise HTTPException(404, BUILD_NOT_FOUND)


async def build_in_scope(session: AsyncSession, scope: SdkScope, build_id: UUID) -> Build:
    """The build, which must be in the caller's environment (404 otherwise)."""
    build = await session.get(Build, build_id)
    _check_build_env(build.environment_id if build else None, scope)
    assert build is not None
    return build


# Statements of the hot SDK routes are built once (values as bound parameters): building
# one costs more than running it, and a reused statement keeps its cache key.
_BUILD_ENV = select(Build.environment_id).where(Build.id == bindparam("build_id"))
_BUILD_AND_TASK = (
    select(Build.environment_id, Task.id)
    .select_from(Build)
    .outerjoin(
        Task,
        and_(Task.environment_id == bindparam("env_id"), Task.task_id == bindparam("task_id")),
    )
    .where(Build.id == bindparam("build_id"))
)
_INSERT_EVENT = insert(table_of(Event))  # Core: no unit of work for an append-only row


async def check_build_in_scope(
    session: AsyncSession | AsyncConnection, scope: SdkScope, build_id: UUID
) -> None:
    """:func:`build_in_scope` without loading the build (404)."""
    build_env = (await session.execute(_BUILD_ENV, {"build_id": build_id})).scalar_one_or_none()
    _check_build_env(build_env, scope)


async def build_and_task(
    session: AsyncSession, scope: SdkScope, build_id: UUID, task_id: str
) -> tuple[UUID, UUID]:
    """(build id, task primary key) in one query: the build must be in the caller's
    environment (404) and the task registered there (404 ``"Task not found"``)."""
    row = (
        await session.execute(
            _BUILD_AND_TASK, {"env_id": scope.env_id, "task_id": task_id, "build_id": build_id}
        )
    ).first()
    _check_build_env(row[0] if row else None, scope)
    assert row is not None
    if row[1] is None:
        raise HTTPException(404, TASK_NOT_FOUND)
    return build_id, row[1]


async def add_event(
    session: AsyncSession,
    *,
    environment_id: UUID,
    build_id: UUID,
    event_type: str,
    created_at: Any,
    task_pk: UUID | None = None,
    error_message: str | None = None,
    event_metadata: dict[str, Any] | None = None,
) -> None:
    """Append an event to the build log now (an ``INSERT``; its id is a new UUIDv7)."""
    await session.execute(
        _INSERT_EVENT,
        {
            "environment_id": environment_id,
            "build_id": build_id,
            "task_pk": task_pk,
            "event_type": event_type,
            "created_at": created_at,
            "error_message": error_message,
            "event_metadata": event_metadata,
        },
    )


_EVENTS = table_of(Event)
_BUILDS = table_of(Build)
_TASKS = table_of(Task)
# A task event in one statement: the build must be the caller environment's and the task
# registered there, else nothing is inserted (and build_and_task tells which is missing).
_INSERT_TASK_EVENT = (
    insert(_EVENTS)
    .from_select(
        ["environment_id", "build_id", "task_pk", "event_type", "created_at", "error_message",
         "event_metadata"],
        select(
            _BUILDS.c.environment_id,
            _BUILDS.c.id,
            _TASKS.c.id,
            bindparam("event_type", type_=_EVENTS.c.event_type.type),
            bindparam("created_at", type_=_EVENTS.c.created_at.type),
            bindparam("error_message", type_=_EVENTS.c.error_message.type),
            bindparam("event_metadata", type_=_EVENTS.c.event_metadata.type),
        )
        .select_from(_BUILDS)
        .join(
            _TASKS,
            and_(
                _TASKS.c.environment_id == _BUILDS.c.environment_id,
                _TASKS.c.task_id == bindparam("task_id"),
            ),
        )
        .where(
            _BUILDS.c.id == bindparam("build_id"),
            _BUILDS.c.environment_id == bindparam("env_id"),
        ),
    )
    .returning(_EVENTS.c.task_pk)
)  # fmt: skip


async def add_task_event(
    session: AsyncSession,
    scope: SdkScope,
    build_id: UUID,
    task_id: str,
    event_type: str,
    created_at: Any,
    error_message: str | None = None,
    event_metadata: dict[str, Any] | None = None,
) -> UUID:
    """Append a task's event to a build (one statement); answer the task's primary key.
    404 as :func:`build_and_task` when the build is not the caller's or the task is not
    registered in its environment."""
    values = {
        "env_id": scope.env_id,
        "build_id": build_id,
        "task_id": task_id,
        "event_type": event_type,
        "created_at": created_at,
        "error_message": error_message,
        "event_metadata": event_metadata,
    }
    task_pk = (await session.execute(_INSERT_TASK_EVENT, values)).scalar_one_or_none()
    if task_pk is not None:
        return task_pk  # type: ignore[no-any-return]
    _, task_pk = await build_and_task(session, scope, build_id, task_id)  # raises the 404
    await add_event(
        session,
        environment_id=scope.env_id,
        build_id=build_id,
        task_pk=task_pk,
        event_type=event_type,
        created_at=created_at,
        error_message=error_message,
        event_metadata=event_metadata,
    )
    return task_pk


async def task_in_scope(session: AsyncSession, scope: SdkScope, task_id: str) -> Task:
    """The task of the caller's environment with this stardag task id (404 otherwise)."""
    task = (
        await session.execute(
            select(Task).where(Task.environment_id == scope.env_id, Task.task_id == task_id)
        )
    ).scalar_one_or_none()
    if task is None:
        raise HTTPException(404, TASK_NOT_FOUND)
    return task


async def build_states(session: AsyncSession, build_ids: Sequence[UUID]) -> dict[UUID, BuildState]:
    """The derived status of each build (one query over their build-level events)."""
    if not build_ids:
        return {}
    by_build: dict[UUID, list[Event]] = defaultdict(list)
    for part in chunks(build_ids):
        events = (
            await session.execute(
                select(Event)
                .where(Event.build_id.in_(part), Event.task_pk.is_(None))
                .order_by(Event.created_at, Event.id)
            )
        ).scalars()
        for event in events:
            by_build[event.build_id].append(event)
    return {build_id: build_state(by_build.get(build_id, ())) for build_id in build_ids}


async def task_states(session: AsyncSession, task_pks: Sequence[UUID]) -> dict[UUID, TaskState]:
    """The global status of each task (one query over their events in all builds)."""
    if not task_pks:
        return {}
    by_task: dict[UUID, list[Event]] = defaultdict(list)
    for part in chunks(task_pks):
        events = (
            await session.execute(
                select(Event).where(Event.task_pk.in_(part)).order_by(Event.created_at, Event.id)
            )
        ).scalars()
        for event in events:
            assert event.task_pk is not None
            by_task[event.task_pk].append(event)
    return {pk: global_task_state(by_task.get(pk, ())) for pk in task_pks}


async def asset_counts(session: AsyncSession, task_pks: Sequence[UUID]) -> dict[UUID, int]:
    """How many assets each task has (one grouped query)."""
    if not task_pks:
        return {}
    counts: dict[UUID, int] = {}
    for part in chunks(task_pks):
        rows = await session.execute(
            select(Asset.task_pk, func.count())
            .where(Asset.task_pk.in_(part))
            .group_by(Asset.task_pk)
        )
        counts.update((pk, int(count)) for pk, count in rows.tuples())
    return counts


# --------------------------------------------------------------------------------------------
# environments


async def get_live_environment(
    session: AsyncSession, workspace: Workspace, ref: str
) -> Environment:
    """The live environment ``ref`` (slug, name or id) of ``workspace`` (404 otherwise)."""
    ref_id = parse_uuid(ref)
    if ref_id is not None:
        condition = Environment.id == ref_id
    else:
        try:
            condition = Environment.slug == slugify(ref)
        except ValueError:
            condition = None
    env = None
    if condition is not None:
        env = (
            await session.execute(
                select(Environment).where(
                    condition,
                    Environment.workspace_id == workspace.id,
                    Environment.deleted_at.is_(None),
                )
            )
        ).scalar_one_or_none()
    if env is None:
        raise HTTPException(
            404,
            f"Environment '{ref}' not found in workspace '{workspace.slug}'. "
            "List them: stardag-nb config list environments",
        )
    return env


async def environment_info_for(
    session: AsyncSession, env: Environment, workspace_slug: str
) -> EnvironmentInfo:
    """``EnvironmentInfo`` of ``env`` with its target roots (one query)."""
    roots = (
        await session.execute(select(TargetRoot).where(TargetRoot.environment_id == env.id))
    ).scalars()
    return environment_info(env, workspace_slug, roots)
