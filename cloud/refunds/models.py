"""Tables of this domain: refunds with their tickets, refund reviews, and the revocation feed sync carries."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloud.db import Base, UtcDateTime, utcnow


class RefundStatus(StrEnum):
    SUCCEEDED = "succeeded"  # money handed back at the window, or WeChat Pay says it arrived
    PENDING_PROVIDER = "pending_provider"  # money goes back through the provider that took it (WeChat Pay, OTA)
    PROCESSING = "processing"  # WeChat Pay accepted the refund; its result comes by notification or query
    FAILED = "failed"  # WeChat Pay refused or closed it, or we gave up sending: see last_error, retry
    ABNORMAL = "abnormal"  # the payer's account cannot receive it: handle it on the merchant platform


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (Index("ix_refunds_created_at_id", "created_at", "id"),)  # the back office's list (0020)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(Integer)
    fee_fen: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Money back through WeChat Pay (cloud/refunds/payout.py); null for refunds paid at the window or by an OTA.
    provider: Mapped[str | None] = mapped_column(String(16))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), index=True)
    out_refund_no: Mapped[str | None] = mapped_column(String(64), unique=True)  # our number, the same on every retry
    provider_refund_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(String(300))
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    items: Mapped[list[RefundItem]] = relationship(lazy="selectin", order_by="RefundItem.ticket_id")

    @property
    def ticket_ids(self) -> list[int]:
        return [item.ticket_id for item in self.items]


class RefundItem(Base):
    __tablename__ = "refund_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    refund_id: Mapped[int] = mapped_column(ForeignKey("refunds.id"), index=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), unique=True)  # a ticket is refunded once
    amount_fen: Mapped[int] = mapped_column(Integer)
    fee_fen: Mapped[int] = mapped_column(Integer)


class Revocation(Base):
    """One entry of a site's revocation feed; `id` is the feed sequence gates resume from."""

    __tablename__ = "revocations"
    # AUTOINCREMENT on SQLite: an id is never reused, so the sequence only grows.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ReviewStatus(StrEnum):
    PENDING_REVIEW = "pending_review"  # asked for; nothing revoked, no stock or money moved yet
    APPROVED = "approved"  # a second person approved it: `refund_id` is the refund it made
    DENIED = "denied"  # refused with a reason; nothing changed


class RefundReview(Base):
    """A refund the automatic rules refuse (a weather closure, a used ticket, past the cutoff), asked for by
    staff with a reason and decided by a second person (cloud/refunds/review.py)."""

    __tablename__ = "refund_reviews"
    __table_args__ = (Index("ix_refund_reviews_status_requested", "status", "requested_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    ticket_ids: Mapped[list[Any]] = mapped_column(JSON)
    # Each ticket's entries_used when asked, in ticket_ids' order: a ticket used since makes approval stale.
    entries_used: Mapped[list[Any]] = mapped_column(JSON)
    waive_fee: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(String(200))
    rule_codes: Mapped[str] = mapped_column(String(200), default="")  # why the automatic rules refuse, comma-joined
    status: Mapped[str] = mapped_column(String(20), default=ReviewStatus.PENDING_REVIEW.value)
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_by_staff_id: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    decision_reason: Mapped[str | None] = mapped_column(String(200))
    refund_id: Mapped[int | None] = mapped_column(ForeignKey("refunds.id"), unique=True)
