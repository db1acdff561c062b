"""face admission: consent, sealed templates, each site's gallery, deletions confirmed per gate, and the
distance of a passage admitted by face

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = cloud.db.UtcDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("gate_passages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("face_distance", sa.Float(), nullable=True))
    op.create_table(
        "face_consents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("holder_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("text_version", sa.String(length=32), nullable=False),
        sa.Column("given_by", sa.String(length=100), nullable=False),
        sa.Column("given_at", UTC, nullable=False),
        sa.Column("withdrawn_at", UTC, nullable=True),
        sa.Column("withdrawn_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["holder_id"], ["holders.id"], name=op.f("fk_face_consents_holder_id_holders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_face_consents")),
    )
    op.create_index(op.f("ix_face_consents_holder_id"), "face_consents", ["holder_id"], unique=False)
    op.create_table(
        "face_templates",
        sa.Column("holder_id", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("photo_sealed", sa.Text(), nullable=True),
        sa.Column("face_px", sa.Integer(), nullable=False),
        sa.Column("enrolled_at", UTC, nullable=False),
        sa.Column("enrolled_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["holder_id"], ["holders.id"], name=op.f("fk_face_templates_holder_id_holders")),
        sa.PrimaryKeyConstraint("holder_id", name=op.f("pk_face_templates")),
    )
    op.create_table(
        "face_site_settings",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("keep_photos", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_face_site_settings_site_id_sites")),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_face_site_settings")),
    )
    op.create_table(
        "face_gallery",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.String(length=64), nullable=False),
        sa.Column("holder_id", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("since", UTC, nullable=False),
        sa.ForeignKeyConstraint(["holder_id"], ["holders.id"], name=op.f("fk_face_gallery_holder_id_holders")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_face_gallery_site_id_sites")),
        sa.PrimaryKeyConstraint("site_id", "ticket_id", name=op.f("pk_face_gallery")),
        sa.UniqueConstraint("site_id", "holder_id", name=op.f("uq_face_gallery_site_id_holder_id")),
    )
    op.create_index(op.f("ix_face_gallery_holder_id"), "face_gallery", ["holder_id"], unique=False)
    op.create_table(
        "face_feed_upserts",
        sa.Column("feed_change_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["feed_change_id"], ["feed_changes.id"], name=op.f("fk_face_feed_upserts_feed_change_id_feed_changes")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_face_feed_upserts_site_id_sites")),
        sa.PrimaryKeyConstraint("feed_change_id", name=op.f("pk_face_feed_upserts")),
    )
    op.create_index(op.f("ix_face_feed_upserts_ticket_id"), "face_feed_upserts", ["ticket_id"], unique=False)
    op.create_table(
        "face_deletions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.String(length=64), nullable=False),
        sa.Column("holder_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("requested_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["holder_id"], ["holders.id"], name=op.f("fk_face_deletions_holder_id_holders")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_face_deletions_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_face_deletions")),
    )
    op.create_index(op.f("ix_face_deletions_holder_id"), "face_deletions", ["holder_id"], unique=False)
    op.create_index(op.f("ix_face_deletions_seq"), "face_deletions", ["seq"], unique=False)
    op.create_index(op.f("ix_face_deletions_site_id"), "face_deletions", ["site_id"], unique=False)
    op.create_table(
        "face_deletion_confirmations",
        sa.Column("deletion_id", sa.Integer(), nullable=False),
        sa.Column("gate_id", sa.Integer(), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["deletion_id"],
            ["face_deletions.id"],
            name=op.f("fk_face_deletion_confirmations_deletion_id_face_deletions"),
        ),
        sa.ForeignKeyConstraint(["gate_id"], ["gates.id"], name=op.f("fk_face_deletion_confirmations_gate_id_gates")),
        sa.PrimaryKeyConstraint("deletion_id", "gate_id", name=op.f("pk_face_deletion_confirmations")),
    )


def downgrade() -> None:
    op.drop_table("face_deletion_confirmations")
    op.drop_index(op.f("ix_face_deletions_site_id"), table_name="face_deletions")
    op.drop_index(op.f("ix_face_deletions_seq"), table_name="face_deletions")
    op.drop_index(op.f("ix_face_deletions_holder_id"), table_name="face_deletions")
    op.drop_table("face_deletions")
    op.drop_index(op.f("ix_face_feed_upserts_ticket_id"), table_name="face_feed_upserts")
    op.drop_table("face_feed_upserts")
    op.drop_index(op.f("ix_face_gallery_holder_id"), table_name="face_gallery")
    op.drop_table("face_gallery")
    op.drop_table("face_site_settings")
    op.drop_table("face_templates")
    op.drop_index(op.f("ix_face_consents_holder_id"), table_name="face_consents")
    op.drop_table("face_consents")
    with op.batch_alter_table("gate_passages", schema=None) as batch_op:
        batch_op.drop_column("face_distance")
