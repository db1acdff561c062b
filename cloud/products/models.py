from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("site_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    entries: Mapped[int | None] = mapped_column(Integer)
    window_minutes: Mapped[int | None] = mapped_column(Integer)
    valid_days: Mapped[int] = mapped_column(Integer, default=1)
    season_start: Mapped[date | None] = mapped_column(Date)
    season_end: Mapped[date | None] = mapped_column(Date)
    weekday_price_fen: Mapped[int] = mapped_column(Integer)
    weekend_price_fen: Mapped[int] = mapped_column(Integer)
    holiday_price_fen: Mapped[int] = mapped_column(Integer)
    sale_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sale_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    daily_stock: Mapped[int | None] = mapped_column(Integer)
    # Visit dates on sale: today .. today + this many days (site time zone); season-dated products: their season.
    sale_horizon_days: Mapped[int] = mapped_column(Integer, default=90, server_default="90")
    refundable: Mapped[bool] = mapped_column(Boolean, default=True)
    refund_cutoff_hours: Mapped[int] = mapped_column(Integer, default=0)
    refund_fee_fen: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Holiday(Base):
    """A public holiday (节假日) at a site: holiday prices apply."""

    __tablename__ = "holidays"
    __table_args__ = (UniqueConstraint("site_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    day: Mapped[date] = mapped_column(Date)
    name: Mapped[str] = mapped_column(String(64))


class Stock(Base):
    """Per product and visit day: how many may be sold (库存), and how many are held or sold."""

    __tablename__ = "stock"
    __table_args__ = (
        UniqueConstraint("product_id", "day"),
        CheckConstraint("sold >= 0 AND sold <= capacity", name="within_capacity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    day: Mapped[date] = mapped_column(Date)
    capacity: Mapped[int] = mapped_column(Integer)
    sold: Mapped[int] = mapped_column(Integer, default=0)


class PriceChange(Base):
    """A price change (调价): from `effective_at` on, the product sells at these prices, until a later change.

    Kept for good as the price history; one not yet in effect may be withdrawn (`withdrawn_at`), and a
    withdrawn change never applies. Before its first change a product sells at its own price columns.
    """

    __tablename__ = "price_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    effective_at: Mapped[datetime] = mapped_column(UtcDateTime)
    weekday_price_fen: Mapped[int] = mapped_column(Integer)
    weekend_price_fen: Mapped[int] = mapped_column(Integer)
    holiday_price_fen: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    withdrawn_by: Mapped[str | None] = mapped_column(String(100))


class TicketLayout(Base):
    """A site's ticket layout (电子票/纸质票设置): what the e-ticket page and the window's paper ticket show.

    Both halves are stored as validated JSON (`cloud.products.schemas.ETicketLayout`, `PaperTicketLayout`); a
    site without a row uses the defaults of those schemas.
    """

    __tablename__ = "ticket_layouts"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    e_ticket: Mapped[dict[str, Any]] = mapped_column(JSON)
    paper: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
