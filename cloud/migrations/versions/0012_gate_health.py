"""gate health: each gate's last reported health (devices, backlog, disk) and each site's last ticket-set checksum

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-17 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = cloud.db.UtcDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("gate_status", schema=None) as batch_op:
        batch_op.add_column(sa.Column("health", sa.JSON(), nullable=True))
    op.create_table(
        "site_checksums",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_site_checksums_site_id_sites")),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_site_checksums")),
    )


def downgrade() -> None:
    op.drop_table("site_checksums")
    with op.batch_alter_table("gate_status", schema=None) as batch_op:
        batch_op.drop_column("health")
