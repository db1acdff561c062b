"""quarantined events

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00

Passage events a gate sent that cannot be true (another site's or gate's, a gate not registered,
another site's ticket, a time out of bounds) are kept here as evidence instead of being applied.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quarantined_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("gate_code", sa.String(length=32), nullable=False),
        sa.Column("topic", sa.String(length=120), nullable=False),
        sa.Column("received_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_quarantined_events_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantined_events")),
        sa.UniqueConstraint(
            "event_id", "site_code", "gate_code", name=op.f("uq_quarantined_events_event_id_site_code_gate_code")
        ),
    )
    with op.batch_alter_table("quarantined_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quarantined_events_event_id"), ["event_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_quarantined_events_reason"), ["reason"], unique=False)
        batch_op.create_index(batch_op.f("ix_quarantined_events_site_id"), ["site_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("quarantined_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantined_events_site_id"))
        batch_op.drop_index(batch_op.f("ix_quarantined_events_reason"))
        batch_op.drop_index(batch_op.f("ix_quarantined_events_event_id"))
    op.drop_table("quarantined_events")
