"""Receipts of applied write batches (the ``batch-v1`` extension): a retried batch is
answered from its receipt instead of being applied twice.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batch_receipts",
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("build_id", sa.Uuid(), nullable=False),
        sa.Column("op_count", sa.Integer(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name=op.f("fk_batch_receipts_build_id_builds"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"], ["environments.id"],
            name=op.f("fk_batch_receipts_environment_id_environments"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", "batch_id", name=op.f("pk_batch_receipts")),
    )  # fmt: skip
    op.create_index(
        op.f("ix_batch_receipts_build_id"), "batch_receipts", ["build_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_batch_receipts_build_id"), table_name="batch_receipts")
    op.drop_table("batch_receipts")
