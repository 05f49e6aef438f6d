"""previews: an index on (status, updated_at) for the retention sweep

Every worker's reconciler pass asks for the oldest finished previews (core.retention); without
the index that is a scan of every preview ever made, every few seconds, in every worker.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        op.create_index("ix_previews_status_updated_at", "previews", ["status", "updated_at"])
        return
    # CONCURRENTLY: a large previews table keeps taking new previews while the index is built; it
    # cannot run inside a transaction
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_previews_status_updated_at",
            "previews",
            ["status", "updated_at"],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_index("ix_previews_status_updated_at", table_name="previews")
