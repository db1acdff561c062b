"""ticket code: the plain code (an OTA voucher) a gate finds a ticket by, unique per site

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("code", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_tickets_site_id_code"), ["site_id", "code"])


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_tickets_site_id_code"), type_="unique")
        batch_op.drop_column("code")
