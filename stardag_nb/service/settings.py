"""Settings of the registry service (``STARDAG_SERVICE_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServiceSettings", "default_database_url", "normalize_database_url"]

# Drivers the service runs on: SQLAlchemy's async dialects.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def default_database_url() -> str:
    """``sqlite+aiosqlite:///<stardag dir>/service.sqlite3`` (``~/.stardag`` or ``$STARDAG_HOME``)."""
    from .._config_files import get_stardag_dir

    return f"sqlite+aiosqlite:///{get_stardag_dir() / 'service.sqlite3'}"


def normalize_database_url(url: str) -> str:
    """``url`` with an async driver: ``sqlite://`` → ``sqlite+aiosqlite://``,
    ``postgresql://`` (or ``postgres://``) → ``postgresql+asyncpg://``.

    Raises:
        ValueError: not a SQLite or PostgreSQL URL, or a synchronous driver.
    """
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError(
            f"database URL {url!r} has no scheme; use sqlite+aiosqlite:///PATH or "
            "postgresql+asyncpg://USER@HOST:PORT/DB"
        )
    scheme = _ASYNC_DRIVERS.get(scheme, scheme)
    if scheme == "sqlite+aiosqlite" and rest.lstrip("/") in ("", ":memory:"):
        raise ValueError(
            f"database URL {url!r} is an in-memory SQLite database, which each connection "
            "would see empty; give a file: sqlite+aiosqlite:///PATH"
        )
    if scheme in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        return f"{scheme}://{rest}"
    raise ValueError(
        f"database URL scheme {scheme!r} is not supported; use sqlite+aiosqlite:///PATH or "
        "postgresql+asyncpg://USER@HOST:PORT/DB"
    )


class ServiceSettings(BaseSettings):
    """How the service runs; every field can be set with ``STARDAG_SERVICE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STARDAG_SERVICE_", extra="ignore")

    database_url: str = Field(
        default_factory=default_database_url,
        description="SQLAlchemy URL: sqlite+aiosqlite:///PATH or postgresql+asyncpg://...",
    )
    echo_sql: bool = Field(default=False, description="log every SQL statement")
    api_key_touch_seconds: float = Field(
        default=60.0,
        description="an API key's or token's last_used_at is written at most this often",
    )

    provision_timeout_seconds: float = Field(
        default=300.0,
        description="provisioning (or purging) one target root fails after this long",
    )

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalize_database_url(value)
