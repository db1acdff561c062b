"""Refunds: per-product rules, revoked tickets on the site's revocation feed, stock and points given back.

Money: counter orders are paid back in cash at the window (`succeeded`). Orders paid with WeChat Pay are
refunded through it (`cloud/refunds/payout.py`: sent after this commit, then `processing` until WeChat's
notification or query says `succeeded`, `failed` or `abnormal`). Orders paid through an OTA, and online
orders with no WeChat payment, stay `pending_provider`.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, Select, func, select, update
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal, Role
from cloud.errors import Conflict, Forbidden, NotFound
from cloud.faces.gallery import on_passes_ended
from cloud.orders.models import TRANSITIONS, Order, OrderStatus
from cloud.orders.search import Page, keyset_page
from cloud.orders.service import get_order, transition
from cloud.points.service import reverse_for_refund
from cloud.products import service as products
from cloud.refunds.models import Refund, RefundItem, RefundStatus, Revocation
from cloud.refunds.payout import attach_wechat
from cloud.refunds.rules import Override, RefundLine, assess, assess_reviewed
from cloud.settings import Settings
from cloud.sites.models import Site
from cloud.sites.service import get_site
from cloud.sync.feed import append_changes
from cloud.tickets.models import Ticket, TicketState
from models import TicketStatus
from models.sync import StatusChange

REVOKED_REFUNDED = "refunded"


def _lock_revocation_feed(session: Session, site_id: int) -> None:
    # Refunds at one site take turns (a no-key row lock on the site; SQLite has one writer anyway), so the
    # feed's ids are assigned in commit order and a gate resuming `after` its last id never skips one.
    session.execute(select(Site.id).where(Site.id == site_id).with_for_update(key_share=True))


def _settlement(order: Order) -> RefundStatus:
    return RefundStatus.SUCCEEDED if order.channel == "counter" else RefundStatus.PENDING_PROVIDER


def refund(
    session: Session,
    settings: Settings,
    actor: Principal,
    order_id: int,
    ticket_ids: list[int],
    reason: str,
    *,
    now: datetime,
    commit: bool = True,
    override: Override | None = None,
) -> Refund:
    """Refund some of an order's tickets under their products' rules, revoke them, and commit (`commit=False`:
    the caller commits, e.g. an OTA channel's refund together with its answer). `override`: a refund approved
    on review (cloud/refunds/review.py), made whatever the rules say of use, cutoff and refundability."""
    order = get_order(session, order_id, actor)
    if actor.role is Role.CUSTOMER and order.channel != "online":
        raise Forbidden(
            "refund_at_counter",
            "This order was not bought online; ask at the ticket window",
            "该订单非线上购买，请到售票窗口办理退款",
        )
    check_paid(order)
    _lock_revocation_feed(session, order.site_id)
    tickets = order_tickets(session, order, ticket_ids)
    if override is None:
        lines = rule_lines(session, order, tickets, now)
    else:
        lines = [assess_reviewed(t, products.get_product(session, t.product_id), override) for t in tickets.values()]

    # The guard that holds under concurrency: only a still-valid (or blocked: a lost card), unused ticket
    # becomes refunded; on review, a used one too.
    statuses = [TicketState.VALID.value, TicketState.BLOCKED.value]
    unused = (Ticket.entries_used == 0, Ticket.first_entry_at.is_(None))
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Ticket)
            .where(
                Ticket.id.in_(ticket_ids),
                Ticket.status.in_(statuses if override is None else [*statuses, TicketState.USED.value]),
                *(unused if override is None else ()),
            )
            .values(status=TicketState.REFUNDED.value)
            .execution_options(synchronize_session="evaluate")
        ),
    )
    if result.rowcount != len(ticket_ids):
        session.rollback()
        raise Conflict(
            "already_refunded",
            "A ticket was refunded or used meanwhile; nothing was refunded",
            "门票已被退款或使用，本次未退款",
        )

    refund = Refund(
        order_id=order.id,
        amount_fen=sum(line.amount_fen for line in lines),
        fee_fen=sum(line.fee_fen for line in lines),
        status=_settlement(order).value,
        reason=reason,
        created_by=actor.actor,
        created_at=now,
        items=[RefundItem(ticket_id=x.ticket_id, amount_fen=x.amount_fen, fee_fen=x.fee_fen) for x in lines],
    )
    session.add(refund)
    if order.channel == "online":
        attach_wechat(session, refund, order, now=now)
    session.add_all(
        Revocation(site_id=order.site_id, ticket_id=t.id, reason=REVOKED_REFUNDED, created_at=now)
        for t in sorted(tickets.values(), key=lambda t: t.id)
    )
    # Sync hook: the revocations go onto the site's feed in this same transaction.
    append_changes(
        session,
        order.site_id,
        [StatusChange(ticket_id=str(t), status=TicketStatus.REVOKED, reason=REVOKED_REFUNDED) for t in sorted(tickets)],
        now=now,
    )
    # Face hook: a refunded season pass's face leaves its site's gates (and the cloud, if no pass is left).
    on_passes_ended(session, settings, tickets.values(), REVOKED_REFUNDED, actor, now=now)
    for (product_id, day), n in Counter((t.product_id, t.visit_date) for t in tickets.values()).items():
        products.release(session, products.get_product(session, product_id), day, n)
    session.flush()

    if _all_refunded(session, order) and OrderStatus.REFUNDED in TRANSITIONS[OrderStatus(order.status)]:
        transition(session, order, OrderStatus.REFUNDED, actor, f"refund {refund.id}")
    if order.customer_id is not None:
        # The points of the refunded tickets' whole price go back: the fee the resort keeps earns none.
        refunded_fen = refund.amount_fen + refund.fee_fen
        reverse_for_refund(session, settings, order, refund_amount_fen=refunded_fen, refund_id=refund.id, now=now)
    record(
        session,
        actor,
        "refund.create",
        "order",
        order.id,
        {
            "refund_id": refund.id,
            "ticket_ids": sorted(tickets),
            "amount_fen": refund.amount_fen,
            "fee_fen": refund.fee_fen,
            "status": refund.status,
            "reason": reason,
        },
    )
    if commit:
        session.commit()
    return refund


def check_paid(order: Order) -> None:
    """Only a paid order has anything to refund."""
    if order.status not in (OrderStatus.PAID, OrderStatus.ISSUED, OrderStatus.USED, OrderStatus.REFUNDED):
        raise Conflict(
            "order_not_paid",
            f"Order {order.number} is {order.status}; nothing to refund",
            f"订单 {order.number} 状态为 {order.status}，无可退款项",
        )


def order_tickets(session: Session, order: Order, ticket_ids: list[int]) -> dict[int, Ticket]:
    """The order's tickets of these ids; a 404 naming any that are not the order's."""
    tickets = {
        t.id: t for t in session.scalars(select(Ticket).where(Ticket.id.in_(ticket_ids), Ticket.order_id == order.id))
    }
    missing = [i for i in ticket_ids if i not in tickets]
    if missing:
        raise NotFound(
            "ticket_not_in_order",
            f"Tickets {missing} are not tickets of order {order.number}",
            f"门票 {missing} 不属于订单 {order.number}",
            ticket_ids=missing,
        )
    return tickets


def rule_lines(session: Session, order: Order, tickets: dict[int, Ticket], now: datetime) -> list[RefundLine]:
    """What the rules pay back for each ticket, or the Conflict of the first one they refuse."""
    tz = ZoneInfo(get_site(session, order.site_id).timezone)
    last_days = {item.id: item.last_day for item in order.items}  # open-dated vouchers
    return [
        assess(t, products.get_product(session, t.product_id), tz, now, last_days.get(t.order_item_id))
        for t in tickets.values()
    ]


def _all_refunded(session: Session, order: Order) -> bool:
    left = session.scalar(
        select(func.count(Ticket.id)).where(Ticket.order_id == order.id, Ticket.status != TicketState.REFUNDED.value)
    )
    return left == 0


def refunds_of_order(session: Session, order_id: int, actor: Principal) -> list[Refund]:
    """An order's refunds, oldest first; a customer sees only their own orders (404 otherwise)."""
    order = get_order(session, order_id, actor)
    return list(session.scalars(select(Refund).where(Refund.order_id == order.id).order_by(Refund.id)))


def refunds_page(
    session: Session,
    *,
    status: RefundStatus | None,
    site_id: int | None,
    created_from: datetime | None,
    created_to: datetime | None,
    cursor: str | None,
    limit: int,
) -> Page[Refund]:
    """Refunds across orders for the back office, newest first, a page at a time; `created_to` excluded."""
    q: Select[Refund] = select(Refund)
    if status is not None:
        q = q.where(Refund.status == status.value)
    if site_id is not None:
        q = q.join(Order, Order.id == Refund.order_id).where(Order.site_id == site_id)
    if created_from is not None:
        q = q.where(Refund.created_at >= created_from)
    if created_to is not None:
        q = q.where(Refund.created_at < created_to)
    return keyset_page(session, q, Refund.created_at, Refund.id, cursor=cursor, limit=limit)


def revocations_since(session: Session, site_id: int, after_seq: int, *, limit: int = 1000) -> list[Revocation]:
    """A site's revocation feed after sequence `after_seq`, in order (what sync carries to the gates)."""
    return list(
        session.scalars(
            select(Revocation)
            .where(Revocation.site_id == site_id, Revocation.id > after_seq)
            .order_by(Revocation.id)
            .limit(limit)
        )
    )
