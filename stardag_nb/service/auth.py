"""Request dependencies: the database session, who is calling, and what they may do.

- :data:`SessionDep`: one session per request, committed when the route returns (before
  the response is sent), rolled back on an error.
- :data:`SdkScopeDep`: the environment of an SDK call, from ``X-API-Key`` or from a user
  token (``Authorization: Bearer st_...``) plus ``?environment_id=``.
- :data:`CurrentUser`: the user of a UI route (user tokens only).
- :data:`MemberAccess` / :data:`AdminAccess` / :data:`OwnerAccess`: the caller's role in
  the workspace ``{ws}`` of a UI route, at least the one named.

The error texts are part of the protocol (the SDK maps some by substring).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..registry.wire import Role
from .db.ids import utcnow
from .db.models import ApiKey, Environment, User, UserToken, Workspace, WorkspaceMember, table_of
from .db.session import Database
from .keycache import ApiKeyCache, CachedKey
from .names import slugify
from .security import digest

__all__ = [
    "ENV_ID_REQUIRED",
    "ENV_NOT_IN_WORKSPACE",
    "INVALID_API_KEY",
    "INVALID_TOKEN",
    "KEY_ON_UI_ROUTE",
    "NOT_AUTHENTICATED",
    "WORKSPACE_NOT_FOUND",
    "AdminAccess",
    "CurrentUser",
    "MemberAccess",
    "OwnerAccess",
    "SdkScope",
    "SdkScopeDep",
    "SessionDep",
    "WorkspaceAccess",
    "autocommit",
    "deleted_environment_message",
    "get_db",
    "get_session",
    "parse_uuid",
    "require_role",
]

NOT_AUTHENTICATED = "Authentication required. Provide X-API-Key header or Bearer token."
INVALID_API_KEY = "Invalid API key"
INVALID_TOKEN = "Invalid token"
ENV_ID_REQUIRED = "environment_id is required when using JWT authentication"
ENV_NOT_IN_WORKSPACE = "Environment does not belong to your workspace"
KEY_ON_UI_ROUTE = "API keys can only be used on SDK routes"
WORKSPACE_NOT_FOUND = "Workspace not found"

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an environment's API key (sk_...)"
)
_bearer = HTTPBearer(auto_error=False, description="a user token (st_...)")


# --------------------------------------------------------------------------------------------
# the session


def get_db(request: Request) -> Database:
    """The app's :class:`Database`."""
    db: Database = request.app.state.db
    return db


_AUTOCOMMIT_ATTR = "__stardag_autocommit__"


def autocommit(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a write route whose database work is one write statement (plus reads that need
    no isolation from it): its session autocommits, which spares ``BEGIN``/``COMMIT``."""
    setattr(endpoint, _AUTOCOMMIT_ATTR, True)
    return endpoint


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: write requests (POST, PUT, PATCH, DELETE) get a write
    transaction (or autocommit, for routes marked :func:`autocommit`); the work is
    committed when the route returns, before the response."""
    write = request.method in _WRITE_METHODS
    single = write and getattr(request.scope.get("endpoint"), _AUTOCOMMIT_ATTR, False)
    async with get_db(request).session(write=write, autocommit=single) as session:
        yield session
        await session.commit()


try:
    # "function": the exit code (the commit) runs before the response is sent
    _session_dependency = Depends(get_session, scope="function")
except TypeError as exc:  # pragma: no cover - FastAPI < 0.121 has no dependency scopes
    raise ImportError(
        "The registry service needs fastapi>=0.121 (dependency scopes): "
        "pip install -U 'stardag_nb[service]'"
    ) from exc
SessionDep = Annotated[AsyncSession, _session_dependency]


def _is_write(request: Request) -> bool:
    return request.method in _WRITE_METHODS


def touch_due(last_used: datetime | None, seconds: float) -> bool:
    """Whether a credential's ``last_used_at`` is due for an update (at most every
    ``seconds``)."""
    return last_used is None or utcnow() - last_used >= timedelta(seconds=seconds)


def _stale(last_used: datetime | None, request: Request) -> bool:
    """Whether a credential's ``last_used_at`` is due for an update (written only by write
    requests, at most every ``api_key_touch_seconds``)."""
    if not _is_write(request):
        return False
    return touch_due(last_used, request.app.state.settings.api_key_touch_seconds)


def parse_uuid(value: str) -> UUID | None:
    """``value`` as a UUID, or None when it is not one."""
    try:
        return UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


def deleted_environment_message(ws_slug: str, env: Environment, via_key: bool) -> str:
    """The 410 detail for a call into a deleted environment."""
    when = env.deleted_at.isoformat().replace("+00:00", "Z") if env.deleted_at else "?"
    text = f"Environment '{ws_slug}/{env.slug}' was deleted at {when}"
    if via_key:
        return (
            f"{text}; its API keys no longer work. Create a key for another environment: "
            "stardag-nb api-key create NAME -e ENVIRONMENT"
        )
    return f"{text}. Choose another environment: stardag-nb config use environment NAME"


# --------------------------------------------------------------------------------------------
# users


async def _user_for_token(session: AsyncSession, token: str, request: Request) -> User:
    row = (
        await session.execute(
            select(User, UserToken)
            .join(UserToken, UserToken.user_id == User.id)
            .where(UserToken.token_hash == digest(token))
        )
    ).first()
    if row is None or row[1].revoked_at is not None:
        raise HTTPException(401, INVALID_TOKEN)
    user, user_token = row
    if _stale(user_token.last_used_at, request):
        await session.execute(
            update(UserToken).where(UserToken.id == user_token.id).values(last_used_at=utcnow())
        )
    return user


async def current_user(
    request: Request,
    session: SessionDep,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> User:
    """The user calling a UI route (a user token; API keys are refused with 403)."""
    if bearer is not None and bearer.credentials:
        return await _user_for_token(session, bearer.credentials, request)
    if api_key:
        raise HTTPException(403, KEY_ON_UI_ROUTE)
    raise HTTPException(401, NOT_AUTHENTICATED)


CurrentUser = Annotated[User, Depends(current_user)]


# --------------------------------------------------------------------------------------------
# SDK routes


@dataclass
class SdkScope:
    """Who calls an SDK route and in which environment."""

    environment: Environment
    workspace_slug: str
    user: User | None = None
    api_key: ApiKey | None = None

    @classmethod
    def of_cached(cls, cached: CachedKey) -> SdkScope:
        """The scope of an API key the key cache verified moments ago."""
        return cls(
            environment=cached.environment,
            workspace_slug=cached.workspace_slug,
            api_key=cached.api_key,
        )

    @property
    def env_id(self) -> UUID:
        """The environment's id."""
        return self.environment.id

    @property
    def label(self) -> str:
        """``workspace/environment``, for messages."""
        return f"{self.workspace_slug}/{self.environment.slug}"


# built once: every SDK call with an API key runs it (the key, its environment and
# workspace in one query; a verified key is then cached briefly, see keycache.py)
# (the creator's membership too: a key stops working when its creator leaves the workspace)
_API_KEY_SCOPE = (
    select(ApiKey, Environment, Workspace.slug, WorkspaceMember.role)
    .join(Environment, Environment.id == ApiKey.environment_id)
    .join(Workspace, Workspace.id == Environment.workspace_id)
    .outerjoin(
        WorkspaceMember,
        and_(
            WorkspaceMember.workspace_id == Environment.workspace_id,
            WorkspaceMember.user_id == ApiKey.created_by_id,
        ),
    )
    .where(ApiKey.key_hash == bindparam("key_hash"))
)
# Core: the ORM's bulk-update machinery costs more than the statement
_API_KEYS = table_of(ApiKey)
_TOUCH_KEY = (
    update(_API_KEYS)
    .where(_API_KEYS.c.id == bindparam("key_id"))
    .values(last_used_at=bindparam("now"))
)


async def _key_scope(request: Request, session: AsyncSession, api_key: str) -> SdkScope:
    """The scope of an API key: from the key cache when it verified the key moments ago
    (see :mod:`~stardag_nb.service.keycache`), else from the database."""
    key_hash = digest(api_key)
    cache: ApiKeyCache | None = getattr(request.app.state, "key_cache", None)
    cached = cache.get(key_hash) if cache is not None else None
    if cached is not None:
        if _stale(cached.last_used_at, request):
            cached.last_used_at = now = utcnow()
            await session.execute(_TOUCH_KEY, {"key_id": cached.key_id, "now": now})
        return SdkScope.of_cached(cached)
    stamp = cache.epoch.current() if cache is not None else 0
    row = (await session.execute(_API_KEY_SCOPE, {"key_hash": key_hash})).first()
    if row is None:
        raise HTTPException(401, INVALID_API_KEY)
    key, env, ws_slug, creator_role = row
    if env.deleted_at is not None:
        raise HTTPException(410, deleted_environment_message(ws_slug, env, via_key=True))
    if key.revoked_at is not None or (key.created_by_id is not None and creator_role is None):
        raise HTTPException(401, INVALID_API_KEY)
    if _stale(key.last_used_at, request):
        await session.execute(_TOUCH_KEY, {"key_id": key.id, "now": utcnow()})
    if cache is not None:
        cache.put(key_hash, stamp=stamp, environment=env, workspace_slug=ws_slug, api_key=key)
    return SdkScope(environment=env, workspace_slug=ws_slug, api_key=key)


async def sdk_scope(
    request: Request,
    session: SessionDep,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    environment_id: Annotated[
        str | None,
        Query(description="the environment, required with a user token (not an API key)"),
    ] = None,
) -> SdkScope:
    """The environment of an SDK call; the API key takes priority over a user token."""
    if api_key:
        return await _key_scope(request, session, api_key)
    if bearer is None or not bearer.credentials:
        raise HTTPException(401, NOT_AUTHENTICATED)
    user = await _user_for_token(session, bearer.credentials, request)
    if not environment_id:
        raise HTTPException(400, ENV_ID_REQUIRED)
    env_uuid = parse_uuid(environment_id)
    if env_uuid is None:
        raise HTTPException(
            400, f"environment_id {environment_id!r} is not a UUID; pass the environment's id"
        )
    found = (
        await session.execute(
            select(Environment, Workspace.slug, WorkspaceMember.role)
            .join(Workspace, Workspace.id == Environment.workspace_id)
            .outerjoin(
                WorkspaceMember,
                and_(
                    WorkspaceMember.workspace_id == Environment.workspace_id,
                    WorkspaceMember.user_id == user.id,
                ),
            )
            .where(Environment.id == env_uuid)
        )
    ).first()
    if found is None or found[2] is None:
        raise HTTPException(403, ENV_NOT_IN_WORKSPACE)
    env, ws_slug, _role = found
    if env.deleted_at is not None:
        raise HTTPException(410, deleted_environment_message(ws_slug, env, via_key=False))
    return SdkScope(environment=env, workspace_slug=ws_slug, user=user)


SdkScopeDep = Annotated[SdkScope, Depends(sdk_scope)]


# --------------------------------------------------------------------------------------------
# UI routes: workspaces and roles


@dataclass
class WorkspaceAccess:
    """A caller's access to one (live) workspace."""

    workspace: Workspace
    role: Role
    user: User

    def require(self, needed: Role) -> None:
        """Raise 403 unless the caller's role includes ``needed``."""
        require_role(self.role, needed)


def require_role(role: Role, needed: Role) -> None:
    """Raise 403 ``"Requires role admin (you are member)"`` when ``role`` is below ``needed``."""
    if role.rank < needed.rank:
        raise HTTPException(403, f"Requires role {needed.value} (you are {role.value})")


def _ref_condition(ref: str) -> Any:
    ref_id = parse_uuid(ref)
    if ref_id is not None:
        return Workspace.id == ref_id
    try:
        return Workspace.slug == slugify(ref)
    except ValueError:
        return None


def workspace_role(
    needed: Role,
) -> Callable[[str, User, AsyncSession], Coroutine[Any, Any, WorkspaceAccess]]:
    """A dependency: the caller's access to the workspace ``{ws}`` (slug or id), with at
    least the role ``needed``. Not a member (or no such workspace): 404."""

    async def dependency(ws: str, user: CurrentUser, session: SessionDep) -> WorkspaceAccess:
        condition = _ref_condition(ws)
        row = None
        if condition is not None:
            row = (
                await session.execute(
                    select(Workspace, WorkspaceMember.role)
                    .join(
                        WorkspaceMember,
                        and_(
                            WorkspaceMember.workspace_id == Workspace.id,
                            WorkspaceMember.user_id == user.id,
                        ),
                    )
                    .where(condition, Workspace.deleted_at.is_(None))
                )
            ).first()
        if row is None:
            raise HTTPException(404, WORKSPACE_NOT_FOUND)
        access = WorkspaceAccess(workspace=row[0], role=Role(row[1]), user=user)
        access.require(needed)
        return access

    return dependency


MemberAccess = Annotated[WorkspaceAccess, Depends(workspace_role(Role.MEMBER))]
AdminAccess = Annotated[WorkspaceAccess, Depends(workspace_role(Role.ADMIN))]
OwnerAccess = Annotated[WorkspaceAccess, Depends(workspace_role(Role.OWNER))]
