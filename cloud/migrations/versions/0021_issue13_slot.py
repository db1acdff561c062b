"""gate_rules (a gate's rules set from the cloud) and ticket_blocks (blocks of tickets, kept when lifted)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gate_rules",
        sa.Column("gate_id", sa.Integer(), nullable=False),
        sa.Column("allowed_kinds", sa.JSON(), nullable=False),
        sa.Column("allowed_products", sa.JSON(), nullable=True),
        sa.Column("rescan_seconds", sa.Float(), nullable=False),
        sa.Column("passback_seconds", sa.Float(), nullable=False),
        sa.Column("daily_limit", sa.Integer(), nullable=True),
        sa.Column("emergency_open", sa.Boolean(), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("feed_seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["gate_id"], ["gates.id"]),
        sa.PrimaryKeyConstraint("gate_id"),
    )
    op.create_table(
        "ticket_blocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("previous_status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("blocked_by", sa.String(length=100), nullable=False),
        sa.Column("blocked_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("lift_reason", sa.String(length=200), nullable=True),
        sa.Column("lifted_by", sa.String(length=100), nullable=True),
        sa.Column("lifted_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ticket_blocks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ticket_blocks_ticket_id"), ["ticket_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ticket_blocks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_blocks_ticket_id"))
    op.drop_table("ticket_blocks")
    op.drop_table("gate_rules")
