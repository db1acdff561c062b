"""gate_passages.product_id: the product of the passage's ticket, stored with it (entries per product by day)

Passages stored before this revision get theirs from their tickets here, once.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-04 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gate_passages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("product_id", sa.Integer(), nullable=True))
    # Only ticket ids that are numbers name the cloud's tickets; matched through the tickets' primary key.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE gate_passages g SET product_id = t.product_id FROM tickets t"
            " WHERE g.ticket_id ~ '^[0-9]{1,18}$' AND t.id = g.ticket_id::bigint AND t.site_id = g.site_id"
        )
    else:
        op.execute(
            "UPDATE gate_passages SET product_id = (SELECT t.product_id FROM tickets t"
            " WHERE t.id = CAST(gate_passages.ticket_id AS INTEGER) AND t.site_id = gate_passages.site_id)"
            " WHERE ticket_id != '' AND ticket_id NOT GLOB '*[^0-9]*' AND length(ticket_id) <= 18"
        )


def downgrade() -> None:
    with op.batch_alter_table("gate_passages", schema=None) as batch_op:
        batch_op.drop_column("product_id")
