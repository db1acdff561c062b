"""Rental tables: items (with counted stock or tagged assets), rental orders, their lines and each movement.

Reports read these directly: `rental_lines.due_at` / `handed_out_at` / `returned_at` and the per-line counts
(`quantity`, `out_qty`, `returned_qty`, `lost_qty`; units still with the customer = out - returned - lost)
say what is out and overdue; `rental_orders` carries the deposit's outcome (charges, refund, owed).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow


class Tracking(StrEnum):
    COUNTED = "counted"  # a quantity on the shelf (helmets, gloves): stock counted per site
    TAGGED = "tagged"  # one row per physical pair with a QR or RFID tag (skis, boards)


class AssetStatus(StrEnum):
    AVAILABLE = "available"
    OUT = "out"
    DAMAGED = "damaged"
    LOST = "lost"
    RETIRED = "retired"


class RentalStatus(StrEnum):
    PENDING = "pending"  # ordered, not paid yet (its units are held)
    READY = "ready"  # paid, waiting at the desk for pick-up
    OUT = "out"  # at least one unit is with the customer
    CLOSED = "closed"  # everything back or declared lost; the deposit settled
    CANCELLED = "cancelled"  # given up unpaid (cancelled, expired, unfulfillable)


class RentalItem(Base):
    """Something the desk rents out: a category and size, prices per hour and per day by day type, fees."""

    __tablename__ = "rental_items"
    __table_args__ = (UniqueConstraint("site_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(16))  # skis | snowboard | boots | helmet | clothing | ...
    size: Mapped[str] = mapped_column(String(16), default="")  # "170cm", "MP27.5", "EU42", "M"
    tracking: Mapped[str] = mapped_column(String(8))  # Tracking
    # Counted: units owned. Tagged: assets in service (not lost or retired).
    stock: Mapped[int] = mapped_column(Integer, default=0)
    # Units free to promise: on the shelf and not held by an unreturned order (never below 0).
    available: Mapped[int] = mapped_column(Integer, default=0)
    hour_weekday_fen: Mapped[int] = mapped_column(Integer)
    hour_weekend_fen: Mapped[int] = mapped_column(Integer)
    hour_holiday_fen: Mapped[int] = mapped_column(Integer)
    day_weekday_fen: Mapped[int] = mapped_column(Integer)
    day_weekend_fen: Mapped[int] = mapped_column(Integer)
    day_holiday_fen: Mapped[int] = mapped_column(Integer)
    deposit_fen: Mapped[int] = mapped_column(Integer)  # per unit
    damage_fee_fen: Mapped[int] = mapped_column(Integer, default=0)  # the usual repair charge per unit
    loss_fee_fen: Mapped[int] = mapped_column(Integer, default=0)  # replacement value per unit
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class RentalAsset(Base):
    """One physical pair of a tagged item; `line_id` is the rental line it is out on."""

    __tablename__ = "rental_assets"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("rental_items.id"), index=True)
    tag: Mapped[str] = mapped_column(String(64), unique=True)  # QR or RFID text, unique across sites
    status: Mapped[str] = mapped_column(String(10), default=AssetStatus.AVAILABLE.value, index=True)
    line_id: Mapped[int | None] = mapped_column(ForeignKey("rental_lines.id"), index=True)
    note: Mapped[str] = mapped_column(String(200), default="")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class RentalOrder(Base):
    """The rental side of an `Order` (kind rental): who, its state at the desk and how the deposit ended."""

    __tablename__ = "rental_orders"
    __table_args__ = (Index("ix_rental_orders_site_status", "site_id", "status"),)

    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    phone: Mapped[str] = mapped_column(String(20), default="", index=True)
    name: Mapped[str] = mapped_column(String(50), default="")
    status: Mapped[str] = mapped_column(String(10), default=RentalStatus.PENDING.value)
    rent_fen: Mapped[int] = mapped_column(Integer, default=0)
    deposit_fen: Mapped[int] = mapped_column(Integer, default=0)
    charges_fen: Mapped[int] = mapped_column(Integer, default=0)  # overtime + damage + loss so far
    deposit_refund_fen: Mapped[int | None] = mapped_column(Integer)  # set when closed
    owed_fen: Mapped[int] = mapped_column(Integer, default=0)  # charges beyond the deposit, still to collect
    refund_id: Mapped[int | None] = mapped_column(ForeignKey("refunds.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RentalLine(Base):
    """Units of one item for a period (hours or days from start_at to due_at) and how many went out and back."""

    __tablename__ = "rental_lines"
    __table_args__ = (Index("ix_rental_lines_due_at", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("rental_items.id"), index=True)
    quantity: Mapped[int] = mapped_column(Integer)
    period_unit: Mapped[str] = mapped_column(String(4))  # hour | day
    periods: Mapped[int] = mapped_column(Integer)
    day_type: Mapped[str] = mapped_column(String(8))  # weekday | weekend | holiday of start_at's local day
    start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    unit_price_fen: Mapped[int] = mapped_column(Integer)  # one unit for one period
    hour_fen: Mapped[int] = mapped_column(Integer)  # the hourly price of that day type: overtime
    price_fen: Mapped[int] = mapped_column(Integer)  # rent of the line
    deposit_fen: Mapped[int] = mapped_column(Integer)  # deposit of the line
    out_qty: Mapped[int] = mapped_column(Integer, default=0)
    returned_qty: Mapped[int] = mapped_column(Integer, default=0)
    lost_qty: Mapped[int] = mapped_column(Integer, default=0)
    charges_fen: Mapped[int] = mapped_column(Integer, default=0)
    handed_out_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # first unit out
    returned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the last unit back (or lost)


class RentalMovement(Base):
    """One hand-out or return at the desk: an asset or a quantity, with what it cost the customer."""

    __tablename__ = "rental_movements"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("rental_lines.id"), index=True)
    asset_id: Mapped[int | None] = mapped_column(ForeignKey("rental_assets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # out | back | damaged | lost
    quantity: Mapped[int] = mapped_column(Integer)
    overtime_fen: Mapped[int] = mapped_column(Integer, default=0)
    damage_fen: Mapped[int] = mapped_column(Integer, default=0)
    loss_fen: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    by: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(String(200), default="")
