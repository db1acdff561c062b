"""gate status checksum

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 13:02:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gate_status", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checksum", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("checksum_seq", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gate_status", schema=None) as batch_op:
        batch_op.drop_column("checksum_seq")
        batch_op.drop_column("checksum")
