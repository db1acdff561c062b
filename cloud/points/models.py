"""The points ledger and daily sign-ins. There is no balance column: the balance is the last entry's."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow


class PointsKind(StrEnum):
    EARN = "earn"  # ref order:{id}
    SIGNIN = "signin"  # ref signin:{day}
    SPEND = "spend"  # ref chosen by the caller
    REVERSE = "reverse"  # ref refund:{id}
    ADJUST = "adjust"  # ref adjust:{uuid}


class PointsEntry(Base):
    """One append-only line of a customer's ledger; `seq` counts 1, 2, 3... per customer."""

    __tablename__ = "points_entries"
    __table_args__ = (
        # Two concurrent appends read the same last entry; the second collides here and retries.
        UniqueConstraint("customer_id", "seq"),
        # The same earning, sign-in, spend or reversal is never booked twice.
        UniqueConstraint("customer_id", "kind", "ref"),
        CheckConstraint("balance_after >= 0", name="balance_not_negative"),
        CheckConstraint("seq >= 1", name="seq_positive"),
        CheckConstraint("shortfall >= 0", name="shortfall_not_negative"),
        CheckConstraint("kind IN ('earn', 'signin', 'spend', 'reverse', 'adjust')", name="kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))  # indexed by the unique keys
    seq: Mapped[int] = mapped_column(Integer)
    delta: Mapped[int] = mapped_column(Integer)
    balance_after: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(64))
    # earn and reverse entries name their order, so partial refunds never reverse more than was earned
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    # a reversal the customer's balance could not cover (points already spent): booked down to 0 only
    shortfall: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SignIn(Base):
    """每日签到: one per customer and local day, with the streak of consecutive days it completes."""

    __tablename__ = "signins"
    __table_args__ = (UniqueConstraint("customer_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))  # indexed by the unique keys
    day: Mapped[date] = mapped_column(Date)
    streak: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PointsRules(Base):
    """The points rules, one row per version (an admin's change adds a row); the newest row is in force.

    Without any row the settings' `points_per_yuan`, `signin_points` and `signin_streak_bonus` apply."""

    __tablename__ = "points_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    points_per_yuan: Mapped[int] = mapped_column(Integer)
    signin_points: Mapped[int] = mapped_column(Integer)
    signin_streak_bonus: Mapped[int] = mapped_column(Integer)
    changed_by: Mapped[str] = mapped_column(String(100))
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
