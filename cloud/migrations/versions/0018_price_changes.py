"""price_changes (调价 with history) and sites.catalog_version (cached catalogs know when they are stale)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "price_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("effective_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("weekday_price_fen", sa.Integer(), nullable=False),
        sa.Column("weekend_price_fen", sa.Integer(), nullable=False),
        sa.Column("holiday_price_fen", sa.Integer(), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("withdrawn_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("price_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_price_changes_product_id"), ["product_id"], unique=False)
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("catalog_version", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("catalog_version")
    with op.batch_alter_table("price_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_price_changes_product_id"))
    op.drop_table("price_changes")
