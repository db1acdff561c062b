"""Issue 13 slot: orders back office (refund review, search indexes).

A no-op until filled; keeps the revision chain whole.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03 22:20:00
"""

from collections.abc import Sequence

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
