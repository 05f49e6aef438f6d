"""previews: what a preview is painted with (mode, requested_mode, adapter_version)

`requested_mode` is what the client asked for (`auto`, `adapter`, `zero_shot`); `mode` what the
preview was or will be painted with (`adapter`, `zero_shot`), fixed by the worker when it paints;
`adapter_version` the subject's adapter version it was painted with (null for zero-shot). Previews
made before this revision could only be painted with an adapter: both modes default to `adapter`
for them (a server default, so the columns can be NOT NULL at once), and their adapter version is
unknown (null).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("previews", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("requested_mode", sa.String(length=16), server_default="adapter", nullable=False)
        )
        batch_op.add_column(sa.Column("mode", sa.String(length=16), server_default="adapter", nullable=False))
        batch_op.add_column(sa.Column("adapter_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("previews", schema=None) as batch_op:
        batch_op.drop_column("adapter_version")
        batch_op.drop_column("mode")
        batch_op.drop_column("requested_mode")
