"""Issue 13, products back office: ticket_layouts (电子票/纸质票设置) and who withdrew a price change.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ticket_layouts",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("e_ticket", sa.JSON(), nullable=False),
        sa.Column("paper", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("site_id"),
    )
    with op.batch_alter_table("price_changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("withdrawn_by", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("price_changes", schema=None) as batch_op:
        batch_op.drop_column("withdrawn_by")
    op.drop_table("ticket_layouts")
