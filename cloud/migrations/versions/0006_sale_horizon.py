"""product sale horizon

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 10:00:00

Visit dates are on sale up to `sale_horizon_days` ahead (existing products: 90 days).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sale_horizon_days", sa.Integer(), server_default="90", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_column("sale_horizon_days")
