"""The refund rules of one ticket, shared by refunds and by points (earned points wait while a refund can come)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cloud.errors import Conflict
from cloud.products.models import Product
from cloud.tickets.models import Ticket, TicketState
from cloud.tickets.service import local_midnight


@dataclass(frozen=True, slots=True)
class RefundLine:
    ticket_id: int
    amount_fen: int
    fee_fen: int


def refund_deadline(visit_date: date, tz: ZoneInfo, cutoff_hours: int) -> datetime:
    """Refunds are accepted until this instant: `cutoff_hours` before the visit day starts, local time."""
    return local_midnight(visit_date, tz) - timedelta(hours=cutoff_hours)


def assess(ticket: Ticket, product: Product, tz: ZoneInfo, now: datetime, last_day: date | None = None) -> RefundLine:
    """What refunding this ticket pays back, or a Conflict saying why it cannot be refunded. An open-dated
    voucher (`last_day`) stays refundable, unused, until the cutoff before its last day (Douyin's 过期退)."""
    tid = ticket.id
    if ticket.status == TicketState.REFUNDED:
        raise Conflict("already_refunded", f"Ticket {tid} is already refunded", f"门票 {tid} 已退款", ticket_id=tid)
    if ticket.status == TicketState.REVOKED:
        raise Conflict("ticket_revoked", f"Ticket {tid} was revoked", f"门票 {tid} 已作废", ticket_id=tid)
    if ticket.status == TicketState.USED or ticket.entries_used > 0 or ticket.first_entry_at is not None:
        raise Conflict("ticket_used", f"Ticket {tid} has been used", f"门票 {tid} 已使用，不能退款", ticket_id=tid)
    if not product.refundable:
        raise Conflict(
            "not_refundable", f"{product.name} cannot be refunded", f"{product.name} 不支持退款", ticket_id=tid
        )
    deadline = refund_deadline(max(ticket.visit_date, last_day or ticket.visit_date), tz, product.refund_cutoff_hours)
    if now >= deadline:
        raise Conflict(
            "past_cutoff",
            f"Refunds for ticket {tid} closed at {deadline.astimezone(tz):%Y-%m-%d %H:%M}",
            f"门票 {tid} 的退款截止时间 {deadline.astimezone(tz):%Y-%m-%d %H:%M} 已过",
            ticket_id=tid,
            deadline=deadline.isoformat(),
        )
    fee = min(product.refund_fee_fen, ticket.price_fen)
    return RefundLine(ticket_id=tid, amount_fen=ticket.price_fen - fee, fee_fen=fee)


@dataclass(frozen=True, slots=True)
class Override:
    """A refund a second person approved on review (cloud/refunds/review.py), outside the rules."""

    waive_fee: bool  # the resort's doing (a weather closure): the whole price back


def assess_reviewed(ticket: Ticket, product: Product, override: Override) -> RefundLine:
    """What a refund approved on review pays back, whatever the rules say (used, past the cutoff, not
    refundable): the price less the product's fee, or all of it when the review waives the fee. A ticket
    already refunded or revoked is still refused."""
    tid = ticket.id
    if ticket.status == TicketState.REFUNDED:
        raise Conflict("already_refunded", f"Ticket {tid} is already refunded", f"门票 {tid} 已退款", ticket_id=tid)
    if ticket.status == TicketState.REVOKED:
        raise Conflict("ticket_revoked", f"Ticket {tid} was revoked", f"门票 {tid} 已作废", ticket_id=tid)
    fee = 0 if override.waive_fee else min(product.refund_fee_fen, ticket.price_fen)
    return RefundLine(ticket_id=tid, amount_fen=ticket.price_fen - fee, fee_fen=fee)
