"""Tables of the OTA channels: configuration, SKU mapping, the platform's orders and refunds as we answered
them, the messages seen (resends get the first answer), and the outbox of verify calls to the platforms."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow


class Channel(Base):
    """One platform's account, non-secret part (secrets come from the settings, see `base.ChannelAccount`)."""

    __tablename__ = "channels"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)  # douyin | meituan | ctrip | lebingxue
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    base_url: Mapped[str] = mapped_column(String(300))  # where verify calls go
    freshness_s: Mapped[int] = mapped_column(Integer, default=600)  # a message's timestamp may be this far off
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # account ids, store (poi) id ...
    updated_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ChannelSku(Base):
    """A platform SKU sold as one of our products at the channel's price (fen; None: the product's own price)."""

    __tablename__ = "channel_skus"
    __table_args__ = (UniqueConstraint("channel", "sku"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(ForeignKey("channels.code"))
    sku: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    price_fen: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ChannelOrder(Base):
    """A platform order and the order we made of it: the idempotency of order notifications."""

    __tablename__ = "channel_orders"
    __table_args__ = (UniqueConstraint("channel", "order_ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(ForeignKey("channels.code"))
    order_ref: Mapped[str] = mapped_column(String(64))  # the platform's order id
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), unique=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # platform ids the answers and calls need
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ChannelRefund(Base):
    """A platform refund request and our decision: the same request again gets the same decision."""

    __tablename__ = "channel_refunds"
    __table_args__ = (UniqueConstraint("channel", "refund_ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(ForeignKey("channels.code"))
    refund_ref: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    refund_id: Mapped[int | None] = mapped_column(ForeignKey("refunds.id"))  # our refund, when approved
    approved: Mapped[bool] = mapped_column(Boolean)
    code: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(String(300))
    ticket_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ChannelMessage(Base):
    """An authentic message seen, with the answer we gave: a resend (same fingerprint) gets that answer again;
    a nonce never comes back with another message. Swept once older than twice the channel's freshness."""

    __tablename__ = "channel_messages"
    __table_args__ = (UniqueConstraint("channel", "fingerprint"), UniqueConstraint("channel", "nonce"))

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    answer: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class ChannelCall(Base):
    """A verify call to a platform, persisted in the transaction that counted the entry: a restart loses none.

    state: pending (due at `next_at`) -> done | failing (gave up after the channel's attempts, or the platform
    refused for good; shown in the back office, `retry` makes it pending again) | cancelled (a handheld
    verification undone before the call went out)."""

    __tablename__ = "channel_calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(ForeignKey("channels.code"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="verify")
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    # "gate:<site>/<gate>:<event id>" or "handheld:<event id>"; indexed for an undo's look-up
    source: Mapped[str] = mapped_column(String(64), index=True)
    used_at: Mapped[datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(String(300))
    reply: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
