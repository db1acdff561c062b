"""Tables of the reports: a cashier's cash-up (交班对账) and its lines; the indexes the report queries need.

The indexes on other domains' tables are declared here (migration 0028) so those domains' files stay theirs:
an `Index` built on a table's columns attaches to that table's metadata.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloud.db import Base, UtcDateTime, utcnow
from cloud.orders.models import Order
from cloud.payments.models import Payment
from cloud.refunds.models import Refund
from cloud.sync.models import GatePassage

# Entries by site and time (a season has millions of passages; `at` alone mixes every site's).
Index("ix_gate_passages_site_at", GatePassage.site_id, GatePassage.at)
# Sales and settlement: a site's orders paid in a range.
Index("ix_orders_site_paid", Order.site_id, Order.paid_at)
# A cash-up: what one cashier took since their last cash-up; and what they paid back.
Index("ix_payments_recorded_paid", Payment.recorded_by, Payment.paid_at)
Index("ix_refunds_created_by_at", Refund.created_by, Refund.created_at)


class CashUp(Base):
    """One cashier's end-of-shift count at one site: the shift runs from their previous cash-up (or the start of
    that local day, for their first) to the moment they submit. What the system recorded is frozen in the lines
    at submission, so a later correction never changes a closed shift's figures."""

    __tablename__ = "cash_ups"
    # Two submissions of one shift at once: the second finds the same opening and fails to insert (409).
    __table_args__ = (
        UniqueConstraint("site_id", "actor", "opened_at"),
        Index("ix_cash_ups_site_closed", "site_id", "closed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    staff_id: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(100))  # "cashier:wang": what payments.recorded_by carries
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    note: Mapped[str] = mapped_column(String(200), default="")

    lines: Mapped[list[CashUpLine]] = relationship(lazy="selectin", order_by="CashUpLine.method")


class CashUpLine(Base):
    """One payment method of a cash-up: taken and paid back as the system recorded it, and what was counted."""

    __tablename__ = "cash_up_lines"
    __table_args__ = (UniqueConstraint("cash_up_id", "method"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cash_up_id: Mapped[int] = mapped_column(ForeignKey("cash_ups.id"))
    method: Mapped[str] = mapped_column(String(16))  # cash | card
    takings_fen: Mapped[int] = mapped_column(Integer)
    refunds_fen: Mapped[int] = mapped_column(Integer)
    counted_fen: Mapped[int] = mapped_column(Integer)

    @property
    def expected_fen(self) -> int:
        return self.takings_fen - self.refunds_fen

    @property
    def difference_fen(self) -> int:
        """Counted less expected: negative is money missing from the drawer."""
        return self.counted_fen - self.expected_fen
