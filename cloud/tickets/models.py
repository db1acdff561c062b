"""Tables of this domain: one Ticket per unit of an order item; its id is the ticket_no in the QR."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Date, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloud.customers.models import Holder
from cloud.db import Base, UtcDateTime, utcnow


class TicketState(StrEnum):
    VALID = "valid"
    USED = "used"  # the gates reported it used up (via sync)
    REFUNDED = "refunded"
    REVOKED = "revoked"  # withdrawn by staff for another reason
    BLOCKED = "blocked"  # suspended by staff (a lost card, misuse) until lifted (`cloud.tickets.blocks`)


class Ticket(Base):
    __tablename__ = "tickets"
    # unit_no numbers the tickets of one order item 1..quantity: issuing twice can never double them.
    # A plain code names one ticket of its site (NULLs, tickets without one, are all distinct).
    __table_args__ = (UniqueConstraint("order_item_id", "unit_no"), UniqueConstraint("site_id", "code"))

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    order_item_id: Mapped[int] = mapped_column(ForeignKey("order_items.id"))
    unit_no: Mapped[int] = mapped_column(Integer)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    kind: Mapped[str] = mapped_column(String(16))
    visit_date: Mapped[date] = mapped_column(Date)
    valid_from: Mapped[datetime] = mapped_column(UtcDateTime)
    valid_until: Mapped[datetime] = mapped_column(UtcDateTime)
    entries: Mapped[int | None] = mapped_column(Integer)
    window_minutes: Mapped[int | None] = mapped_column(Integer)
    holder_id: Mapped[int | None] = mapped_column(ForeignKey("holders.id"))
    price_fen: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=TicketState.VALID.value, index=True)
    # What the cloud knows of use at the gates; sync fills these in from passage events.
    entries_used: Mapped[int] = mapped_column(Integer, default=0)
    first_entry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    token: Mapped[str] = mapped_column(Text, default="")
    # The plain code a gate finds in its cache (an OTA voucher, `models.voucher`); None: the signed QR only.
    code: Mapped[str | None] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    holder: Mapped[Holder | None] = relationship(lazy="select")

    @property
    def ticket_no(self) -> int:
        return self.id


class TicketBlock(Base):
    """One block of a ticket (`cloud.tickets.blocks`), kept after it is lifted: who, when and why, both ways."""

    __tablename__ = "ticket_blocks"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    previous_status: Mapped[str] = mapped_column(String(16))  # what the ticket was, and is again when lifted
    reason: Mapped[str] = mapped_column(String(200))
    blocked_by: Mapped[str] = mapped_column(String(100))
    blocked_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lift_reason: Mapped[str | None] = mapped_column(String(200))
    lifted_by: Mapped[str | None] = mapped_column(String(100))
    lifted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
