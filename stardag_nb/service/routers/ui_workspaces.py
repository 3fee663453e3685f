"""UI routes of workspaces: list, create, get, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import delete, select

from ...registry.wire import Role, WorkspaceCreate, WorkspaceInfo
from ..accounts import create_workspace, ensure_personal_environment
from ..auth import CurrentUser, MemberAccess, OwnerAccess, SessionDep
from ..db.ids import utcnow
from ..db.models import Environment, WorkspaceMember
from ..lifecycle import tombstone
from ..views import workspace_info
from .ui_me import user_workspaces

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/ui/workspaces", tags=["ui"])


@router.get("")
async def list_workspaces(user: CurrentUser, session: SessionDep) -> list[WorkspaceInfo]:
    """The caller's workspaces (only theirs), with their role."""
    return await user_workspaces(session, user)


@router.post("", status_code=201)
async def create(body: WorkspaceCreate, user: CurrentUser, session: SessionDep) -> WorkspaceInfo:
    """Create a workspace: the caller is its owner and gets ``personal-{username}``."""
    workspace = await create_workspace(session, body.name, body.slug, body.description, user)
    await ensure_personal_environment(session, workspace, user)
    return workspace_info(workspace, Role.OWNER)


@router.get("/{ws}")
async def get_workspace(access: MemberAccess) -> WorkspaceInfo:
    """One workspace of the caller."""
    return workspace_info(access.workspace, access.role)


@router.delete("/{ws}", status_code=204)
async def delete_workspace(access: OwnerAccess, session: SessionDep) -> Response:
    """Delete a workspace (owner): every environment is deleted (tombstoned, its data and
    API keys gone), the members removed."""
    envs = (
        await session.execute(
            select(Environment).where(
                Environment.workspace_id == access.workspace.id, Environment.deleted_at.is_(None)
            )
        )
    ).scalars()
    for env in list(envs):
        await tombstone(session, env)
    await session.execute(
        delete(WorkspaceMember).where(WorkspaceMember.workspace_id == access.workspace.id)
    )
    access.workspace.deleted_at = utcnow()
    return Response(status_code=204)
