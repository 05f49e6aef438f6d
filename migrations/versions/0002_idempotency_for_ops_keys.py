"""idempotency records of ops keys: tenant_id may be null

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.alter_column("tenant_id", existing_type=sa.String(length=40), nullable=True)


def downgrade() -> None:
    # Records of ops keys cannot be kept under a non-null tenant: they are only replays, drop them.
    op.execute("DELETE FROM idempotency_records WHERE tenant_id IS NULL")
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.alter_column("tenant_id", existing_type=sa.String(length=40), nullable=False)
