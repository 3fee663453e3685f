"""UI routes of a workspace's members: list, add, change role, remove.

Admins manage members and the member/admin roles; making or unmaking owners needs an
owner. The last owner can be neither removed nor demoted (409). Anyone may leave. A
removed member's credentials stop working in the workspace: the API keys they created
for its environments are revoked (the answer lists them).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...registry.wire import MemberAdd, MemberAdded, MemberInfo, MemberRemoved, MemberUpdate, Role
from ..accounts import add_member, create_user, ensure_personal_environment, validate_username
from ..auth import AdminAccess, MemberAccess, SessionDep, WorkspaceAccess
from ..db.ids import utcnow
from ..db.models import ApiKey, Environment, User, WorkspaceMember
from ..views import api_key_info, member_info

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/ui/workspaces/{ws}/members", tags=["ui"])


async def _membership(
    session: AsyncSession, access: WorkspaceAccess, username: str
) -> tuple[WorkspaceMember, User]:
    row = (
        await session.execute(
            select(WorkspaceMember, User)
            .join(User, User.id == WorkspaceMember.user_id)
            .where(WorkspaceMember.workspace_id == access.workspace.id, User.username == username)
        )
    ).first()
    if row is None:
        raise HTTPException(
            404, f"User '{username}' is not a member of workspace '{access.workspace.slug}'"
        )
    return row[0], row[1]


async def _check_not_last_owner(
    session: AsyncSession, access: WorkspaceAccess, member: WorkspaceMember, username: str
) -> None:
    if member.role != Role.OWNER:
        return
    owners = (
        await session.execute(
            select(func.count())
            .select_from(WorkspaceMember)
            .where(
                WorkspaceMember.workspace_id == access.workspace.id,
                WorkspaceMember.role == Role.OWNER.value,
            )
        )
    ).scalar_one()
    if owners <= 1:
        raise HTTPException(
            409,
            f"'{username}' is the last owner of workspace '{access.workspace.slug}'; "
            "make another member owner first (stardag-nb member role USER owner)",
        )


@router.get("")
async def list_members(access: MemberAccess, session: SessionDep) -> list[MemberInfo]:
    """The workspace's members with their roles, by username."""
    rows = await session.execute(
        select(WorkspaceMember, User.username)
        .join(User, User.id == WorkspaceMember.user_id)
        .where(WorkspaceMember.workspace_id == access.workspace.id)
        .order_by(User.username)
    )
    return [member_info(m.user_id, username, m.role, m.created_at) for m, username in rows.tuples()]


@router.post("", status_code=201)
async def add(body: MemberAdd, access: AdminAccess, session: SessionDep) -> MemberAdded:
    """Add a user (created when unknown: ``token`` is then their login token, shown once);
    they get ``personal-{username}`` in the workspace."""
    if body.role == Role.OWNER:
        access.require(Role.OWNER)
    username = validate_username(body.username)
    user = (
        await session.execute(select(User).where(User.username == username))
    ).scalar_one_or_none()
    token = None
    if user is None:
        user, token = await create_user(session, username)
    else:
        existing = await session.get(WorkspaceMember, (access.workspace.id, user.id))
        if existing is not None:
            raise HTTPException(
                409,
                f"User '{username}' is already a member of workspace '{access.workspace.slug}' "
                f"(role {existing.role}); change it: stardag-nb member role {username} ROLE",
            )
    member = add_member(session, access.workspace, user, body.role)
    await ensure_personal_environment(session, access.workspace, user)
    return MemberAdded(
        user_id=user.id,
        username=user.username,
        role=Role(member.role),
        created_at=member.created_at,
        token=token,
    )


@router.patch("/{username}")
async def set_role(
    username: str, body: MemberUpdate, access: AdminAccess, session: SessionDep
) -> MemberInfo:
    """Change a member's role (to or from owner: owners only)."""
    member, user = await _membership(session, access, username)
    if Role.OWNER in (Role(member.role), body.role):
        access.require(Role.OWNER)
    if body.role != Role.OWNER:
        await _check_not_last_owner(session, access, member, username)
    member.role = body.role.value
    return member_info(user.id, user.username, member.role, member.created_at)


@router.delete("/{username}")
async def remove(username: str, access: MemberAccess, session: SessionDep) -> MemberRemoved:
    """Remove a member (admins; owners to remove an owner; anyone themself) and revoke
    the live API keys they created for the workspace's environments."""
    member, user = await _membership(session, access, username)
    if member.user_id != access.user.id:
        access.require(Role.OWNER if member.role == Role.OWNER else Role.ADMIN)
    await _check_not_last_owner(session, access, member, username)
    keys = (
        (
            await session.execute(
                select(ApiKey)
                .join(Environment, Environment.id == ApiKey.environment_id)
                .where(
                    Environment.workspace_id == access.workspace.id,
                    ApiKey.created_by_id == user.id,
                    ApiKey.revoked_at.is_(None),
                )
                .order_by(ApiKey.created_at, ApiKey.id)
            )
        )
        .scalars()
        .all()
    )
    now = utcnow()
    for key in keys:
        key.revoked_at = now
    await session.delete(member)
    return MemberRemoved(
        username=user.username,
        workspace_slug=access.workspace.slug,
        revoked_api_keys=[api_key_info(key, user.username) for key in keys],
    )
