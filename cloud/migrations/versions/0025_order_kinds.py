"""orders.kind (ticket | rental | lesson) and orders.deposit_fen (a rental's deposit, inside total_fen)

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=8), server_default="ticket", nullable=False))
        batch_op.add_column(sa.Column("deposit_fen", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("deposit_fen")
        batch_op.drop_column("kind")
