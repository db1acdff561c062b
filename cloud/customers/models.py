from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow


class Customer(Base):
    """An account keyed by phone or WeChat openid; orders, passes and points belong to it."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)
    wechat_openid: Mapped[str | None] = mapped_column(String(64), unique=True)
    nickname: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Holder(Base):
    """A named person a pass is bound to (real-name pass), one customer's personal record.

    Ids stay sequential integers (they travel to the gates inside tickets), but they are no handle on
    anyone else's data: an order may name only a holder of its own customer, for every product, and
    another customer's holder gets exactly the answer a holder that does not exist gets (404
    `holder_not_found`); holders are listed only to their own customer. What a sequential id still tells
    is how many holders exist, which is not personal data.
    """

    __tablename__ = "holders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    id_number_last4: Mapped[str] = mapped_column(String(4), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
