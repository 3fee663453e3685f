"""Alembic, configured in code (no ``alembic.ini``), so it works from an installed wheel."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from .session import Database

__all__ = ["MIGRATIONS_DIR", "alembic_config", "upgrade_head"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config for our migrations, bound to ``connection`` (preferred) or ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def upgrade_head(db: Database) -> None:
    """``alembic upgrade head`` on ``db``, in one transaction (in-process, no subprocess)."""
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(stardag_sqlite_immediate=True)
        async with conn.begin():
            await conn.run_sync(_upgrade)
