"""verifications: what handhelds verified (核销), accepted or refused, once per handheld-made event id,
and whether it was undone, by whom and why

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 18:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "verifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("staff_name", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=512), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("ota_channel", sa.String(length=16), nullable=True),
        sa.Column("at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("received_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("entries_left", sa.Integer(), nullable=True),
        sa.Column("undone_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("undone_by", sa.String(length=100), nullable=True),
        sa.Column("undo_reason", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_verifications_site_id_sites")),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], name=op.f("fk_verifications_staff_id_staff")),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name=op.f("fk_verifications_ticket_id_tickets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verifications")),
        sa.UniqueConstraint("event_id", name=op.f("uq_verifications_event_id")),
    )
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_verifications_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_verifications_device"), ["device"], unique=False)
        batch_op.create_index(batch_op.f("ix_verifications_site_id"), ["site_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_verifications_staff_id"), ["staff_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_verifications_ticket_id"), ["ticket_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_verifications_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_verifications_staff_id"))
        batch_op.drop_index(batch_op.f("ix_verifications_site_id"))
        batch_op.drop_index(batch_op.f("ix_verifications_device"))
        batch_op.drop_index(batch_op.f("ix_verifications_at"))

    op.drop_table("verifications")
