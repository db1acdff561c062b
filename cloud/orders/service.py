"""Orders: online and at the ticket window; a state machine; idempotent creation; stock held atomically."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.customers.models import Customer, Holder
from cloud.deps import Principal, Role
from cloud.errors import Conflict, DomainError, Forbidden, not_found
from cloud.orders.models import TRANSITIONS, Order, OrderItem, OrderStatus
from cloud.orders.schemas import OrderIn
from cloud.products import service as products
from cloud.settings import Settings
from cloud.sites.service import get_site
from models import ProductKind


def _number(now: datetime) -> str:
    return f"SF{now:%Y%m%d}{secrets.token_hex(5).upper()}"


def _request_hash(body: OrderIn) -> str:
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
    scope = f"{actor.role.value}#{actor.subject_id}" if idempotency_key else None
    digest = _request_hash(body)
    if idempotency_key and scope:
        existing = find_idempotent(session, scope, idempotency_key)
        if existing is not None:
            return _same_request(existing, digest), False
    customer_id = actor.subject_id if actor.role is Role.CUSTOMER else body.customer_id
    if customer_id is not None and session.get(Customer, customer_id) is None:
        raise not_found("Customer", "顾客", customer_id)
    site = get_site(session, body.site_id)
    today = now.astimezone(ZoneInfo(site.timezone)).date()

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
        expires_at=now + timedelta(minutes=settings.order_pending_minutes),
    )
    total = 0
    for item in body.items:
        product = products.get_product(session, item.product_id)
        if product.site_id != site.id or not product.active:
            raise DomainError("product_unavailable", f"Product {product.id} is not on sale here", "该产品不在此处销售")
        if (product.sale_start and now < product.sale_start) or (product.sale_end and now >= product.sale_end):
            raise DomainError("not_on_sale", f"{product.name} is not on sale now", f"{product.name} 当前不在销售期")
        if item.visit_date < today:
            raise DomainError("visit_date_past", f"{item.visit_date} is in the past", f"{item.visit_date} 已过")
        if product.kind == ProductKind.SEASON.value:
            _check_holder(session, item.holder_id, customer_id, item.quantity)
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


def _check_holder(session: Session, holder_id: int | None, customer_id: int | None, quantity: int) -> None:
    if holder_id is None or quantity != 1:
        raise DomainError(
            "holder_required",
            "A season pass is sold one per named holder",
            "季卡为实名制，每位持卡人一张",
        )
    holder = session.get(Holder, holder_id)
    if holder is None or (customer_id is not None and holder.customer_id != customer_id):
        raise not_found("Holder", "持卡人", holder_id)


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


def _release_items(session: Session, order: Order) -> None:
    for item in order.items:
        products.release(session, products.get_product(session, item.product_id), item.visit_date, item.quantity)


def cancel(session: Session, actor: Principal, order_id: int) -> Order:
    order = get_order(session, order_id, actor)
    transition(session, order, OrderStatus.CANCELLED, actor)
    _release_items(session, order)
    session.commit()
    return order


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
