from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloud.db import Base, UtcDateTime, utcnow


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    ISSUED = "issued"
    USED = "used"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# The only legal moves; anything else is refused with `illegal_transition`.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.CANCELLED, OrderStatus.EXPIRED}),
    OrderStatus.PAID: frozenset({OrderStatus.ISSUED, OrderStatus.REFUNDED}),
    OrderStatus.ISSUED: frozenset({OrderStatus.USED, OrderStatus.REFUNDED}),
    OrderStatus.USED: frozenset(),
    OrderStatus.REFUNDED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}


class OrderKind(StrEnum):
    """What an order sells. Every kind goes through the same order, payment, refund and points machinery;
    what paying or giving up an order means is its domain's (`cloud.fulfilment`)."""

    TICKET = "ticket"  # tickets and passes: items are order_items, issued as signed tickets
    RENTAL = "rental"  # skis, boards, boots ... (cloud/rentals): lines and a deposit inside total_fen
    LESSON = "lesson"  # a private lesson slot or a seat in a group class (cloud/lessons)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("idempotency_scope", "idempotency_key"),
        UniqueConstraint("ota_channel", "ota_order_ref"),
        # The back office's order search pages newest first (cloud/orders/search.py, migration 0020).
        Index("ix_orders_created_at_id", "created_at", "id"),
        Index("ix_orders_site_created", "site_id", "created_at", "id"),
        Index("ix_orders_customer_created", "customer_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # online | counter | ota
    kind: Mapped[str] = mapped_column(String(8), default=OrderKind.TICKET.value, server_default="ticket")
    # The refundable deposit inside total_fen (a rental's): it earns no points and is paid back on return.
    deposit_fen: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ota_channel: Mapped[str | None] = mapped_column(String(16))
    ota_order_ref: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.PENDING.value, index=True)
    total_fen: Mapped[int] = mapped_column(Integer)
    idempotency_scope: Mapped[str | None] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    items: Mapped[list[OrderItem]] = relationship(back_populates="order", lazy="selectin", order_by="OrderItem.id")


class OrderItem(Base):
    __tablename__ = "order_items"
    __table_args__ = (Index("ix_order_items_visit_date", "visit_date"),)  # order search by visit day (0020)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    visit_date: Mapped[date] = mapped_column(Date)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_fen: Mapped[int] = mapped_column(Integer)
    holder_id: Mapped[int | None] = mapped_column(ForeignKey("holders.id"))
    # An open-dated voucher (an OTA's undated 团购 voucher): valid from visit_date through this day, refundable
    # until the product's cutoff before it. None: an ordinary ticket for visit_date.
    last_day: Mapped[date | None] = mapped_column(Date)

    order: Mapped[Order] = relationship(back_populates="items")
