"""Tables of this domain: refunds with their tickets, and the revocation feed sync carries to the gates."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloud.db import Base, UtcDateTime, utcnow


class RefundStatus(StrEnum):
    SUCCEEDED = "succeeded"  # money handed back at the window
    PENDING_PROVIDER = "pending_provider"  # money goes back through the provider that took it (WeChat Pay, OTA)


class Refund(Base):
    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(Integer)
    fee_fen: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

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
