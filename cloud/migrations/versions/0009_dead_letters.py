"""dead letters

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00

What gates send that the cloud refuses unread (malformed, over its bounds, a status naming another
gate, a message on a gate topic that is neither events nor status) is kept here, raw, and its event
ids acknowledged as refused, instead of being logged and left for the gate to resend for ever.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("gate_code", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=200), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("received_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_received_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("times", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_dead_letters_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint(
            "site_code", "gate_code", "fingerprint", name=op.f("uq_dead_letters_site_code_gate_code_fingerprint")
        ),
    )
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dead_letters_event_id"), ["event_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dead_letters_reason"), ["reason"], unique=False)
        batch_op.create_index(batch_op.f("ix_dead_letters_site_id"), ["site_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letters_site_id"))
        batch_op.drop_index(batch_op.f("ix_dead_letters_reason"))
        batch_op.drop_index(batch_op.f("ix_dead_letters_event_id"))
    op.drop_table("dead_letters")
