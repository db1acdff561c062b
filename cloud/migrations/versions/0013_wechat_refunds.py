"""wechat refunds: a refund paid back through WeChat Pay keeps its payment, our refund number, WeChat's refund
id, its attempts, when to send or ask again, its last error and when the money arrived

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = cloud.db.UtcDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("payment_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("out_refund_no", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("provider_refund_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("next_attempt_at", UTC, nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("settled_at", UTC, nullable=True))
        batch_op.create_index(batch_op.f("ix_refunds_payment_id"), ["payment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_refunds_next_attempt_at"), ["next_attempt_at"], unique=False)
        batch_op.create_unique_constraint(batch_op.f("uq_refunds_out_refund_no"), ["out_refund_no"])
        batch_op.create_foreign_key(batch_op.f("fk_refunds_payment_id_payments"), "payments", ["payment_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_refunds_payment_id_payments"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("uq_refunds_out_refund_no"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_refunds_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_refunds_payment_id"))
        for column in (
            "settled_at",
            "last_error",
            "next_attempt_at",
            "attempts",
            "provider_refund_id",
            "out_refund_no",
            "payment_id",
            "provider",
        ):
            batch_op.drop_column(column)
