"""workers: each worker process's heartbeat (queues, current model, adapter cache, GPU memory)

Written by the worker itself every few seconds (worker.heartbeat) and read by `/v1/ops/workers`
and the ops gauges; rows of workers gone for a while are deleted by the reconciler.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.tables

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    utc = core.tables.UTCDateTime(timezone=True)
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("base_model", sa.String(length=300), nullable=True),
        sa.Column("adapter_cache_hits", sa.BigInteger(), nullable=False),
        sa.Column("adapter_cache_misses", sa.BigInteger(), nullable=False),
        sa.Column("adapter_swap_seconds_mean", sa.Float(), nullable=True),
        sa.Column("gpu_memory_used_bytes", sa.BigInteger(), nullable=True),
        sa.Column("gpu_memory_total_bytes", sa.BigInteger(), nullable=True),
        sa.Column("started_at", utc, nullable=False),
        sa.Column("last_seen", utc, nullable=False),
        sa.Column("online_until", utc, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_workers")),
    )
    op.create_index("ix_workers_last_seen", "workers", ["last_seen"])


def downgrade() -> None:
    op.drop_index("ix_workers_last_seen", table_name="workers")
    op.drop_table("workers")
