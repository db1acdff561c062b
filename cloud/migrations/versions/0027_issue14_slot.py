"""Issue 14 slot: coaches and lessons (教练, 教务): coaches, slots, group classes, bookings.

A no-op until filled; keeps the revision chain whole.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-04 03:40:00
"""

from collections.abc import Sequence

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
