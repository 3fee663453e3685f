"""UI routes of environments: list, create, get, delete; the lifecycle (provision, sync,
events) and the target roots (every change is followed by a sync).

Provisioning runs in the background (:class:`~stardag_nb.service.lifecycle.Lifecycle`):
routes that start it commit first, then hand over the roots, and answer the environment
as it is then (``provisioning``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...registry._wire import (
    EnvironmentCreate,
    EnvironmentEvent,
    EnvironmentEventType,
    EnvironmentInfo,
    EnvironmentState,
    TargetRootIn,
    TargetRootOut,
    TargetRootsReplace,
)
from ..accounts import check_target_roots, create_environment
from ..auth import AdminAccess, MemberAccess, SessionDep, WorkspaceAccess, get_db
from ..db.ids import utcnow
from ..db.models import Environment, EnvironmentEventRow, TargetRoot
from ..lifecycle import (
    Lifecycle,
    begin_provisioning,
    purge_roots,
    record_event,
    roots_of,
    tombstone,
)
from ..queries import environment_info_for, get_live_environment
from ..views import environment_event, environment_info, target_root_out

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/ui/workspaces/{ws}/environments", tags=["ui"])

_Ev = EnvironmentEventType
_St = EnvironmentState


def _lifecycle(request: Request) -> Lifecycle:
    lifecycle: Lifecycle = request.app.state.lifecycle
    return lifecycle


def _label(access: WorkspaceAccess, env: Environment) -> str:
    return f"{access.workspace.slug}/{env.slug}"


def _not_while_provisioning(access: WorkspaceAccess, env: Environment) -> None:
    if env.state == _St.PROVISIONING:
        raise HTTPException(
            409,
            f"Environment '{_label(access, env)}' is provisioning; wait until it has finished: "
            f"stardag-nb environment events {env.slug}",
        )


async def _start(
    request: Request,
    session: AsyncSession,
    access: WorkspaceAccess,
    env: Environment,
    trigger: EnvironmentEventType | None,
    message: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> EnvironmentInfo:
    """Record ``trigger`` (None: already recorded), commit, provision in the background."""
    if trigger is not None:
        begin_provisioning(session, env, trigger, message, metadata)
    roots = await roots_of(session, env.id)
    info = await environment_info_for(session, env, access.workspace.slug)
    await session.commit()
    _lifecycle(request).start(env.id, roots)
    return info


@router.get("")
async def list_environments(access: MemberAccess, session: SessionDep) -> list[EnvironmentInfo]:
    """The workspace's environments (not the deleted ones), by slug."""
    envs = list(
        (
            await session.execute(
                select(Environment)
                .where(
                    Environment.workspace_id == access.workspace.id,
                    Environment.deleted_at.is_(None),
                )
                .order_by(Environment.slug)
            )
        ).scalars()
    )
    roots: dict[Any, list[TargetRoot]] = defaultdict(list)
    if envs:
        rows = await session.execute(
            select(TargetRoot).where(TargetRoot.environment_id.in_([e.id for e in envs]))
        )
        for root in rows.scalars():
            roots[root.environment_id].append(root)
    return [environment_info(env, access.workspace.slug, roots[env.id]) for env in envs]


@router.post("", status_code=201)
async def create(
    body: EnvironmentCreate, access: AdminAccess, session: SessionDep, request: Request
) -> EnvironmentInfo:
    """Create an environment and provision its target roots in the background (the answer
    is ``provisioning``; follow it with ``GET .../events``)."""
    env = await create_environment(
        session,
        access.workspace,
        body.name,
        description=body.description,
        roots=body.target_roots,
        max_concurrent_locks=body.max_concurrent_locks,
    )
    return await _start(request, session, access, env, None)


@router.get("/{env}")
async def get_environment(env: str, access: MemberAccess, session: SessionDep) -> EnvironmentInfo:
    """One environment of the workspace."""
    row = await get_live_environment(session, access.workspace, env)
    return await environment_info_for(session, row, access.workspace.slug)


@router.delete("/{env}")
async def delete_environment(
    env: str, access: AdminAccess, session: SessionDep, request: Request, purge_data: bool = False
) -> EnvironmentInfo:
    """Delete an environment: builds, tasks, events, assets and locks go, API keys are
    revoked; with ``purge_data`` the data under its target roots is removed first."""
    row = await get_live_environment(session, access.workspace, env)
    if purge_data:
        roots = await roots_of(session, row.id)
        db = get_db(request)
        await db.pause_writes(session)  # the purge may take long: let other writers in
        outcomes = await purge_roots(roots, _lifecycle(request).timeout)
        await db.resume_writes(session)
        failed = [o.message for o in outcomes if not o.ok]
        if failed:
            raise HTTPException(
                409,
                f"Environment '{_label(access, row)}' was not deleted: purging its data failed: "
                f"{'; '.join(failed)}. Fix it, or delete without purge_data",
            )
        row = await get_live_environment(session, access.workspace, env)
        for outcome in outcomes:
            record_event(
                session, row, _Ev.DATA_PURGED, EnvironmentState(row.state), outcome.message,
                {"name": outcome.name, "uri": outcome.uri},
            )  # fmt: skip
    await tombstone(session, row)
    return await environment_info_for(session, row, access.workspace.slug)


@router.post("/{env}/provision", status_code=202)
async def provision(
    env: str, access: AdminAccess, session: SessionDep, request: Request
) -> EnvironmentInfo:
    """Provision again a failed (or never provisioned) environment."""
    row = await get_live_environment(session, access.workspace, env)
    _not_while_provisioning(access, row)
    if row.state not in (_St.FAILED, _St.CREATED):
        raise HTTPException(
            409,
            f"Environment '{_label(access, row)}' is {row.state}; only a failed or new "
            f"environment is provisioned. To re-check its target roots: "
            f"stardag-nb environment sync {row.slug}",
        )
    return await _start(request, session, access, row, _Ev.PROVISIONING_STARTED)


@router.post("/{env}/sync", status_code=202)
async def sync(
    env: str, access: AdminAccess, session: SessionDep, request: Request
) -> EnvironmentInfo:
    """Re-apply the environment's configuration: check (and create) its target roots."""
    row = await get_live_environment(session, access.workspace, env)
    _not_while_provisioning(access, row)
    return await _start(request, session, access, row, _Ev.SYNC_STARTED)


@router.get("/{env}/events")
async def list_events(
    env: str, access: MemberAccess, session: SessionDep
) -> list[EnvironmentEvent]:
    """The environment's lifecycle events, oldest first."""
    row = await get_live_environment(session, access.workspace, env)
    events = (
        await session.execute(
            select(EnvironmentEventRow)
            .where(EnvironmentEventRow.environment_id == row.id)
            .order_by(EnvironmentEventRow.created_at, EnvironmentEventRow.id)
        )
    ).scalars()
    return [environment_event(e) for e in events]


# --------------------------------------------------------------------------------------------
# target roots


@router.get("/{env}/target-roots")
async def list_target_roots(
    env: str, access: MemberAccess, session: SessionDep
) -> list[TargetRootOut]:
    """The environment's target roots, by name."""
    row = await get_live_environment(session, access.workspace, env)
    roots = (
        await session.execute(
            select(TargetRoot).where(TargetRoot.environment_id == row.id).order_by(TargetRoot.name)
        )
    ).scalars()
    return [target_root_out(r) for r in roots]


def _root_row(env: Environment, root: TargetRootIn) -> TargetRoot:
    return TargetRoot(
        environment_id=env.id,
        name=root.name,
        uri_prefix=root.uri,
        create_missing=root.create,
        created_at=utcnow(),
    )


@router.put("/{env}/target-roots")
async def replace_target_roots(
    env: str, body: TargetRootsReplace, access: AdminAccess, session: SessionDep, request: Request
) -> EnvironmentInfo:
    """Replace all target roots, then sync."""
    row = await get_live_environment(session, access.workspace, env)
    _not_while_provisioning(access, row)
    check_target_roots(body.target_roots)
    await session.execute(delete(TargetRoot).where(TargetRoot.environment_id == row.id))
    for root in body.target_roots:
        session.add(_root_row(row, root))
    names = ", ".join(r.name for r in body.target_roots) or "none"
    meta = {"target_roots": {r.name: r.uri for r in body.target_roots}}
    await session.flush()
    return await _start(
        request, session, access, row, _Ev.CONFIG_CHANGED, f"target roots set: {names}", meta
    )


@router.post("/{env}/target-roots", status_code=201)
async def add_target_root(
    env: str, body: TargetRootIn, access: AdminAccess, session: SessionDep, request: Request
) -> EnvironmentInfo:
    """Add a target root (or change the one of that name), then sync."""
    row = await get_live_environment(session, access.workspace, env)
    _not_while_provisioning(access, row)
    check_target_roots([body])
    existing = await session.get(TargetRoot, (row.id, body.name))
    if existing is None:
        session.add(_root_row(row, body))
        verb = "added"
    else:
        existing.uri_prefix, existing.create_missing = body.uri, body.create
        verb = "changed"
    await session.flush()
    return await _start(
        request, session, access, row, _Ev.CONFIG_CHANGED,
        f"target root {body.name!r} {verb}: {body.uri}", {"name": body.name, "uri": body.uri},
    )  # fmt: skip


@router.delete("/{env}/target-roots/{name}")
async def remove_target_root(
    env: str, name: str, access: AdminAccess, session: SessionDep, request: Request
) -> EnvironmentInfo:
    """Remove a target root (its data stays), then sync."""
    row = await get_live_environment(session, access.workspace, env)
    _not_while_provisioning(access, row)
    existing = await session.get(TargetRoot, (row.id, name))
    if existing is None:
        raise HTTPException(
            404, f"Environment '{_label(access, row)}' has no target root named '{name}'"
        )
    await session.delete(existing)
    await session.flush()
    return await _start(
        request, session, access, row, _Ev.CONFIG_CHANGED, f"target root {name!r} removed",
        {"name": name},
    )  # fmt: skip
