"""Target roots get fsspec storage options (a JSON object, NULL for none).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("target_roots") as batch:
        batch.add_column(sa.Column("storage_options", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("target_roots") as batch:
        batch.drop_column("storage_options")
