"""``stardag-nb serve --init``: set up an empty database for a first user.

Creates (once, when the database has no user) the user, a workspace ``default`` with the
environments ``main`` and ``personal-{username}`` (both running, no target roots: clients
keep their local roots), and returns the user's login token.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from .accounts import (
    create_environment,
    create_user,
    create_workspace,
    ensure_personal_environment,
    finish_without_roots,
    personal_environment_name,
)
from .db.migrate import upgrade_head
from .db.models import User
from .db.session import Database
from .settings import ServiceSettings

__all__ = ["BootstrapResult", "bootstrap", "init_database"]

DEFAULT_WORKSPACE = "default"
DEFAULT_ENVIRONMENT = "main"


@dataclass(frozen=True)
class BootstrapResult:
    """What ``--init`` created."""

    username: str
    token: str
    workspace: str
    environments: tuple[str, ...]


async def bootstrap(db: Database, username: str = "admin") -> BootstrapResult | None:
    """Create the first user, workspace and environments; None if the database already
    has users (nothing is changed then).

    Raises:
        fastapi.HTTPException: the username is invalid (its ``detail`` says why).
    """
    async with db.session(write=True) as session:
        if (await session.execute(select(User.id).limit(1))).first() is not None:
            return None
        user, token = await create_user(session, username)
        workspace = await create_workspace(session, DEFAULT_WORKSPACE, None, None, user)
        main = await create_environment(session, workspace, DEFAULT_ENVIRONMENT)
        finish_without_roots(session, main)
        await ensure_personal_environment(session, workspace, user)
        await session.commit()
    return BootstrapResult(
        username=user.username,
        token=token,
        workspace=workspace.slug,
        environments=(main.slug, personal_environment_name(user.username)),
    )


async def init_database(
    settings: ServiceSettings, username: str = "admin"
) -> BootstrapResult | None:
    """Migrate the database to the latest schema, then :func:`bootstrap` it."""
    db = Database(settings.database_url, echo=settings.echo_sql)
    try:
        await upgrade_head(db)
        return await bootstrap(db, username)
    finally:
        await db.dispose()
