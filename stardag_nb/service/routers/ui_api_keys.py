"""UI routes of an environment's API keys (admins): list, create (the key is shown once),
revoke."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from ...registry.wire import ApiKeyCreate, ApiKeyCreated, ApiKeyInfo
from ..auth import AdminAccess, SessionDep, parse_uuid
from ..db.ids import new_id, utcnow
from ..db.models import ApiKey, User
from ..queries import get_live_environment
from ..security import digest, new_api_key
from ..views import api_key_info

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/ui/workspaces/{ws}/environments/{env}/api-keys", tags=["ui"])


@router.get("")
async def list_api_keys(env: str, access: AdminAccess, session: SessionDep) -> list[ApiKeyInfo]:
    """The environment's keys (revoked ones too), oldest first; never the secrets."""
    row = await get_live_environment(session, access.workspace, env)
    keys = await session.execute(
        select(ApiKey, User.username)
        .outerjoin(User, User.id == ApiKey.created_by_id)
        .where(ApiKey.environment_id == row.id)
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    return [api_key_info(key, username) for key, username in keys.tuples()]


@router.post("", status_code=201)
async def create_api_key(
    env: str, body: ApiKeyCreate, access: AdminAccess, session: SessionDep
) -> ApiKeyCreated:
    """A new key ``sk_...`` for the environment; ``key`` is in this answer only."""
    row = await get_live_environment(session, access.workspace, env)
    name = body.name.strip()
    if not name:
        raise HTTPException(422, "An API key needs a name, e.g. 'ci'")
    key, prefix = new_api_key(row.id)
    record = ApiKey(
        id=new_id(),
        environment_id=row.id,
        name=name,
        key_prefix=prefix,
        key_hash=digest(key),
        created_by_id=access.user.id,
        created_at=utcnow(),
    )
    session.add(record)
    return ApiKeyCreated(**api_key_info(record, access.user.username).model_dump(), key=key)


@router.delete("/{key_id}")
async def revoke_api_key(
    env: str, key_id: str, access: AdminAccess, session: SessionDep
) -> ApiKeyInfo:
    """Revoke a key (by id, or by name when exactly one live key has it)."""
    row = await get_live_environment(session, access.workspace, env)
    query = select(ApiKey, User.username).outerjoin(User, User.id == ApiKey.created_by_id)
    key_uuid = parse_uuid(key_id)
    if key_uuid is not None:
        query = query.where(ApiKey.id == key_uuid, ApiKey.environment_id == row.id)
    else:
        query = query.where(
            ApiKey.name == key_id, ApiKey.environment_id == row.id, ApiKey.revoked_at.is_(None)
        )
    matches = (await session.execute(query)).tuples().all()
    label = f"{access.workspace.slug}/{row.slug}"
    if not matches:
        raise HTTPException(
            404,
            f"API key '{key_id}' not found in environment '{label}'. "
            "List them: stardag-nb api-key list",
        )
    if len(matches) > 1:
        raise HTTPException(
            409,
            f"{len(matches)} live API keys of environment '{label}' are named '{key_id}'; "
            "revoke by id (stardag-nb api-key list)",
        )
    key, username = matches[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return api_key_info(key, username)
