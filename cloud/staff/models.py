from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow


class Staff(Base):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Access tokens carry the epoch they were issued under ("gen"); a forced logout or a password reset raises it,
    # so every older token is refused (`cloud.deps._StaffCheck`, read with active and role).
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sessions_ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_failed_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # in a row, since the last login


class RefreshToken(Base):
    """One refresh token of a sign-in (a family): only its SHA-256 is stored. Refreshing rotates it (the row gets
    `rotated_at`, a new row of the same family is issued); presenting a rotated one again revokes the family."""

    __tablename__ = "staff_refresh_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    session_epoch: Mapped[int] = mapped_column(Integer)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    client: Mapped[str] = mapped_column(String(64), default="")


class LoginFailures(Base):
    """Wrong passwords in a row for one username from one client address: the sign-in slow-down's count
    (`cloud.staff.sessions`). A sign-in from that address, or a password reset, deletes the row."""

    __tablename__ = "staff_login_failures"

    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), primary_key=True)
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    failed: Mapped[int] = mapped_column(Integer)
    last_failed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    locked_audited: Mapped[bool] = mapped_column(Boolean, default=False)  # this lock window's refusal is audited
