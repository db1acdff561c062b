"""Issue 13 slot: staff and points (refresh tokens, login audit, points rules).

A no-op until filled; keeps the revision chain whole.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03 22:20:00
"""

from collections.abc import Sequence

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
