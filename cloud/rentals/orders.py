"""Rental orders: placed online (picked up at the desk) or at the desk, paid like any order, given up like any.

An order is an ordinary `Order` of kind rental whose total is the rent plus the deposits (`deposit_fen`, which
earns no points); its lines are `rental_lines`. Placing it takes its units from the item's `available` at once
(one conditional UPDATE per line, so two desks never promise the last pair twice) and holds them until they come
back or the order is given up unpaid (`on_given_up`). Stock is one pool per site, not per day: rentals at a ski
resort are same-day, so an online order picks up within 2 days and holds its units from ordering; a customer
holds at most MAX_UNPAID_ONLINE unpaid rental orders at a time.

Prices are the item's for the day type (weekday, weekend, holiday with the site's holidays) of the local day the
rental starts. An hourly line is due `periods` hours after its start; a daily line at the local midnight ending
its last day. Paying (`on_paid`, via `cloud.fulfilment`) makes the order paid and ready for pick-up (the order
`issued`, the rental `ready`). The desk's cashier here is the rental clerk: they may take payment for rental
orders only (`pay_at_desk`).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud import metrics
from cloud.audit.service import record
from cloud.customers.models import Customer
from cloud.deps import Principal, Role
from cloud.errors import Conflict, DomainError, not_found
from cloud.orders.models import Order, OrderKind, OrderStatus
from cloud.orders.service import _number, _request_hash, _same_request, find_idempotent, get_order, transition
from cloud.payments.models import Payment
from cloud.payments.schemas import CounterPaymentIn
from cloud.payments.service import pay_at_counter
from cloud.products.service import day_type
from cloud.rentals.items import get_item
from cloud.rentals.models import RentalItem, RentalLine, RentalOrder, RentalStatus
from cloud.rentals.schemas import LineIn, RentalOrderIn
from cloud.settings import Settings
from cloud.sites.service import get_site

ONLINE_AHEAD = timedelta(days=2)  # an online rental is picked up within this
MAX_UNPAID_ONLINE = 2


def _due(start: datetime, line: LineIn, tz: ZoneInfo) -> datetime:
    if line.period_unit == "hour":
        return start + timedelta(hours=line.periods)
    last_day = start.astimezone(tz).date() + timedelta(days=line.periods)
    return datetime.combine(last_day, time(0), tz)


def take(session: Session, item: RentalItem, quantity: int) -> None:
    """Promise `quantity` units of the item, atomically: the last pair goes to one order only."""
    taken = session.execute(
        update(RentalItem)
        .where(RentalItem.id == item.id, RentalItem.available >= quantity)
        .values(available=RentalItem.available - quantity)
    )
    if taken.rowcount == 0:  # type: ignore[attr-defined]
        raise Conflict(
            "rental_unavailable",
            f"Not enough {item.name} {item.size} free to rent",
            f"{item.name} {item.size} 可租数量不足",
            item_id=item.id,
        )


def give_back(session: Session, item_id: int, quantity: int) -> None:
    """Units rentable again (returned in order, or promised and never picked up)."""
    if quantity > 0:
        session.execute(
            update(RentalItem).where(RentalItem.id == item_id).values(available=RentalItem.available + quantity)
        )


def create_rental_order(
    session: Session,
    settings: Settings,
    actor: Principal,
    body: RentalOrderIn,
    *,
    idempotency_key: str | None,
    now: datetime,
) -> tuple[Order, bool]:
    """A pending rental order holding its units; (order, created). A customer's is online, staff's at the desk."""
    online = actor.role is Role.CUSTOMER
    customer_id = actor.subject_id if online else body.customer_id
    scope = f"rental:{actor.role.value}#{actor.subject_id}" if idempotency_key else None
    digest = _request_hash(body)
    if idempotency_key and scope:
        existing = find_idempotent(session, scope, idempotency_key)
        if existing is not None:
            return _same_request(existing, digest), False
    site = get_site(session, body.site_id)
    tz = ZoneInfo(site.timezone)
    start = now if not online or body.start_at is None else body.start_at
    if start.tzinfo is None:
        raise DomainError("naive_time", "start_at needs a time zone", "start_at 需要带时区")
    if online and not (now - timedelta(minutes=30) <= start <= now + ONLINE_AHEAD):
        raise DomainError("start_out_of_range", "Pick up within 2 days", "请选择两天内的取件时间")
    phone, name = body.phone or "", body.name
    if customer_id is not None:
        customer = session.get(Customer, customer_id, with_for_update=online)  # a customer's orders take turns
        if customer is None:
            raise not_found("Customer", "顾客", customer_id)
        phone = phone or (customer.phone or "")
    if online:
        _check_unpaid(session, customer_id)
    kind_of_day = day_type(session, site.id, start.astimezone(tz).date())
    order = Order(
        number=_number(now),
        site_id=site.id,
        customer_id=customer_id,
        channel="online" if online else "counter",
        kind=OrderKind.RENTAL.value,
        status=OrderStatus.PENDING.value,
        total_fen=0,
        idempotency_scope=scope,
        idempotency_key=idempotency_key,
        request_hash=digest,
        created_by=actor.actor,
        created_at=now,
        expires_at=now + timedelta(minutes=settings.order_pending_minutes),
    )
    lines = []
    for line_in in body.lines:
        item = get_item(session, line_in.item_id)
        if item.site_id != site.id or not item.active:
            raise DomainError("rental_item_unavailable", f"{item.name} is not rented here", "该物品不在此处出租")
        take(session, item, line_in.quantity)
        unit = getattr(item, f"{line_in.period_unit}_{kind_of_day}_fen")
        lines.append(
            RentalLine(
                item_id=item.id,
                quantity=line_in.quantity,
                period_unit=line_in.period_unit,
                periods=line_in.periods,
                day_type=kind_of_day,
                start_at=start,
                due_at=_due(start, line_in, tz),
                unit_price_fen=unit,
                hour_fen=getattr(item, f"hour_{kind_of_day}_fen"),
                price_fen=unit * line_in.periods * line_in.quantity,
                deposit_fen=item.deposit_fen * line_in.quantity,
            )
        )
    rent, deposit = sum(x.price_fen for x in lines), sum(x.deposit_fen for x in lines)
    order.total_fen, order.deposit_fen = rent + deposit, deposit
    session.add(order)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        if idempotency_key and scope and (existing := find_idempotent(session, scope, idempotency_key)):
            return _same_request(existing, digest), False
        raise Conflict("duplicate_order", "This order already exists", "订单已存在") from exc
    for line in lines:
        line.order_id = order.id
    session.add_all(lines)
    session.add(
        RentalOrder(
            order_id=order.id,
            site_id=site.id,
            customer_id=customer_id,
            phone=phone,
            name=name,
            status=RentalStatus.PENDING.value,
            rent_fen=rent,
            deposit_fen=deposit,
            created_at=now,
        )
    )
    detail = {"number": order.number, "total_fen": order.total_fen, "deposit_fen": deposit, "kind": "rental"}
    record(session, actor, "order.create", "order", order.id, detail)
    metrics.order(session, order.channel, "created")
    session.commit()
    return order, True


def _check_unpaid(session: Session, customer_id: int | None) -> None:
    """Online, a customer holds at most MAX_UNPAID_ONLINE unpaid rental orders (each holds units off the shelf)."""
    unpaid = session.scalar(
        select(func.count(Order.id)).where(
            Order.customer_id == customer_id,
            Order.kind == OrderKind.RENTAL.value,
            Order.status == OrderStatus.PENDING.value,
        )
    )
    if (unpaid or 0) >= MAX_UNPAID_ONLINE:
        raise Conflict(
            "too_many_unpaid",
            f"You have {unpaid} unpaid rental orders; pay or cancel one first",
            f"您有 {unpaid} 笔未支付的租赁订单，请先支付或取消",
            unpaid=unpaid,
        )


def rental_of(session: Session, order: Order, *, lock: bool = False) -> RentalOrder:
    rental = session.get(RentalOrder, order.id, with_for_update=lock, populate_existing=lock)
    if order.kind != OrderKind.RENTAL.value or rental is None:
        raise DomainError("not_a_rental", f"Order {order.number} is not a rental", f"订单 {order.number} 不是租赁订单")
    return rental


def get_rental_order(session: Session, order_id: int, actor: Principal | None = None) -> Order:
    order = get_order(session, order_id, actor)
    rental_of(session, order)
    return order


def on_paid(session: Session, settings: Settings, order: Order, *, actor: str, now: datetime) -> None:
    """Paid: ready for pick-up at the desk (order issued, rental ready). The caller commits."""
    rental = rental_of(session, order)
    transition(session, order, OrderStatus.PAID, actor)
    transition(session, order, OrderStatus.ISSUED, actor, "rental ready for pick-up")
    rental.status = RentalStatus.READY.value


def on_given_up(session: Session, order: Order) -> None:
    """Cancelled, expired or unfulfillable while still unpaid: its units are free again. Under the rental's row
    lock, and only while the rental is `pending`: a paid rental (ready, out, closed) never has its units freed by
    a cancel or expiry path that read the order before the money came in."""
    rental = session.get(RentalOrder, order.id, with_for_update=True, populate_existing=True)
    if rental is None or rental.status != RentalStatus.PENDING.value:
        return
    for line in session.scalars(select(RentalLine).where(RentalLine.order_id == order.id)):
        give_back(session, line.item_id, line.quantity - line.out_qty)
    rental.status = RentalStatus.CANCELLED.value


def pay_at_desk(
    session: Session, settings: Settings, actor: Principal, order_id: int, body: CounterPaymentIn, *, now: datetime
) -> Payment:
    """The desk took cash or card for the rent and deposit together: the order is paid and ready for pick-up."""
    get_rental_order(session, order_id)
    return pay_at_counter(session, settings, actor, order_id, body, now=now)
