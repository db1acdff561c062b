"""Staff sessions and points rules: staff.session_epoch and login bookkeeping, staff_refresh_tokens, points_rules,
staff_login_failures (the sign-in slow-down's count per username and client address)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_epoch", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("sessions_ended_at", cloud.db.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_login_at", cloud.db.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_failed_login_at", cloud.db.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "staff_refresh_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("session_epoch", sa.Integer(), nullable=False),
        sa.Column("issued_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("staff_refresh_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_refresh_tokens_family"), ["family"], unique=False)
        batch_op.create_index(batch_op.f("ix_staff_refresh_tokens_staff_id"), ["staff_id"], unique=False)
    op.create_table(
        "staff_login_failures",
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("last_failed_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("locked_audited", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"]),
        sa.PrimaryKeyConstraint("staff_id", "client"),
    )
    op.create_table(
        "points_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("points_per_yuan", sa.Integer(), nullable=False),
        sa.Column("signin_points", sa.Integer(), nullable=False),
        sa.Column("signin_streak_bonus", sa.Integer(), nullable=False),
        sa.Column("changed_by", sa.String(length=100), nullable=False),
        sa.Column("changed_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("points_rules")
    op.drop_table("staff_login_failures")
    with op.batch_alter_table("staff_refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_refresh_tokens_staff_id"))
        batch_op.drop_index(batch_op.f("ix_staff_refresh_tokens_family"))
    op.drop_table("staff_refresh_tokens")
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.drop_column("failed_logins")
        batch_op.drop_column("last_failed_login_at")
        batch_op.drop_column("last_login_at")
        batch_op.drop_column("sessions_ended_at")
        batch_op.drop_column("session_epoch")
