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


def _default_root_protocols() -> tuple[str, ...]:
    from ..environments import SERVICE_ROOT_PROTOCOLS

    return SERVICE_ROOT_PROTOCOLS


def default_database_url() -> str:
    """``sqlite+aiosqlite:///<stardag dir>/service.sqlite3`` (the stardag dir:
    ``~/.stardag`` or ``$STARDAG_HOME``)."""
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
    api_key_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="a verified API key is trusted without a database lookup for this long "
        "(0: never); a revoke, a member's removal or an environment's deletion takes effect "
        "at once in every worker of this server, after at most this long in other servers on "
        "the same database",
    )

    analyze_seconds: float = Field(
        default=0.25,
        ge=0,
        description="on PostgreSQL, every this many seconds the tables builds write to are "
        "analyzed when more of their rows changed since their last analysis than they had "
        "then (the query planner's statistics of a new, growing registry; autovacuum looks "
        "once a minute); 0: leave it to autovacuum",
    )

    sdk_slots: int = Field(
        default=4,
        ge=1,
        description="the SDK's build and task writes (and batches) the server runs at once, "
        "shared out among its workers (serve --workers N: each runs 1/N of them, rounded "
        "up, at least 2); more wait their turn, in the order they came (a few at a time "
        "keep the database busy and answer each sooner than many interleaved)",
    )

    provision_timeout_seconds: float = Field(
        default=300.0,
        description="provisioning (or purging) one target root fails after this long",
    )

    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="a request body larger than this many bytes is refused with 413",
    )
    max_json_depth: int = Field(
        default=200,
        ge=8,
        le=240,
        description="a JSON body nested deeper than this is refused with 400 (at most 240: "
        "deeper values cannot be stored and answered)",
    )
    batch_writes: bool = Field(
        default=True,
        description="offer the batch-v1 protocol extension (a build's writes in batches, "
        "POST /api/v1/ext/batch/builds/{build_id}); off: v1 routes only, as stardag's own "
        "service",
    )
    service_root_protocols: str = Field(
        default_factory=lambda: ",".join(_default_root_protocols()),
        description="target-root protocols the service provisions and purges itself, with "
        "its own credentials (object stores); every other root (local paths above all) is "
        "provisioned and purged by the client where the builds run",
    )

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("service_root_protocols", mode="before")
    @classmethod
    def _protocol_list(cls, value: object) -> object:
        """``"s3, gs"`` or ``["s3", "gs"]`` as ``"s3,gs"``; never local ones."""
        from ..environments import LOCAL_PROTOCOLS

        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            return value
        protocols = [str(p).strip().lower() for p in items if str(p).strip()]
        local = sorted(set(protocols) & LOCAL_PROTOCOLS)
        if local:
            raise ValueError(
                f"service_root_protocols may not include {', '.join(local)}: the service never "
                "touches its own file system for a tenant"
            )
        return ",".join(protocols)

    @property
    def root_protocols(self) -> frozenset[str]:
        """:attr:`service_root_protocols` as a set."""
        return frozenset(p for p in self.service_root_protocols.split(",") if p)

    def database_file(self) -> str | None:
        """The SQLite database file, or None for PostgreSQL."""
        scheme, _, rest = self.database_url.partition("://")
        if not scheme.startswith("sqlite"):
            return None
        path = rest[1:] if rest.startswith("/") else rest
        return path.split("?", 1)[0] or None
