"""Events and task dependencies keep their environment's id without a foreign key: the
build's and the tasks' foreign keys delete them with their build or tasks, and a check
of the environment's row for every row written was the database's largest cost per
batch under concurrent builds (``Event.environment_id`` in ``models.py``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("events", "task_dependencies")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_environment_id_environments", type_="foreignkey")


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(
                f"fk_{table}_environment_id_environments",
                "environments",
                ["environment_id"],
                ["id"],
                ondelete="CASCADE",
            )
