"""Orders: online and at the ticket window; a state machine; idempotent creation; stock held atomically.

Limits on what a customer may hold unpaid (the ticket window and OTA channels pay at once and are not
limited): at most MAX_UNITS_PER_ORDER units in one online order, at most MAX_UNPAID_UNITS_PER_DAY units of
one product and visit day across the customer's unpaid orders, and a larger order is held for less time
(`pending_minutes`). A customer's order creations take turns on a lock of the customer's row, so the
limits hold under concurrent requests.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud import metrics
from cloud.audit.service import record
from cloud.customers.models import Customer, Holder
from cloud.deps import Principal, Role
from cloud.errors import Conflict, DomainError, Forbidden, not_found
from cloud.orders.models import TRANSITIONS, Order, OrderItem, OrderStatus
from cloud.orders.schemas import OrderIn
from cloud.products import service as products
from cloud.products.models import Product
from cloud.settings import Settings
from cloud.sites.service import get_site
from models import ProductKind

# Customer (online) orders; proposed as settings: order_max_units_online, order_max_unpaid_units_per_day,
# order_min_pending_minutes.
MAX_UNITS_PER_ORDER = 10
MAX_UNPAID_UNITS_PER_DAY = 10
MIN_PENDING_MINUTES = 5
FULL_TIME_UNITS = 4  # orders up to this many units are held for the full order_pending_minutes


def _number(now: datetime) -> str:
    return f"SF{now:%Y%m%d}{secrets.token_hex(5).upper()}"


def _request_hash(body: BaseModel) -> str:
    """What an Idempotency-Key's first request asked for (any order's body: tickets, a rental, a lesson)."""
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


def _channel_allowed(actor: Principal, body: OrderIn) -> None:
    allowed = {
        Role.CUSTOMER: {"online"},
        Role.CASHIER: {"counter"},
        Role.ADMIN: {"online", "counter", "ota"},
    }.get(actor.role, set())
    if body.channel not in allowed:
        raise Forbidden(
            "channel_not_allowed",
            f"Role {actor.role.value} may not create {body.channel} orders",
            f"角色 {actor.role.value} 不能创建 {body.channel} 订单",
        )


def find_idempotent(session: Session, scope: str, key: str) -> Order | None:
    return session.scalar(select(Order).where(Order.idempotency_scope == scope, Order.idempotency_key == key))


def create_order(
    session: Session,
    settings: Settings,
    actor: Principal,
    body: OrderIn,
    *,
    idempotency_key: str | None,
    now: datetime,
) -> tuple[Order, bool]:
    """Create a pending order holding its stock; (order, created). A repeated key returns the first order."""
    _channel_allowed(actor, body)
    customer_id = actor.subject_id if actor.role is Role.CUSTOMER else body.customer_id
    limited = actor.role is Role.CUSTOMER
    if customer_id is not None and _lock_customer(session, customer_id, limited) is None:
        raise not_found("Customer", "顾客", customer_id)
    scope = f"{actor.role.value}#{actor.subject_id}" if idempotency_key else None
    digest = _request_hash(body)
    if idempotency_key and scope:
        existing = find_idempotent(session, scope, idempotency_key)
        if existing is not None:
            return _same_request(existing, digest), False
    site = get_site(session, body.site_id)
    today = now.astimezone(ZoneInfo(site.timezone)).date()
    units = sum(item.quantity for item in body.items)
    if limited:
        _check_unpaid_limits(session, body, customer_id, units, now)
    minutes = pending_minutes(settings.order_pending_minutes, units) if limited else settings.order_pending_minutes

    order = Order(
        number=_number(now),
        site_id=site.id,
        customer_id=customer_id,
        channel=body.channel,
        ota_channel=body.ota_channel,
        ota_order_ref=body.ota_order_ref,
        status=OrderStatus.PENDING.value,
        total_fen=0,
        idempotency_scope=scope,
        idempotency_key=idempotency_key,
        request_hash=digest,
        created_by=actor.actor,
        created_at=now,
        expires_at=now + timedelta(minutes=minutes),
    )
    total = 0
    for item in body.items:
        product = products.get_product(session, item.product_id)
        if product.site_id != site.id or not product.active:
            raise DomainError("product_unavailable", f"Product {product.id} is not on sale here", "该产品不在此处销售")
        if (product.sale_start and now < product.sale_start) or (product.sale_end and now >= product.sale_end):
            raise DomainError("not_on_sale", f"{product.name} is not on sale now", f"{product.name} 当前不在销售期")
        check_visit_date(product, item.visit_date, today)
        if product.kind == ProductKind.SEASON.value and (item.holder_id is None or item.quantity != 1):
            raise DomainError(
                "holder_required",
                "A season pass is sold one per named holder",
                "季卡为实名制，每位持卡人一张",
            )
        if item.holder_id is not None:
            _check_holder(session, item.holder_id, customer_id)
        _, unit = products.price_fen(session, product, item.visit_date)
        products.reserve(session, product, item.visit_date, item.quantity)
        total += unit * item.quantity
        order.items.append(
            OrderItem(
                product_id=product.id,
                visit_date=item.visit_date,
                quantity=item.quantity,
                unit_price_fen=unit,
                holder_id=item.holder_id,
            )
        )
    order.total_fen = total
    session.add(order)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        # A concurrent request with the same key (or OTA reference) won the race.
        if idempotency_key and scope:
            existing = find_idempotent(session, scope, idempotency_key)
            if existing is not None:
                return _same_request(existing, digest), False
        raise Conflict("duplicate_order", "This order already exists", "订单已存在") from exc
    record(session, actor, "order.create", "order", order.id, {"number": order.number, "total_fen": total})
    metrics.order(session, order.channel, "created")
    session.commit()
    return order, True


def _same_request(order: Order, digest: str) -> Order:
    if order.request_hash != digest:
        raise Conflict(
            "idempotency_key_reused",
            "This Idempotency-Key was used for a different order",
            "该幂等键已用于另一个订单",
        )
    return order


def check_visit_date(product: Product, visit_date: date, today: date) -> None:
    """Today (site time zone) up to the product's sale horizon; a season-dated product up to its last day."""
    if visit_date < today:
        raise DomainError("visit_date_past", f"{visit_date} is in the past", f"{visit_date} 已过")
    seasonal = product.season_start is not None and product.season_end is not None
    if seasonal and product.kind in (ProductKind.SEASON.value, ProductKind.PUNCH.value):
        assert product.season_end is not None
        latest = product.season_end
    else:
        latest = today + timedelta(days=product.sale_horizon_days)
    if visit_date > latest:
        raise DomainError(
            "visit_date_out_of_range",
            f"{product.name} is on sale for visits up to {latest}; {visit_date} is not",
            f"{product.name} 仅可预订至 {latest}，{visit_date} 不可预订",
            earliest=today.isoformat(),
            latest=latest.isoformat(),
        )


def _check_holder(session: Session, holder_id: int, customer_id: int | None) -> None:
    """A holder must belong to the order's customer; someone else's and a missing one get the same 404."""
    holder = session.get(Holder, holder_id)
    if holder is None or customer_id is None or holder.customer_id != customer_id:
        raise not_found("Holder", "持卡人", holder_id)


def pending_minutes(base_minutes: int, units: int) -> int:
    """How long an unpaid customer order holds its stock: the full time for a few units, less for more."""
    if units <= FULL_TIME_UNITS:
        return base_minutes
    return max(min(MIN_PENDING_MINUTES, base_minutes), base_minutes * FULL_TIME_UNITS // units)


def _lock_customer(session: Session, customer_id: int, lock: bool) -> int | None:
    # The lock makes a customer's order creations take turns, so the unpaid limits hold under concurrency.
    query = select(Customer.id).where(Customer.id == customer_id)
    return session.scalar(query.with_for_update(key_share=True) if lock else query)


def _check_unpaid_limits(session: Session, body: OrderIn, customer_id: int | None, units: int, now: datetime) -> None:
    if units > MAX_UNITS_PER_ORDER:
        raise DomainError(
            "order_too_large",
            f"At most {MAX_UNITS_PER_ORDER} tickets per online order; buy more at the ticket window",
            f"线上每单最多 {MAX_UNITS_PER_ORDER} 张，更多请到售票窗口购买",
            status_code=422,
            max_units=MAX_UNITS_PER_ORDER,
        )
    wanted = Counter[tuple[int, date]]()
    for item in body.items:
        wanted[(item.product_id, item.visit_date)] += item.quantity
    held = session.execute(
        select(OrderItem.product_id, OrderItem.visit_date, func.sum(OrderItem.quantity))
        .join(Order, Order.id == OrderItem.order_id)
        .where(
            Order.customer_id == customer_id,
            Order.status == OrderStatus.PENDING.value,
            Order.expires_at > now,
            OrderItem.product_id.in_({p for p, _ in wanted}),
        )
        .group_by(OrderItem.product_id, OrderItem.visit_date)
    )
    unpaid = {(p, d): int(n) for p, d, n in held}
    for (product_id, day), n in wanted.items():
        already = unpaid.get((product_id, day), 0)
        if already + n > MAX_UNPAID_UNITS_PER_DAY:
            raise Conflict(
                "unpaid_limit",
                f"You already hold {already} unpaid tickets of product {product_id} for {day}; "
                f"pay or cancel them first (at most {MAX_UNPAID_UNITS_PER_DAY})",
                f"您已有 {already} 张 {day} 的未支付门票，请先支付或取消（最多 {MAX_UNPAID_UNITS_PER_DAY} 张）",
                product_id=product_id,
                day=day.isoformat(),
                unpaid=already,
                max_unpaid=MAX_UNPAID_UNITS_PER_DAY,
            )


def get_order(session: Session, order_id: int, actor: Principal | None = None) -> Order:
    order = session.get(Order, order_id)
    if order is None or (actor is not None and actor.role is Role.CUSTOMER and order.customer_id != actor.subject_id):
        raise not_found("Order", "订单", order_id)
    return order


def list_orders(session: Session, actor: Principal, *, status: str | None, limit: int) -> list[Order]:
    q = select(Order).order_by(Order.id.desc()).limit(limit)
    if actor.role is Role.CUSTOMER:
        q = q.where(Order.customer_id == actor.subject_id)
    if status:
        q = q.where(Order.status == status)
    return list(session.scalars(q))


def transition(session: Session, order: Order, to: OrderStatus, actor: Principal | str, note: str = "") -> None:
    """Move an order along the state machine; refuses illegal moves. The caller commits."""
    current = OrderStatus(order.status)
    if to not in TRANSITIONS[current]:
        raise Conflict(
            "illegal_transition",
            f"Order {order.number} is {current.value}; it cannot become {to.value}",
            f"订单 {order.number} 当前为 {current.value}，不能变为 {to.value}",
        )
    order.status = to.value
    record(session, actor, f"order.{to.value}", "order", order.id, {"from": current.value, "note": note})
    metrics.order(session, order.channel, to.value)


def _release_items(session: Session, order: Order) -> None:
    if order.kind != "ticket":  # a rental's stock or a lesson's seats: its domain gives them back
        from cloud.fulfilment import domain_of

        domain = domain_of(order)
        if domain is not None:
            domain.on_given_up(session, order)
        return
    for item in order.items:
        products.release(session, products.get_product(session, item.product_id), item.visit_date, item.quantity)


def cancel(session: Session, actor: Principal, order_id: int) -> Order:
    get_order(session, order_id, actor)  # a customer's own order, or 404
    # Under the order's lock, read afresh: a payment settling meanwhile waits, or has made it paid (then 409).
    order = session.get(Order, order_id, with_for_update=True, populate_existing=True)
    assert order is not None
    transition(session, order, OrderStatus.CANCELLED, actor)
    _release_items(session, order)
    session.commit()
    return order


def cancel_unfulfillable(session: Session, order: Order, actor: str, reason: str) -> None:
    """Money arrived but the tickets cannot be issued: cancel the order and give its stock back. No commit."""
    transition(session, order, OrderStatus.CANCELLED, actor, f"paid but not issuable: {reason}")
    _release_items(session, order)


def expire_pending(session: Session, now: datetime) -> int:
    """Expire unpaid orders past their time and give their stock back; returns how many."""
    due = list(
        session.scalars(
            select(Order)
            .where(Order.status == OrderStatus.PENDING.value, Order.expires_at <= now)
            .with_for_update(skip_locked=True)
        )
    )
    for order in due:
        transition(session, order, OrderStatus.EXPIRED, "system", "payment timeout")
        _release_items(session, order)
    session.commit()
    return len(due)
