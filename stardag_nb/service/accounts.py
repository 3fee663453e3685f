"""Creating users, workspaces, memberships and environments (used by the UI routes and
by ``serve --init``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..registry.wire import EnvironmentEventType, EnvironmentState, Role, TargetRootIn
from .db.ids import new_id, utcnow
from .db.models import Environment, TargetRoot, User, UserToken, Workspace, WorkspaceMember
from .lifecycle import begin_provisioning, record_event
from .names import slugify
from .security import digest, new_user_token

__all__ = [
    "add_member",
    "check_target_roots",
    "create_environment",
    "create_user",
    "create_workspace",
    "ensure_personal_environment",
    "finish_without_roots",
    "personal_environment_name",
    "slug_or_422",
    "validate_username",
]

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")


def slug_or_422(name: str, what: str) -> str:
    """The slug of ``name``, or a 422 naming the bad value."""
    try:
        return slugify(name)
    except ValueError as exc:
        raise HTTPException(422, f"Invalid {what} name: {exc}") from None


def validate_username(username: str) -> str:
    """``username`` if valid (letters, digits, ``_ . @ + -``; at most 100), else 422."""
    if not _USERNAME.match(username):
        raise HTTPException(
            422,
            f"Invalid username {username!r}: use letters, digits and _ . @ + - "
            "(starting with a letter or digit, at most 100 characters)",
        )
    return username


def personal_environment_name(username: str) -> str:
    """``personal-{username}``."""
    return f"personal-{username}"


async def create_user(session: AsyncSession, username: str) -> tuple[User, str]:
    """A new user and their login token (returned once; stored as a digest)."""
    user = User(id=new_id(), username=validate_username(username), created_at=utcnow())
    token = new_user_token()
    session.add(user)
    session.add(
        UserToken(id=new_id(), user_id=user.id, token_hash=digest(token), created_at=utcnow())
    )
    return user, token


async def create_workspace(
    session: AsyncSession, name: str, slug: str | None, description: str | None, owner: User
) -> Workspace:
    """A workspace with ``owner`` as its owner (409 if the slug is taken)."""
    slug = slug_or_422(slug or name, "workspace")
    taken = (
        await session.execute(
            select(Workspace.id).where(Workspace.slug == slug, Workspace.deleted_at.is_(None))
        )
    ).first()
    if taken is not None:
        raise HTTPException(
            409, f"Workspace '{slug}' already exists; choose another name (or slug)"
        )
    workspace = Workspace(
        id=new_id(),
        name=name.strip() or slug,
        slug=slug,
        description=description,
        created_by_id=owner.id,
        created_at=utcnow(),
    )
    session.add(workspace)
    add_member(session, workspace, owner, Role.OWNER)
    return workspace


def add_member(
    session: AsyncSession, workspace: Workspace, user: User, role: Role
) -> WorkspaceMember:
    """Make ``user`` a member of ``workspace`` with ``role``."""
    member = WorkspaceMember(
        workspace_id=workspace.id, user_id=user.id, role=role.value, created_at=utcnow()
    )
    session.add(member)
    return member


def check_target_roots(roots: Sequence[TargetRootIn]) -> None:
    """422 for a root without a name or URI, or two roots with the same name."""
    seen: set[str] = set()
    for root in roots:
        if not root.name.strip():
            raise HTTPException(
                422, f"A target root needs a name (got {root.name!r} for {root.uri!r})"
            )
        if not root.uri.strip():
            raise HTTPException(422, f"Target root {root.name!r} needs a URI")
        if root.name in seen:
            raise HTTPException(422, f"Target root {root.name!r} is given twice")
        seen.add(root.name)


async def create_environment(
    session: AsyncSession,
    workspace: Workspace,
    name: str,
    *,
    description: str | None = None,
    roots: Sequence[TargetRootIn] = (),
    is_personal: bool = False,
    max_concurrent_locks: int | None = None,
) -> Environment:
    """A new environment (409 if its slug is taken in the workspace), moved to
    ``provisioning``; the caller provisions it (:meth:`Lifecycle.start` after commit, or
    :func:`finish_without_roots`)."""
    slug = slug_or_422(name, "environment")
    check_target_roots(roots)
    if max_concurrent_locks is not None and max_concurrent_locks < 1:
        raise HTTPException(
            422, f"max_concurrent_locks must be at least 1 (or null), got {max_concurrent_locks}"
        )
    taken = (
        await session.execute(
            select(Environment.id).where(
                Environment.workspace_id == workspace.id,
                Environment.slug == slug,
                Environment.deleted_at.is_(None),
            )
        )
    ).first()
    if taken is not None:
        raise HTTPException(
            409, f"Environment '{slug}' already exists in workspace '{workspace.slug}'"
        )
    now = utcnow()
    env = Environment(
        id=new_id(),
        workspace_id=workspace.id,
        name=name.strip() or slug,
        slug=slug,
        description=description,
        state=EnvironmentState.CREATED.value,
        is_personal=is_personal,
        max_concurrent_locks=max_concurrent_locks,
        created_at=now,
        updated_at=now,
    )
    session.add(env)
    for root in roots:
        session.add(
            TargetRoot(
                environment_id=env.id,
                name=root.name,
                uri_prefix=root.uri,
                create_missing=root.create,
                created_at=now,
                storage_options=root.storage_options or None,
            )
        )
    begin_provisioning(session, env, EnvironmentEventType.CREATED)
    return env


def finish_without_roots(session: AsyncSession, env: Environment) -> None:
    """End the provisioning of an environment that has no target roots: running."""
    record_event(session, env, EnvironmentEventType.RUNNING, EnvironmentState.RUNNING)


async def ensure_personal_environment(
    session: AsyncSession, workspace: Workspace, user: User
) -> Environment | None:
    """Create ``personal-{username}`` in ``workspace`` (running, no target roots) unless it
    exists; return it when created."""
    name = personal_environment_name(user.username)
    exists = (
        await session.execute(
            select(Environment.id).where(
                Environment.workspace_id == workspace.id,
                Environment.slug == slugify(name),
                Environment.deleted_at.is_(None),
            )
        )
    ).first()
    if exists is not None:
        return None
    env = await create_environment(session, workspace, name, is_personal=True)
    finish_without_roots(session, env)
    return env
