from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow


class PaymentStatus(StrEnum):
    PENDING = "pending"  # handed to a provider, waiting for the customer
    SUCCEEDED = "succeeded"  # money arrived and paid the order
    LATE = "late"  # money arrived for an order that can no longer be paid: refund it
    FAILED = "failed"  # the provider reported the attempt failed


class Payment(Base):
    __tablename__ = "payments"
    # A provider's transaction is recorded once, however often the provider tells us about it.
    # And an order is paid once: a second success (two cashiers, a double notification) fails to insert.
    __table_args__ = (
        UniqueConstraint("provider", "provider_ref"),
        Index(
            "uq_payments_one_success_per_order",
            "order_id",
            unique=True,
            sqlite_where=text("status = 'succeeded'"),
            postgresql_where=text("status = 'succeeded'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))  # counter | wechat
    method: Mapped[str] = mapped_column(String(16))  # cash | card | jsapi
    status: Mapped[str] = mapped_column(String(16), default=PaymentStatus.PENDING.value, index=True)
    amount_fen: Mapped[int] = mapped_column(Integer)
    provider_ref: Mapped[str | None] = mapped_column(String(64))  # WeChat transaction_id
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    recorded_by: Mapped[str] = mapped_column(String(100))


class SeenNotifyNonce(Base):
    """Nonces of verified provider notifications, kept for the replay window: the same nonce twice is refused."""

    __tablename__ = "payment_notify_nonces"
    __table_args__ = (UniqueConstraint("provider", "nonce"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    nonce: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
