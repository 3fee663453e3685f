"""UI route ``GET /api/v1/ui/me``: the caller and their workspaces."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ...registry.wire import MeResponse, WorkspaceInfo
from ..auth import CurrentUser, SessionDep
from ..db.models import User, Workspace, WorkspaceMember
from ..views import workspace_info

__all__ = ["router", "user_workspaces"]

router = APIRouter(prefix="/api/v1/ui", tags=["ui"])


async def user_workspaces(session: AsyncSession, user: User) -> list[WorkspaceInfo]:
    """The caller's live workspaces with their role, by slug."""
    rows = await session.execute(
        select(Workspace, WorkspaceMember.role)
        .join(WorkspaceMember, WorkspaceMember.workspace_id == Workspace.id)
        .where(WorkspaceMember.user_id == user.id, Workspace.deleted_at.is_(None))
        .order_by(Workspace.slug)
    )
    return [workspace_info(ws, role) for ws, role in rows.tuples()]


@router.get("/me")
async def me(user: CurrentUser, session: SessionDep) -> MeResponse:
    """Who the token belongs to, and their workspaces (with their role)."""
    return MeResponse(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        workspaces=await user_workspaces(session, user),
    )
