"""jobs and webhook_deliveries: an index on (status, updated_at) for the history sweep

Every worker's reconciler pass deletes the oldest ended job rows of deleted previews and subjects,
and the oldest settled webhook deliveries (core.retention.forget_old_history); without these
indexes each pass scans both tables whole.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_jobs_status_updated_at", "jobs"),
    ("ix_webhook_deliveries_status_updated_at", "webhook_deliveries"),
)


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        for name, table in INDEXES:
            op.create_index(name, table, ["status", "updated_at"])
        return
    # CONCURRENTLY: both tables keep taking rows while the indexes are built; it cannot run inside
    # a transaction
    with op.get_context().autocommit_block():
        for name, table in INDEXES:
            op.create_index(name, table, ["status", "updated_at"], postgresql_concurrently=True)


def downgrade() -> None:
    for name, table in INDEXES:
        op.drop_index(name, table_name=table)
