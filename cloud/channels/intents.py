"""What a platform asks, done in the caller's transaction: orders, payment, cancellation, refunds, queries.

Decisions (the issue leaves them open):
- Price: each ticket costs the SKU mapping's `price_fen` (what the resort settles with the platform); a mapping
  without one sells at the product's own price for that day. What the buyer paid on the platform is kept in
  the channel order's extra (`_lines[].paid_unit_price_fen`), never charged against.
- An undated line (a platform selling open vouchers) starts today in the site's time zone; with a `last_day`
  (Douyin's `expire_time`) it is an open-dated voucher: valid every day through its last day (at most a year),
  refundable unused until the product's cutoff before that day, its stock counted on its first day.
- An order notification about an order we already have is answered from that order (the first one wins, even
  if a later one says something else): idempotent by the platform's order id.
- Money: the platform took it, so a paid order is paid by the platform as provider (`Payment.provider` = the
  channel's code, method `ota`, `provider_ref` = the platform's order id) and issued at once with our plain
  voucher codes. A refund is paid back by the platform too: ours is recorded `succeeded` with provider = the
  channel's code (nothing is left `pending_provider`).
- A refund the platform asks for (`decided=False`) follows our refund rules; a refund it already made
  (`decided=True`) revokes whatever can still be revoked, whatever the cutoff; a ticket already used cannot be
  revoked: it is kept, the platform is told the refund was taken, and the mismatch is audited
  (`channel.refund_mismatch`) for finance to settle with the platform.
- An unpaid pre-order (Ctrip) holds its stock for `config["hold_minutes"]` (default 120) and then expires like
  any unpaid order; paying it later is refused (`not_paid`).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.channels.base import (
    CancelOrder,
    ChannelAccount,
    Failure,
    Intent,
    OrderOutcome,
    Outcome,
    PayOrder,
    PlaceOrder,
    QueryOrder,
    RefundOutcome,
    RefundRequest,
    Voucher,
)
from cloud.channels.models import ChannelOrder, ChannelRefund, ChannelSku
from cloud.deps import Principal, Role
from cloud.errors import Conflict, DomainError
from cloud.faces.gallery import on_passes_ended
from cloud.orders.models import TRANSITIONS, Order, OrderItem, OrderStatus
from cloud.orders.service import check_visit_date, transition
from cloud.payments.models import PaymentStatus
from cloud.payments.providers import Confirmation
from cloud.payments.service import settle
from cloud.products import service as products
from cloud.products.models import Product
from cloud.refunds import service as refunds
from cloud.refunds.models import Refund, RefundItem, RefundStatus, Revocation
from cloud.settings import Settings
from cloud.sites.models import Site
from cloud.sites.service import get_site
from cloud.sync.feed import append_changes
from cloud.tickets.blocks import platform_state
from cloud.tickets.models import Ticket, TicketState
from models import TicketStatus
from models.sync import StatusChange

HOLD_MINUTES = 120
MAX_LINES, MAX_LINE_UNITS = 20, 100  # a platform order at most (Douyin sells at most 100 copies per order)
OPEN_DAYS_MAX = 366  # an open-dated voucher's validity at most
LINES = "_lines"  # the channel order's extra: each order item's sku, line ref and the buyer's price


class Refused(Exception):
    """The request cannot be done: nothing of it is kept (the caller rolls back) and `failure` is the answer."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def execute(session: Session, settings: Settings, account: ChannelAccount, intent: Intent, now: datetime) -> Outcome:
    """Do what the platform asks; the caller commits (or rolls back on `Refused`)."""
    code = account.code
    if isinstance(intent, PlaceOrder):
        return place_order(session, settings, account, intent, now)
    corder = channel_order(session, code, intent.order_ref)
    if isinstance(intent, RefundRequest):
        return refund_request(session, settings, code, corder, intent, now)
    if corder is None:
        return Failure("unknown_order", f"No order {intent.order_ref} from {code}")
    order = session.get(Order, corder.order_id, with_for_update=True, populate_existing=True)
    assert order is not None
    if isinstance(intent, PayOrder):
        if order.status in (OrderStatus.CANCELLED.value, OrderStatus.EXPIRED.value):
            return Failure("not_paid", f"Order {intent.order_ref} is {order.status}; it can no longer be paid")
        corder.extra = {**corder.extra, **intent.extra}
        if order.status == OrderStatus.PENDING.value:
            _pay(session, settings, code, order, now)
    elif isinstance(intent, CancelOrder):
        if order.status == OrderStatus.PENDING.value:
            transition(session, order, OrderStatus.CANCELLED, f"channel:{code}", "cancelled by the platform")
            for item in order.items:
                products.release(
                    session, products.get_product(session, item.product_id), item.visit_date, item.quantity
                )
        elif order.status not in (OrderStatus.CANCELLED.value, OrderStatus.EXPIRED.value):
            return Failure("invalid", f"Order {intent.order_ref} is {order.status}: refund it instead of cancelling")
    else:
        assert isinstance(intent, QueryOrder)
    return order_outcome(session, corder, order)


def channel_order(session: Session, code: str, order_ref: str) -> ChannelOrder | None:
    return session.scalar(select(ChannelOrder).where(ChannelOrder.channel == code, ChannelOrder.order_ref == order_ref))


def place_order(
    session: Session, settings: Settings, account: ChannelAccount, intent: PlaceOrder, now: datetime
) -> Outcome:
    code = account.code
    known = channel_order(session, code, intent.order_ref)
    if known is not None:
        order = session.get(Order, known.order_id)
        assert order is not None
        return order_outcome(session, known, order)
    if not intent.lines or len(intent.lines) > MAX_LINES:
        raise Refused(Failure("invalid", f"An order has 1 to {MAX_LINES} lines"))
    mapped = _mapped(session, code, {line.sku for line in intent.lines})
    sites = {product.site_id for _, product in mapped.values()}
    if len(sites) != 1:
        raise Refused(Failure("invalid", "An order's lines must all be sold at one site"))
    site = get_site(session, sites.pop())
    today = now.astimezone(ZoneInfo(site.timezone)).date()
    hold = int(account.config.get("hold_minutes") or HOLD_MINUTES)
    order = Order(
        number=f"SF{now:%Y%m%d}{secrets.token_hex(5).upper()}",
        site_id=site.id,
        channel="ota",
        ota_channel=code,
        ota_order_ref=intent.order_ref,
        status=OrderStatus.PENDING.value,
        total_fen=0,
        created_by=f"channel:{code}",
        created_at=now,
        expires_at=now + timedelta(minutes=hold),
    )
    lines: list[dict[str, Any]] = []
    for line in intent.lines:
        sku, product = mapped[line.sku]
        day = line.visit_date or today
        if not 1 <= line.quantity <= MAX_LINE_UNITS:
            raise Refused(Failure("invalid", f"Line {line.sku}: quantity {line.quantity} (1 to {MAX_LINE_UNITS})"))
        _on_sale(product, day, today, now)
        unit = sku.price_fen if sku.price_fen is not None else products.price_fen(session, product, day)[1]
        try:
            products.reserve(session, product, day, line.quantity)
        except Conflict as exc:
            raise Refused(Failure("sold_out", exc.en)) from exc
        order.total_fen += unit * line.quantity
        item = OrderItem(product_id=product.id, visit_date=day, quantity=line.quantity, unit_price_fen=unit)
        item.last_day = _last_day(line.last_day, day)
        order.items.append(item)
        lines.append({"sku": line.sku, "ref": line.ref, "paid_unit_price_fen": line.unit_price_fen})
    session.add(order)
    session.flush()  # a concurrent twin fails here or below on the unique keys: the caller answers from the winner
    for item, line_extra in zip(order.items, lines, strict=True):
        line_extra["item_id"] = item.id
    extra = {**intent.extra, LINES: lines}
    if intent.phone or intent.name:
        extra["buyer"] = {"phone": intent.phone, "name": intent.name}
    corder = ChannelOrder(channel=code, order_ref=intent.order_ref, order_id=order.id, extra=extra, created_at=now)
    session.add(corder)
    session.flush()
    record(
        session, f"channel:{code}", "order.create", "order", order.id, {"number": order.number, "ref": intent.order_ref}
    )
    if intent.paid:
        _pay(session, settings, code, order, now)
    return order_outcome(session, corder, order)


def _last_day(last: date | None, first: date) -> date | None:
    """An open-dated voucher's last valid day (None: a ticket for its visit day); at most OPEN_DAYS_MAX after its
    first day. Its stock is counted on its first day, the only day known when it is sold."""
    if last is None or last <= first:
        return None
    if last > first + timedelta(days=OPEN_DAYS_MAX):
        raise Refused(Failure("bad_date", f"A voucher valid until {last} is valid too long (at most a year)"))
    return last


def _mapped(session: Session, code: str, skus: set[str]) -> dict[str, tuple[ChannelSku, Product]]:
    rows = session.execute(
        select(ChannelSku, Product)
        .join(Product, Product.id == ChannelSku.product_id)
        .where(ChannelSku.channel == code, ChannelSku.sku.in_(skus), ChannelSku.active.is_(True))
    )
    found = {sku.sku: (sku, product) for sku, product in rows}
    unknown = sorted(skus - set(found))
    if unknown:
        raise Refused(Failure("unknown_sku", f"SKU {', '.join(unknown)} is not sold through {code} here"))
    return found


def _on_sale(product: Product, day: Any, today: Any, now: datetime) -> None:
    early, late = product.sale_start and now < product.sale_start, product.sale_end and now >= product.sale_end
    if not product.active or early or late:
        raise Refused(Failure("not_on_sale", f"{product.name} is not on sale now"))
    try:
        check_visit_date(product, day, today)
    except DomainError as exc:
        raise Refused(Failure("bad_date", exc.en)) from exc


def _pay(session: Session, settings: Settings, code: str, order: Order, now: datetime) -> None:
    """The platform took the buyer's money: our order is paid by it and issued, or refused as a whole."""
    confirmation = Confirmation(
        order_number=order.number,
        provider_ref=order.ota_order_ref or order.number,
        amount_fen=order.total_fen,
        paid_at=now,
    )
    payment = settle(session, settings, code, "ota", confirmation, now=now)
    if payment.status != PaymentStatus.SUCCEEDED.value:
        raise Refused(Failure("bad_date", f"Order {order.ota_order_ref} cannot be issued"))


def order_outcome(session: Session, corder: ChannelOrder, order: Order) -> OrderOutcome:
    tickets = session.scalars(select(Ticket).where(Ticket.order_id == order.id).order_by(Ticket.id))
    return OrderOutcome(
        order_ref=corder.order_ref,
        order_number=order.number,
        status=order.status,
        vouchers=vouchers(corder, tickets),
        extra=corder.extra,
    )


def vouchers(corder: ChannelOrder | None, tickets: Iterable[Ticket]) -> tuple[Voucher, ...]:
    lines = {x.get("item_id"): x for x in (corder.extra.get(LINES, []) if corder is not None else [])}
    return tuple(
        Voucher(
            ticket_id=t.id,
            code=t.code or "",
            sku=str(lines.get(t.order_item_id, {}).get("sku", "")),
            visit_date=t.visit_date,
            state=platform_state(t.status),
            entries_used=t.entries_used,
            line_ref=str(lines.get(t.order_item_id, {}).get("ref", "")),
        )
        for t in tickets
    )


# ---- refunds ----


def refund_request(
    session: Session, settings: Settings, code: str, corder: ChannelOrder | None, intent: RefundRequest, now: datetime
) -> RefundOutcome:
    known = session.scalar(
        select(ChannelRefund).where(ChannelRefund.channel == code, ChannelRefund.refund_ref == intent.refund_ref)
    )
    if known is not None and intent.decided and not known.approved:
        # We denied the request, and the platform refunded anyway (customer service, its 24 h auto-approval):
        # its word replaces our denial, and the tickets are revoked (or the mismatch audited) now.
        session.delete(known)
        session.flush()
    elif known is not None:
        return _refund_outcome(session, corder, intent, known)
    if corder is None:
        return _decide(session, code, None, intent, [], False, "unknown_order", f"No order {intent.order_ref}", now)
    tickets = list(session.scalars(select(Ticket).where(Ticket.order_id == corder.order_id).order_by(Ticket.id)))
    picked = _pick(tickets, intent)
    if isinstance(picked, tuple):
        return _decide(session, code, corder, intent, [], False, picked[0], picked[1], now)
    if intent.decided:
        return _platform_refunded(session, settings, code, corder, intent, picked, now)
    actor = Principal(Role.ADMIN, 0, f"channel-{code}")
    ids = [t.id for t in picked]
    try:
        refund = refunds.refund(
            session, settings, actor, corder.order_id, ids, intent.reason or f"{code} refund", now=now, commit=False
        )
    except Conflict as exc:
        session.rollback()
        denial = "already_refunded" if exc.code == "ticket_revoked" else exc.code
        return _decide(session, code, corder, intent, ids, False, denial, exc.en, now)
    _settled_by_platform(refund, code, now)
    return _decide(session, code, corder, intent, ids, True, "approved", "Refund approved", now, refund.id)


def _pick(tickets: Sequence[Ticket], intent: RefundRequest) -> list[Ticket] | tuple[str, str]:
    """The tickets the request is about, or (denial code, why). A blocked ticket (a lost card) is refundable."""
    unused = [t for t in tickets if t.status in (TicketState.VALID, TicketState.BLOCKED) and t.entries_used == 0]
    if intent.codes is not None:
        by_code = {t.code: t for t in tickets if t.code}
        missing = [c for c in intent.codes if c not in by_code]
        if missing or not intent.codes:
            return "wrong_quantity", f"Codes {', '.join(missing)} are not this order's"
        return [by_code[c] for c in dict.fromkeys(intent.codes)]
    if intent.quantity is not None:
        pool = unused if not intent.decided else unused + [t for t in tickets if t not in unused]
        if intent.quantity < 1 or intent.quantity > len(pool):
            return "wrong_quantity", f"{intent.quantity} tickets asked for, {len(unused)} can be refunded"
        return pool[: intent.quantity]
    if intent.decided:  # a refund the platform made names what it refunded: never "the whole order" by default
        return "wrong_quantity", "A refund the platform made must name its codes or quantity"
    pool = unused
    if pool:
        return pool
    if any(t.entries_used > 0 or t.status == TicketState.USED.value for t in tickets):
        return "ticket_used", "Every ticket of this order has been used"
    return "already_refunded", "No ticket of this order is left to refund"


def _settled_by_platform(refund: Refund, code: str, now: datetime) -> None:
    refund.status, refund.provider, refund.settled_at = RefundStatus.SUCCEEDED.value, code, now


def _platform_refunded(
    session: Session,
    settings: Settings,
    code: str,
    corder: ChannelOrder,
    intent: RefundRequest,
    picked: list[Ticket],
    now: datetime,
) -> RefundOutcome:
    """The platform has refunded already: revoke what can still be revoked (blocked too), audit what cannot."""
    order = session.get(Order, corder.order_id, with_for_update=True, populate_existing=True)
    assert order is not None
    session.execute(select(Site.id).where(Site.id == order.site_id).with_for_update(key_share=True))
    # Read again under the tickets' locks: a gate's passage or a handheld counted meanwhile is seen, not overwritten.
    picked = list(
        session.scalars(
            select(Ticket)
            .where(Ticket.id.in_([t.id for t in picked]))
            .order_by(Ticket.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
    revoke = [t for t in picked if t.status in (TicketState.VALID, TicketState.BLOCKED) and t.entries_used == 0]
    used = [t.id for t in picked if t not in revoke and t.status not in (TicketState.REFUNDED, TicketState.REVOKED)]
    refund_id = None
    if revoke:
        for t in revoke:
            t.status = TicketState.REFUNDED.value
        refund = Refund(
            order_id=order.id,
            amount_fen=sum(t.price_fen for t in revoke),
            fee_fen=0,
            status=RefundStatus.SUCCEEDED.value,
            reason=intent.reason or f"refunded by {code}",
            created_by=f"channel:{code}",
            created_at=now,
            provider=code,
            settled_at=now,
            items=[RefundItem(ticket_id=t.id, amount_fen=t.price_fen, fee_fen=0) for t in revoke],
        )
        session.add(refund)
        session.add_all(
            Revocation(site_id=order.site_id, ticket_id=t.id, reason=refunds.REVOKED_REFUNDED, created_at=now)
            for t in revoke
        )
        changes = [StatusChange(ticket_id=str(t.id), status=TicketStatus.REVOKED, reason="refunded") for t in revoke]
        append_changes(session, order.site_id, changes, now=now)
        on_passes_ended(session, settings, revoke, refunds.REVOKED_REFUNDED, f"channel:{code}", now=now)
        for (product_id, day), n in Counter((t.product_id, t.visit_date) for t in revoke).items():
            products.release(session, products.get_product(session, product_id), day, n)
        session.flush()
        refund_id = refund.id
        left = session.scalar(
            select(Ticket.id).where(Ticket.order_id == order.id, Ticket.status != TicketState.REFUNDED.value).limit(1)
        )
        if left is None and OrderStatus.REFUNDED in TRANSITIONS[OrderStatus(order.status)]:
            transition(session, order, OrderStatus.REFUNDED, f"channel:{code}", f"refund {refund.id}")
        record(session, f"channel:{code}", "refund.create", "order", order.id, {"refund_id": refund.id, "by": code})
    if used:
        record(
            session,
            f"channel:{code}",
            "channel.refund_mismatch",
            "order",
            order.id,
            {"refund_ref": intent.refund_ref, "used_ticket_ids": used, "why": "the platform refunded used tickets"},
        )
    code_ = "refunded" if not used else "used_mismatch"
    message = "Refund taken" if not used else f"Refund taken; tickets {used} were already used and stay valid"
    ids = [t.id for t in picked]
    return _decide(session, code, corder, intent, ids, True, code_, message, now, refund_id)


def _decide(
    session: Session,
    code: str,
    corder: ChannelOrder | None,
    intent: RefundRequest,
    ticket_ids: list[int],
    approved: bool,
    reason_code: str,
    message: str,
    now: datetime,
    refund_id: int | None = None,
) -> RefundOutcome:
    row = ChannelRefund(
        channel=code,
        refund_ref=intent.refund_ref,
        order_id=corder.order_id if corder is not None else None,
        refund_id=refund_id,
        approved=approved,
        code=reason_code,
        message=message[:300],
        ticket_ids=ticket_ids,
        created_at=now,
    )
    session.add(row)
    session.flush()
    record(
        session,
        f"channel:{code}",
        "channel.refund",
        "channel_refund",
        row.id,
        {"approved": approved, "code": reason_code},
    )
    return _refund_outcome(session, corder, intent, row)


def _refund_outcome(
    session: Session, corder: ChannelOrder | None, intent: RefundRequest, row: ChannelRefund
) -> RefundOutcome:
    tickets: list[Ticket] = []
    if row.ticket_ids:
        tickets = list(session.scalars(select(Ticket).where(Ticket.id.in_(row.ticket_ids)).order_by(Ticket.id)))
    return RefundOutcome(
        order_ref=intent.order_ref,
        refund_ref=row.refund_ref,
        approved=row.approved,
        code=row.code,
        message=row.message,
        vouchers=vouchers(corder, tickets),
    )
