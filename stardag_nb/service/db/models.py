"""The service's tables (SQLAlchemy 2 declarative, portable between SQLite and PostgreSQL).

Ids are UUIDv7 (:func:`~stardag_nb.service.db.ids.new_id`), times timezone-aware UTC.
Statuses are never stored: they are derived from the append-only ``events`` log
(:mod:`stardag_nb.service.status`). Deleted workspaces and environments stay as
tombstones (``deleted_at`` set): their slugs are unique only among the live ones.

Schema changes go through an Alembic migration in ``db/migrations/versions``; a test
checks that upgrading an empty database gives exactly these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, cast
from uuid import UUID

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .ids import new_id, utcnow
from .types import UTCDateTime

__all__ = [
    "ApiKey",
    "Asset",
    "Base",
    "BatchReceipt",
    "Build",
    "Environment",
    "EnvironmentEventRow",
    "Event",
    "Lock",
    "TargetRoot",
    "Task",
    "TaskDependency",
    "User",
    "UserToken",
    "Workspace",
    "WorkspaceMember",
    "table_of",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_LIVE = text("deleted_at IS NULL")


class Base(DeclarativeBase):
    """Declarative base with a naming convention (stable constraint names for Alembic)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        UUID: Uuid(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class (for statements that skip the ORM's unit of work)."""
    return cast(Table, model.__table__)


def _id() -> Mapped[UUID]:
    return mapped_column(primary_key=True, default=new_id)


def _created() -> Mapped[datetime]:
    return mapped_column(default=utcnow)


# --------------------------------------------------------------------------------------------
# users, workspaces, members


class User(Base):
    """A person (or robot) who logs in with a user token."""

    __tablename__ = "users"

    id: Mapped[UUID] = _id()
    username: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()


class UserToken(Base):
    """An opaque login token (``st_...``), stored as its SHA-256 hex digest; no expiry."""

    __tablename__ = "user_tokens"

    id: Mapped[UUID] = _id()
    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _created()
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Workspace(Base):
    """A team: members with roles, and environments."""

    __tablename__ = "workspaces"
    __table_args__ = (
        Index(
            "uq_workspaces_live_slug",
            "slug",
            unique=True,
            sqlite_where=_LIVE,
            postgresql_where=_LIVE,
        ),
    )

    id: Mapped[UUID] = _id()
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created()
    deleted_at: Mapped[datetime | None]


class WorkspaceMember(Base):
    """A user's role in a workspace: ``owner``, ``admin`` or ``member``."""

    __tablename__ = "workspace_members"

    workspace_id: Mapped[UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = _created()


# --------------------------------------------------------------------------------------------
# environments


class Environment(Base):
    """An environment of a workspace; builds, tasks and locks belong to one.

    ``state`` follows the lifecycle created → provisioning → running | failed → deleted.
    """

    __tablename__ = "environments"
    __table_args__ = (
        Index(
            "uq_environments_live_slug",
            "workspace_id",
            "slug",
            unique=True,
            sqlite_where=_LIVE,
            postgresql_where=_LIVE,
        ),
    )

    id: Mapped[UUID] = _id()
    workspace_id: Mapped[UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    state_reason: Mapped[str | None] = mapped_column(Text)
    is_personal: Mapped[bool] = mapped_column(Boolean, default=False)
    max_concurrent_locks: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    deleted_at: Mapped[datetime | None]


class TargetRoot(Base):
    """One target root of an environment: ``name`` → ``uri_prefix``."""

    __tablename__ = "target_roots"

    environment_id: Mapped[UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    uri_prefix: Mapped[str] = mapped_column(Text)
    create_missing: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = _created()
    # fsspec options (an S3 endpoint, a profile, ...); NULL: none
    storage_options: Mapped[dict[str, Any] | None]


class EnvironmentEventRow(Base):
    """A lifecycle event of an environment (``state`` is the state after it)."""

    __tablename__ = "environment_events"

    id: Mapped[UUID] = _id()
    environment_id: Mapped[UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(50))
    state: Mapped[str] = mapped_column(String(20))
    message: Mapped[str | None] = mapped_column(Text)
    event_metadata: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = _created()


class ApiKey(Base):
    """An environment's API key (``sk_...``), stored as its SHA-256 hex digest."""

    __tablename__ = "api_keys"

    id: Mapped[UUID] = _id()
    environment_id: Mapped[UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created()
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


# --------------------------------------------------------------------------------------------
# builds, tasks, events, assets, locks


class Build(Base):
    """One build; its status is derived from its build-level events."""

    __tablename__ = "builds"
    __table_args__ = (Index("ix_builds_environment_id_created_at", "environment_id", "created_at"),)

    id: Mapped[UUID] = _id()
    environment_id: Mapped[UUID] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    user_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    commit_hash: Mapped[str | None] = mapped_column(String(200))
    root_task_ids: Mapped[list[str]]
    created_at: Mapped[datetime] = _created()


class Task(Base):
    """A task of an environment (not of a build: builds reference tasks through events)."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("environment_id", "task_id"),
        Index("ix_tasks_environment_id_task_name", "environment_id", "task_name"),
    )

    id: Mapped[UUID] = _id()
    environment_id: Mapped[UUID] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    task_id: Mapped[str] = mapped_column(String(255))
    task_namespace: Mapped[str] = mapped_column(String(255), default="")
    task_name: Mapped[str] = mapped_column(String(255))
    task_data: Mapped[dict[str, Any]]
    version: Mapped[str | None] = mapped_column(String(100))
    output_uri: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class TaskDependency(Base):
    """An edge ``upstream → downstream`` between two tasks (server primary keys)."""

    __tablename__ = "task_dependencies"

    upstream_id: Mapped[UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    downstream_id: Mapped[UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    # its tasks' environment; no foreign key of its own (see Event.environment_id)
    environment_id: Mapped[UUID] = mapped_column(index=True)
    dynamic: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _created()


class Event(Base):
    """One entry of the append-only build log (``task_pk`` None for build events)."""

    __tablename__ = "events"

    id: Mapped[UUID] = _id()
    # its build's environment, with no foreign key of its own: the build's (and the
    # task's) delete the event with them, and an environment is never deleted (its
    # rows are, by environment_id: lifecycle.tombstone). Checking (and share-locking)
    # the environment's row for every event and edge written cost the database ~12%
    # of its CPU per batch under concurrent builds
    environment_id: Mapped[UUID] = mapped_column(index=True)
    build_id: Mapped[UUID] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), index=True)
    task_pk: Mapped[UUID | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = _created()
    error_message: Mapped[str | None] = mapped_column(Text)
    event_metadata: Mapped[dict[str, Any] | None]


class BatchReceipt(Base):
    """A batch of build writes the service applied (extension ``batch-v1``), written in
    the batch's transaction: a retry of the batch is answered from it, not applied again."""

    __tablename__ = "batch_receipts"

    environment_id: Mapped[UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    batch_id: Mapped[UUID] = mapped_column(primary_key=True)
    build_id: Mapped[UUID] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), index=True)
    op_count: Mapped[int] = mapped_column(Integer)
    # {op index: why} of the operations that were not applied (None: all were)
    results: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = _created()


class Asset(Base):
    """A task's asset, upserted by (task, type, name)."""

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("task_pk", "asset_type", "name"),)

    id: Mapped[UUID] = _id()
    environment_id: Mapped[UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    task_pk: Mapped[UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    build_id: Mapped[UUID | None] = mapped_column(ForeignKey("builds.id", ondelete="SET NULL"))
    asset_type: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(255))
    body: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Lock(Base):
    """A lease-based global lock, keyed by (environment, name)."""

    __tablename__ = "locks"
    __table_args__ = (Index("ix_locks_environment_id_expires_at", "environment_id", "expires_at"),)

    environment_id: Mapped[UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner_id: Mapped[UUID]
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer, default=1)
