"""Initial schema: users, workspaces, environments (lifecycle, target roots, API keys),
builds, tasks, dependencies, events, assets, locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = sa.text("deleted_at IS NULL")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id() -> sa.Column:
    return sa.Column("id", sa.Uuid(), nullable=False)


def _fk(table: str, column: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    ref_table = target.split(".")[0]
    return sa.ForeignKeyConstraint(
        [column], [target], name=op.f(f"fk_{table}_{column}_{ref_table}"), ondelete=ondelete
    )


def _pk(table: str, *columns: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*columns, name=op.f(f"pk_{table}"))


def _index(table: str, *columns: str, name: str | None = None, **kw: Any) -> None:
    op.create_index(name or op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns), **kw)


def upgrade() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=True),
        _ts("created_at"),
        _pk("users", "id"),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "user_tokens",
        _id(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("last_used_at", nullable=True),
        _ts("revoked_at", nullable=True),
        _fk("user_tokens", "user_id", "users.id"),
        _pk("user_tokens", "id"),
        sa.UniqueConstraint("token_hash", name=op.f("uq_user_tokens_token_hash")),
    )
    _index("user_tokens", "user_id")

    op.create_table(
        "workspaces",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        _ts("created_at"),
        _ts("deleted_at", nullable=True),
        _fk("workspaces", "created_by_id", "users.id", "SET NULL"),
        _pk("workspaces", "id"),
    )
    _index(
        "workspaces", "slug", name="uq_workspaces_live_slug", unique=True,
        sqlite_where=_LIVE, postgresql_where=_LIVE,
    )  # fmt: skip

    op.create_table(
        "workspace_members",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        _ts("created_at"),
        _fk("workspace_members", "user_id", "users.id"),
        _fk("workspace_members", "workspace_id", "workspaces.id"),
        _pk("workspace_members", "workspace_id", "user_id"),
    )
    _index("workspace_members", "user_id")

    op.create_table(
        "environments",
        _id(),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("is_personal", sa.Boolean(), nullable=False),
        sa.Column("max_concurrent_locks", sa.Integer(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("deleted_at", nullable=True),
        _fk("environments", "workspace_id", "workspaces.id"),
        _pk("environments", "id"),
    )
    _index("environments", "workspace_id")
    _index(
        "environments", "workspace_id", "slug", name="uq_environments_live_slug", unique=True,
        sqlite_where=_LIVE, postgresql_where=_LIVE,
    )  # fmt: skip

    op.create_table(
        "target_roots",
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("uri_prefix", sa.Text(), nullable=False),
        sa.Column("create_missing", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _fk("target_roots", "environment_id", "environments.id"),
        _pk("target_roots", "environment_id", "name"),
    )

    op.create_table(
        "environment_events",
        _id(),
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(50), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("event_metadata", sa.JSON(), nullable=True),
        _ts("created_at"),
        _fk("environment_events", "environment_id", "environments.id"),
        _pk("environment_events", "id"),
    )
    _index("environment_events", "environment_id")

    op.create_table(
        "api_keys",
        _id(),
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        _ts("created_at"),
        _ts("last_used_at", nullable=True),
        _ts("revoked_at", nullable=True),
        _fk("api_keys", "created_by_id", "users.id", "SET NULL"),
        _fk("api_keys", "environment_id", "environments.id"),
        _pk("api_keys", "id"),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    _index("api_keys", "environment_id")

    op.create_table(
        "builds",
        _id(),
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("commit_hash", sa.String(200), nullable=True),
        sa.Column("root_task_ids", sa.JSON(), nullable=False),
        _ts("created_at"),
        _fk("builds", "environment_id", "environments.id"),
        _fk("builds", "user_id", "users.id", "SET NULL"),
        _pk("builds", "id"),
    )
    _index("builds", "environment_id", "created_at", name="ix_builds_environment_id_created_at")

    op.create_table(
        "tasks",
        _id(),
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.String(255), nullable=False),
        sa.Column("task_namespace", sa.String(255), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("task_data", sa.JSON(), nullable=False),
        sa.Column("version", sa.String(100), nullable=True),
        sa.Column("output_uri", sa.Text(), nullable=True),
        _ts("created_at"),
        _fk("tasks", "environment_id", "environments.id"),
        _pk("tasks", "id"),
        sa.UniqueConstraint(
            "environment_id", "task_id", name=op.f("uq_tasks_environment_id_task_id")
        ),
    )
    _index("tasks", "environment_id", "task_name", name="ix_tasks_environment_id_task_name")

    op.create_table(
        "task_dependencies",
        sa.Column("upstream_id", sa.Uuid(), nullable=False),
        sa.Column("downstream_id", sa.Uuid(), nullable=False),
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("dynamic", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _fk("task_dependencies", "downstream_id", "tasks.id"),
        _fk("task_dependencies", "environment_id", "environments.id"),
        _fk("task_dependencies", "upstream_id", "tasks.id"),
        _pk("task_dependencies", "upstream_id", "downstream_id"),
    )
    _index("task_dependencies", "downstream_id")
    _index("task_dependencies", "environment_id")

    op.create_table(
        "events",
        _id(),
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("build_id", sa.Uuid(), nullable=False),
        sa.Column("task_pk", sa.Uuid(), nullable=True),
        sa.Column("event_type", sa.String(50), nullable=False),
        _ts("created_at"),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("event_metadata", sa.JSON(), nullable=True),
        _fk("events", "build_id", "builds.id"),
        _fk("events", "environment_id", "environments.id"),
        _fk("events", "task_pk", "tasks.id"),
        _pk("events", "id"),
    )
    _index("events", "build_id")
    _index("events", "environment_id")
    _index("events", "task_pk")

    op.create_table(
        "assets",
        _id(),
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("task_pk", sa.Uuid(), nullable=False),
        sa.Column("build_id", sa.Uuid(), nullable=True),
        sa.Column("asset_type", sa.String(50), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _fk("assets", "build_id", "builds.id", "SET NULL"),
        _fk("assets", "environment_id", "environments.id"),
        _fk("assets", "task_pk", "tasks.id"),
        _pk("assets", "id"),
        sa.UniqueConstraint(
            "task_pk", "asset_type", "name", name=op.f("uq_assets_task_pk_asset_type_name")
        ),
    )
    _index("assets", "environment_id")

    op.create_table(
        "locks",
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        _ts("acquired_at"),
        _ts("expires_at"),
        sa.Column("version", sa.Integer(), nullable=False),
        _fk("locks", "environment_id", "environments.id"),
        _pk("locks", "environment_id", "name"),
    )
    _index("locks", "environment_id", "expires_at", name="ix_locks_environment_id_expires_at")


def downgrade() -> None:
    for table in (
        "locks", "assets", "events", "task_dependencies", "tasks", "builds", "api_keys",
        "environment_events", "target_roots", "environments", "workspace_members",
        "workspaces", "user_tokens", "users",
    ):  # fmt: skip
        op.drop_table(table)
