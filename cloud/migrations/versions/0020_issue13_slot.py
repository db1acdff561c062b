"""Orders back office: refund reviews, and indexes for the order search and the refunds list

Order search pages newest first by (created_at, id), within a site or a customer when asked; orders by visit
day go through order_items.visit_date. On a big PostgreSQL table the index builds block writes to `orders`
for a few seconds: run this migration outside opening hours.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "refund_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("ticket_ids", sa.JSON(), nullable=False),
        sa.Column("entries_used", sa.JSON(), nullable=False),
        sa.Column("waive_fee", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("rule_codes", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("requested_by", sa.String(length=100), nullable=False),
        sa.Column("requested_by_staff_id", sa.Integer(), nullable=False),
        sa.Column("requested_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("decided_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.String(length=200), nullable=True),
        sa.Column("refund_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_refund_reviews_order_id_orders")),
        sa.ForeignKeyConstraint(["refund_id"], ["refunds.id"], name=op.f("fk_refund_reviews_refund_id_refunds")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refund_reviews")),
        sa.UniqueConstraint("refund_id", name=op.f("uq_refund_reviews_refund_id")),
    )
    with op.batch_alter_table("refund_reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refund_reviews_order_id"), ["order_id"], unique=False)
        batch_op.create_index("ix_refund_reviews_status_requested", ["status", "requested_at", "id"], unique=False)
    with op.batch_alter_table("order_items", schema=None) as batch_op:
        batch_op.create_index("ix_order_items_visit_date", ["visit_date"], unique=False)
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_orders_customer_created", ["customer_id", "created_at", "id"], unique=False)
        batch_op.create_index("ix_orders_site_created", ["site_id", "created_at", "id"], unique=False)
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index("ix_refunds_created_at_id", ["created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_created_at_id")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_site_created")
        batch_op.drop_index("ix_orders_customer_created")
        batch_op.drop_index("ix_orders_created_at_id")
    with op.batch_alter_table("order_items", schema=None) as batch_op:
        batch_op.drop_index("ix_order_items_visit_date")
    with op.batch_alter_table("refund_reviews", schema=None) as batch_op:
        batch_op.drop_index("ix_refund_reviews_status_requested")
        batch_op.drop_index(batch_op.f("ix_refund_reviews_order_id"))
    op.drop_table("refund_reviews")
