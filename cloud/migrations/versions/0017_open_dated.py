"""order_items.last_day: open-dated vouchers (an OTA's undated 团购 voucher), valid from the visit date through it

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 19:43:24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_day", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("order_items", schema=None) as batch_op:
        batch_op.drop_column("last_day")
