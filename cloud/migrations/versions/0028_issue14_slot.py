"""reports (报表): cash-ups and their lines; indexes the report queries need on passages, orders, payments, refunds

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-04 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cash_ups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("opened_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_cash_ups_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cash_ups")),
        sa.UniqueConstraint("site_id", "actor", "opened_at", name=op.f("uq_cash_ups_site_id_actor_opened_at")),
    )
    with op.batch_alter_table("cash_ups", schema=None) as batch_op:
        batch_op.create_index("ix_cash_ups_site_closed", ["site_id", "closed_at"], unique=False)

    op.create_table(
        "cash_up_lines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cash_up_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("takings_fen", sa.Integer(), nullable=False),
        sa.Column("refunds_fen", sa.Integer(), nullable=False),
        sa.Column("counted_fen", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["cash_up_id"], ["cash_ups.id"], name=op.f("fk_cash_up_lines_cash_up_id_cash_ups")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cash_up_lines")),
        sa.UniqueConstraint("cash_up_id", "method", name=op.f("uq_cash_up_lines_cash_up_id_method")),
    )
    with op.batch_alter_table("gate_passages", schema=None) as batch_op:
        batch_op.create_index("ix_gate_passages_site_at", ["site_id", "at"], unique=False)
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_site_paid", ["site_id", "paid_at"], unique=False)
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index("ix_payments_recorded_paid", ["recorded_by", "paid_at"], unique=False)
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index("ix_refunds_created_by_at", ["created_by", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_created_by_at")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_recorded_paid")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_site_paid")
    with op.batch_alter_table("gate_passages", schema=None) as batch_op:
        batch_op.drop_index("ix_gate_passages_site_at")
    op.drop_table("cash_up_lines")
    with op.batch_alter_table("cash_ups", schema=None) as batch_op:
        batch_op.drop_index("ix_cash_ups_site_closed")
    op.drop_table("cash_ups")
