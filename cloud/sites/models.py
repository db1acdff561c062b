from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Bumped (cloud.products.catalog.bump) in the transaction of any change to what the site sells: its
    # products, prices, price changes, holidays. A process's cached catalog of the site is good while equal.
    catalog_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Gate(Base):
    __tablename__ = "gates"
    __table_args__ = (UniqueConstraint("site_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))
    direction: Mapped[str] = mapped_column(String(3), default="in")
    secret_hash: Mapped[str] = mapped_column(String(200))
    # The same secret hashed the way Mosquitto checks it ($7$ PBKDF2-SHA512), for the broker's password file.
    mqtt_hash: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    @property
    def username(self) -> str:
        return f"gate-{self.id}"


class GateRules(Base):
    """The cloud's rules for one gate (`cloud.sites.gate_rules`), over its YAML file's; none: the file's."""

    __tablename__ = "gate_rules"

    gate_id: Mapped[int] = mapped_column(ForeignKey("gates.id"), primary_key=True)
    allowed_kinds: Mapped[list[str]] = mapped_column(JSON)
    allowed_products: Mapped[list[int] | None] = mapped_column(JSON)  # product ids; None: every product
    rescan_seconds: Mapped[float] = mapped_column(Float)
    passback_seconds: Mapped[float] = mapped_column(Float)
    daily_limit: Mapped[int | None] = mapped_column(Integer)
    emergency_open: Mapped[bool] = mapped_column(Boolean)
    updated_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    feed_seq: Mapped[int] = mapped_column(Integer)  # the change of the site's feed that carried them
