"""UI routes of environments: list, create, get, delete; the lifecycle (provision, sync,
events, the client's provisioning report) and the target roots (every change is
followed by a sync).

Target roots are data, not paths of the service's file system: roots are checked
(:func:`~stardag_nb.service.roots.check_roots`: no system directories, no overlap with
another environment) before they are stored. Object-store roots are provisioned in the
background (:class:`~stardag_nb.service.lifecycle.Lifecycle`): routes that start it
commit first, then hand over the roots, and answer the environment as it is then
(``provisioning``). Local roots are provisioned by the client where it runs, which
posts the outcome to ``provisioning-report``. A purge deletes exactly the outputs the
environment's tasks recorded: the service those under its object-store roots, the
client those under local roots (it sends what it did with the ``DELETE``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Request
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...registry.wire import (
    EnvironmentCreate,
    EnvironmentDeleted,
    EnvironmentEvent,
    EnvironmentEventType,
    EnvironmentInfo,
    EnvironmentOutputs,
    EnvironmentPurge,
    EnvironmentState,
    ProvisioningReport,
    RootReport,
    TargetRootIn,
    TargetRootOut,
    TargetRootsReplace,
)
from ..accounts import check_target_roots, create_environment
from ..auth import AdminAccess, MemberAccess, SessionDep, WorkspaceAccess, get_db
from ..db.ids import utcnow
from ..db.models import Environment, EnvironmentEventRow, TargetRoot, Task
from ..lifecycle import (
    Lifecycle,
    awaits_client_only,
    begin_provisioning,
    finish_if_complete,
    purge_outputs_here,
    record_event,
    record_root_outcome,
    roots_of,
    tombstone,
)
from ..names import slugify
from ..queries import environment_info_for, get_live_environment
from ..roots import check_roots, handled_by_service, outputs_by_root
from ..views import environment_event, environment_info, target_root_out

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/ui/workspaces/{ws}/environments", tags=["ui"])

_Ev = EnvironmentEventType
_St = EnvironmentState


def _lifecycle(request: Request) -> Lifecycle:
    lifecycle: Lifecycle = request.app.state.lifecycle
    return lifecycle


def _slug_or_name(name: str) -> str:
    """The slug a new environment called ``name`` gets (``name`` when it makes none: its
    creation refuses it then)."""
    try:
        return slugify(name)
    except ValueError:
        return name


def _label(access: WorkspaceAccess, env: Environment) -> str:
    return f"{access.workspace.slug}/{env.slug}"


async def _not_while_provisioning(
    session: AsyncSession, access: WorkspaceAccess, env: Environment
) -> None:
    """409 while the service provisions a root of ``env`` (waiting only for a client's
    report does not block: a new run may start)."""
    if env.state == _St.PROVISIONING and not await awaits_client_only(session, env):
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
    """Record ``trigger`` (None: already recorded), commit, provision the service's roots
    in the background (an environment without roots is running at once)."""
    if trigger is not None:
        begin_provisioning(session, env, trigger, message, metadata)
    roots = await roots_of(session, env.id)
    if not any(handled_by_service(root.uri) for root in roots):
        await finish_if_complete(session, env)
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
    await check_roots(
        session,
        access.workspace,
        None,
        _slug_or_name(body.name),
        body.target_roots,
        access.user.id,
    )
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


async def _recorded_outputs(session: AsyncSession, env_id: Any) -> list[str]:
    rows = await session.execute(
        select(Task.output_uri)
        .where(Task.environment_id == env_id, Task.output_uri.is_not(None))
        .order_by(Task.output_uri)
    )
    return [uri for uri in rows.scalars() if uri]


@router.get("/{env}/outputs")
async def list_outputs(env: str, access: AdminAccess, session: SessionDep) -> EnvironmentOutputs:
    """The target roots and the output URIs the environment's tasks recorded (what a
    purge deletes; the client deletes those under roots it provisions)."""
    row = await get_live_environment(session, access.workspace, env)
    info = await environment_info_for(session, row, access.workspace.slug)
    return EnvironmentOutputs(
        target_roots=info.target_roots, output_uris=await _recorded_outputs(session, row.id)
    )


@router.delete("/{env}")
async def delete_environment(
    env: str,
    access: AdminAccess,
    session: SessionDep,
    request: Request,
    purge_data: bool = False,
    body: EnvironmentPurge | None = Body(default=None),
) -> EnvironmentDeleted:
    """Delete an environment: builds, tasks, events, assets and locks go, API keys are
    revoked. With ``purge_data`` the outputs its tasks recorded are deleted first, exactly
    those (never a root or prefix): the service deletes those under its object-store
    roots; those under local roots must have been deleted by the client where the builds
    wrote them, which says so in ``client_checks`` (else 409)."""
    row = await get_live_environment(session, access.workspace, env)
    purged: list[RootReport] = []
    if purge_data:
        roots = await roots_of(session, row.id)
        outputs = await _recorded_outputs(session, row.id)
        by_root = outputs_by_root(roots, outputs)
        reported = {c.name: c for c in (body.client_checks if body else [])}
        client_roots = [r for r in roots if not handled_by_service(r.uri)]
        unreported = [
            r for r in client_roots
            if by_root[r.name] and (r.name not in reported or reported[r.name].uri != r.uri)
        ]  # fmt: skip
        if unreported:
            shown = ", ".join(f"{r.name}={r.uri}" for r in unreported)
            raise HTTPException(
                409,
                f"Environment '{_label(access, row)}' was not deleted: the outputs recorded "
                f"under its local target roots ({shown}) are deleted where the builds wrote "
                "them, not by the service. Run there: stardag-nb environment delete "
                f"{row.slug} --purge-data (or delete without purge_data to keep them)",
            )
        service_roots = [r for r in roots if handled_by_service(r.uri)]
        doomed = [uri for r in service_roots for uri in by_root[r.name]] + by_root["-"]
        if doomed:
            db = get_db(request)
            await db.pause_writes(session)  # the purge may take long: let other writers in
            outcomes = await purge_outputs_here(service_roots, doomed, _lifecycle(request).timeout)
            await db.resume_writes(session)
            for outcome in outcomes:
                purged.append(
                    RootReport(name=outcome.name, uri=outcome.uri, ok=outcome.ok,
                               message=outcome.message[:4000])
                )  # fmt: skip
        purged += [c for c in reported.values() if any(r.name == c.name for r in client_roots)]
        failed = [p.message for p in purged if not p.ok]
        if failed:
            raise HTTPException(
                409,
                f"Environment '{_label(access, row)}' was not deleted: purging its data failed: "
                f"{'; '.join(failed)}. Fix it, or delete without purge_data",
            )
        row = await get_live_environment(session, access.workspace, env)
        for report in purged:
            by = "service" if report.name == "-" or handled_by_service(report.uri) else "client"
            record_event(
                session, row, _Ev.DATA_PURGED, EnvironmentState(row.state), report.message,
                {"name": report.name, "uri": report.uri, "by": by},
            )  # fmt: skip
    await tombstone(session, row)
    info = await environment_info_for(session, row, access.workspace.slug)
    return EnvironmentDeleted(**info.model_dump(), purged=purged)


@router.post("/{env}/provision", status_code=202)
async def provision(
    env: str, access: AdminAccess, session: SessionDep, request: Request
) -> EnvironmentInfo:
    """Provision again a failed (or never provisioned) environment."""
    row = await get_live_environment(session, access.workspace, env)
    await _not_while_provisioning(session, access, row)
    if row.state not in (_St.FAILED, _St.CREATED, _St.PROVISIONING):
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
    await _not_while_provisioning(session, access, row)
    return await _start(request, session, access, row, _Ev.SYNC_STARTED)


@router.post("/{env}/provisioning-report")
async def provisioning_report(
    env: str, body: ProvisioningReport, access: AdminAccess, session: SessionDep
) -> EnvironmentInfo:
    """The client's outcome for the roots it provisions where it runs (local paths): each
    becomes ``target_root_ready`` / ``target_root_failed``; once every root has one, the
    environment is running or failed."""
    row = await get_live_environment(session, access.workspace, env)
    if row.state != _St.PROVISIONING:
        raise HTTPException(
            409,
            f"Environment '{_label(access, row)}' is {row.state}, not provisioning: nothing "
            f"waits for a report. To check its target roots again: stardag-nb environment "
            f"sync {row.slug}",
        )
    roots = {r.name: r for r in await roots_of(session, row.id)}
    for check in body.checks:
        root = roots.get(check.name)
        if root is None or root.uri != check.uri:
            raise HTTPException(
                409,
                f"Target root {check.name!r} ({check.uri}) is not a root of environment "
                f"'{_label(access, row)}' (any more); its roots: "
                f"{', '.join(f'{r.name}={r.uri}' for r in roots.values()) or 'none'}. Run: "
                f"stardag-nb environment sync {row.slug}",
            )
        if handled_by_service(root.uri):
            raise HTTPException(
                422, f"Target root {check.name!r} ({check.uri}) is provisioned by the service"
            )
    for check in body.checks:
        record_root_outcome(
            session, row, check.name, check.uri, check.ok, check.message[:4000], "client"
        )
    await finish_if_complete(session, row)
    return await environment_info_for(session, row, access.workspace.slug)


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
        storage_options=root.storage_options or None,
    )


@router.put("/{env}/target-roots")
async def replace_target_roots(
    env: str, body: TargetRootsReplace, access: AdminAccess, session: SessionDep, request: Request
) -> EnvironmentInfo:
    """Replace all target roots, then sync."""
    row = await get_live_environment(session, access.workspace, env)
    await _not_while_provisioning(session, access, row)
    check_target_roots(body.target_roots)
    await check_roots(
        session, access.workspace, row.id, row.slug, body.target_roots, access.user.id
    )
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
    await _not_while_provisioning(session, access, row)
    check_target_roots([body])
    await check_roots(session, access.workspace, row.id, row.slug, [body], access.user.id)
    existing = await session.get(TargetRoot, (row.id, body.name))
    if existing is None:
        session.add(_root_row(row, body))
        verb = "added"
    else:
        existing.uri_prefix, existing.create_missing = body.uri, body.create
        existing.storage_options = body.storage_options or None
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
    await _not_while_provisioning(session, access, row)
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
