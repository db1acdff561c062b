"""feed epoch

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 14:15:00

Existing feeds get the epoch "" (a name like any other). Restoring a backup older than a feed
change is the operator's cue to give the restored feeds a new epoch
(`UPDATE site_feed_heads SET epoch = <random hex>`), which sends every gate to a snapshot.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("site_feed_heads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("epoch", sa.String(length=32), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("site_feed_heads", schema=None) as batch_op:
        batch_op.drop_column("epoch")
