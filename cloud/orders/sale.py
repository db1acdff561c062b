"""The lean counter sale: a ticket-window order created, paid and issued in one request and one transaction.

`POST /orders/counter-sale` does what `POST /orders` + `POST /orders/{id}/payments/counter` do (which keep
working), in about ten statements instead of ~30:

1. the stock, held by one conditional upsert per line (`products.reserve`; never oversold; a sold-out
   answer costs this one statement);
2. the order, inserted already issued, RETURNING its id and the site's `catalog_version`: lines are priced
   from the process's cached catalog and this version confirms it (`cloud.products.catalog`; a changed
   catalog rolls the sale back and sells again from a fresh one);
3. its items, its payment and its tickets (RETURNING their ids; each ticket's token is signed with its
   number, then stored by one executemany UPDATE);
4. one audit row (`order.counter_sale`, naming the payment and the tickets), the customer's points when the
   order names one, and last the feed append (ticket upserts), so the site's feed lock is held shortest.

Nothing is read back after it is written. An Idempotency-Key is honoured: a retry (also one that finds the
stock gone, or that raced its twin) answers with the sale the key made, 200 instead of 201; the same key
with another body is refused (409 `idempotency_key_reused`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud import metrics
from cloud.audit.service import record
from cloud.customers.models import Holder
from cloud.db import Base
from cloud.deps import Principal
from cloud.errors import Conflict, DomainError, not_found
from cloud.faces.gallery import on_passes_issued
from cloud.orders.models import Order, OrderItem, OrderStatus
from cloud.orders.schemas import CounterSaleIn
from cloud.orders.service import (
    _channel_allowed,
    _check_holder,
    _lock_customer,
    _number,
    _same_request,
    check_visit_date,
    find_idempotent,
)
from cloud.payments.models import Payment, PaymentStatus
from cloud.points.service import earn_for_order
from cloud.products import catalog
from cloud.products import service as products
from cloud.products.models import Product
from cloud.settings import Settings
from cloud.sites.models import Site
from cloud.sync.feed import append_changes
from cloud.tickets.models import Ticket, TicketState
from cloud.tickets.service import sign_ticket, validity, wire_ticket
from models import ProductKind
from models.sync import TicketUpsert

MAX_ATTEMPTS = 3  # a catalog changed under the sale this often in a row: answer 503, the cashier retries


@dataclass(slots=True)
class Sale:
    """What a counter sale made: the issued order (with its items), its payment, its tickets."""

    order: Order
    payment: Payment
    tickets: list[Ticket]


class _Taken(Exception):
    """The order's Idempotency-Key (or number) is taken: another request made this sale."""


def counter_sale(
    session: Session,
    settings: Settings,
    actor: Principal,
    body: CounterSaleIn,
    *,
    idempotency_key: str | None,
    now: datetime,
) -> tuple[Sale, bool]:
    """Sell, take the money and issue at the ticket window in one transaction; (sale, created)."""
    _channel_allowed(actor, body)
    scope = f"{actor.role.value}#{actor.subject_id}" if idempotency_key else None
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    for attempt in range(MAX_ATTEMPTS):
        site = catalog.cached(session, body.site_id) if attempt == 0 else catalog.load(session, body.site_id)
        try:
            sale = _sell(session, settings, actor, body, site, scope, idempotency_key, digest, now)
        except catalog.Stale:
            session.rollback()
            continue
        except _Taken:
            session.rollback()
            return _replay(session, scope, idempotency_key, digest), False
        except DomainError as exc:
            # A refusal is never the answer to a retry of a sale that was made (a price changed since, the last
            # ticket gone): that retry gets its sale. And a refusal judged on the cached catalog (not the
            # database's, which only the order INSERT reads) is judged again once on a fresh one: a new price, a
            # product put on sale, a holiday added by another process. "Sold out" is read from the database.
            session.rollback()
            if scope and idempotency_key and find_idempotent(session, scope, idempotency_key) is not None:
                return _replay(session, scope, idempotency_key, digest), False
            if attempt > 0 or exc.code == "sold_out" or catalog.current(session, body.site_id) is site:
                raise
            session.rollback()
            continue
        session.commit()
        return sale, True
    raise DomainError("catalog_busy", "Prices changed meanwhile; try again", "价格刚刚变更，请重试", status_code=503)


def _lines(
    session: Session, body: CounterSaleIn, site: catalog.SiteCatalog, now: datetime
) -> list[tuple[Product, int]]:
    """Each item's product and unit price, with the checks `create_order` makes."""
    today = now.astimezone(site.timezone).date()
    lines = []
    for item in body.items:
        product = site.products.get(item.product_id)
        if product is None or not product.active:
            shown = product or products.get_product(session, item.product_id)  # 404 when it exists nowhere
            raise DomainError("product_unavailable", f"Product {shown.id} is not on sale here", "该产品不在此处销售")
        if (product.sale_start and now < product.sale_start) or (product.sale_end and now >= product.sale_end):
            raise DomainError("not_on_sale", f"{product.name} is not on sale now", f"{product.name} 当前不在销售期")
        check_visit_date(product, item.visit_date, today)
        if product.kind == ProductKind.SEASON.value and (item.holder_id is None or item.quantity != 1):
            raise DomainError(
                "holder_required", "A season pass is sold one per named holder", "季卡为实名制，每位持卡人一张"
            )
        if item.holder_id is not None:
            _check_holder(session, item.holder_id, body.customer_id)
        lines.append((product, site.price_fen(product, item.visit_date, now)[1]))
    return lines


def _sell(
    session: Session,
    settings: Settings,
    actor: Principal,
    body: CounterSaleIn,
    site: catalog.SiteCatalog,
    scope: str | None,
    key: str | None,
    digest: str,
    now: datetime,
) -> Sale:
    if body.customer_id is not None and _lock_customer(session, body.customer_id, False) is None:
        raise not_found("Customer", "顾客", body.customer_id)
    lines = _lines(session, body, site, now)
    total = sum(unit * item.quantity for (_, unit), item in zip(lines, body.items, strict=True))
    if body.payment.amount_fen != total:
        raise DomainError(
            "amount_mismatch",
            f"The sale costs {total} fen, not {body.payment.amount_fen}",
            f"应付 {total} 分，而不是 {body.payment.amount_fen} 分",
            expected_fen=total,
        )
    for (product, _), item in zip(lines, body.items, strict=True):
        products.reserve(session, product, item.visit_date, item.quantity)

    order = Order(
        number=_number(now),
        site_id=site.site_id,
        customer_id=body.customer_id,
        channel="counter",
        ota_channel=None,
        ota_order_ref=None,
        status=OrderStatus.ISSUED.value,
        total_fen=total,
        idempotency_scope=scope,
        idempotency_key=key,
        request_hash=digest,
        created_by=actor.actor,
        created_at=now,
        expires_at=now + timedelta(minutes=settings.order_pending_minutes),
        paid_at=now,
    )
    try:
        order.id, seen = session.execute(_ORDER, {**_values(order), "version_of_site": site.site_id}).one()
    except IntegrityError as exc:
        raise _Taken from exc
    catalog.confirm(site, seen)

    items = [
        OrderItem(
            order_id=order.id,
            product_id=product.id,
            visit_date=item.visit_date,
            quantity=item.quantity,
            unit_price_fen=unit,
            holder_id=item.holder_id,
            last_day=None,
        )
        for (product, unit), item in zip(lines, body.items, strict=True)
    ]
    _insert(session, OrderItem, items)
    order.items = items

    payment = Payment(
        order_id=order.id,
        provider="counter",
        method=body.payment.method,
        status=PaymentStatus.SUCCEEDED.value,
        amount_fen=total,
        provider_ref=None,
        created_at=now,
        paid_at=now,
        recorded_by=actor.actor,
    )
    _insert(session, Payment, [payment])

    tickets = []
    for (product, _), line in zip(lines, items, strict=True):
        valid_from, valid_until = validity(product, line.visit_date, site.timezone)
        for unit_no in range(1, line.quantity + 1):
            tickets.append(
                Ticket(
                    order_id=order.id,
                    order_item_id=line.id,
                    unit_no=unit_no,
                    site_id=site.site_id,
                    product_id=product.id,
                    kind=product.kind,
                    visit_date=line.visit_date,
                    valid_from=valid_from,
                    valid_until=valid_until,
                    entries=product.entries,
                    window_minutes=product.window_minutes if product.kind == ProductKind.TIME_WINDOW else None,
                    holder_id=line.holder_id,
                    price_fen=line.unit_price_fen,
                    status=TicketState.VALID.value,
                    entries_used=0,
                    first_entry_at=None,
                    token="",
                    code=None,
                    issued_at=now,
                )
            )
    _insert(session, Ticket, tickets)
    for ticket in tickets:
        ticket.token = sign_ticket(settings, ticket, site.code)
    tokens = [{"ticket_id": t.id, "ticket_token": t.token} for t in tickets]
    session.execute(_TOKENS, tokens)
    holders = {t.holder_id for t in tickets if t.holder_id is not None}
    if holders:
        named = {h.id: h for h in session.scalars(select(Holder).where(Holder.id.in_(holders)))}
        for ticket in tickets:
            ticket.holder = named.get(ticket.holder_id) if ticket.holder_id is not None else None
    on_passes_issued(session, settings, tickets, now=now)

    detail = {
        "number": order.number,
        "total_fen": total,
        "payment_id": payment.id,
        "method": payment.method,
        "ticket_ids": [t.id for t in tickets],
    }
    record(session, actor, "order.counter_sale", "order", order.id, detail)
    if order.customer_id is not None:
        earn_for_order(session, settings, order, now=now)
    metrics.order(session, "counter", "created")
    metrics.order(session, "counter", OrderStatus.ISSUED.value)
    metrics.payment(session, "counter", PaymentStatus.SUCCEEDED.value)
    # Last: the site's feed lock (taken here) is held only until the commit that follows.
    append_changes(session, site.site_id, [TicketUpsert(ticket=wire_ticket(t)) for t in tickets], now=now)
    return Sale(order, payment, tickets)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# Statements built once (their values come as parameters), so each sale skips building and keying them.
_ORDER = insert(_table(Order)).returning(
    Order.id, select(Site.catalog_version).where(Site.id == bindparam("version_of_site")).scalar_subquery()
)
_TOKENS = (
    update(_table(Ticket)).where(_table(Ticket).c.id == bindparam("ticket_id")).values(token=bindparam("ticket_token"))
)
_INSERTS: dict[type[Base], Any] = {
    model: insert(_table(model)).returning(_table(model).c.id, sort_by_parameter_order=True)
    for model in (OrderItem, Payment, Ticket)
}


def _values(row: Base) -> dict[str, Any]:
    """The columns set on a transient row (others keep their defaults)."""
    state = inspect(row)
    return {c.key: state.dict[c.key] for c in row.__table__.columns if c.key in state.dict}


def _insert(session: Session, model: type[Base], rows: Sequence[Any]) -> None:
    """INSERT transient rows in one statement, RETURNING their ids into them; they stay out of the session."""
    stmt = _INSERTS[model]
    if len(rows) == 1:
        ids = [session.execute(stmt, _values(rows[0])).scalar_one()]
    else:
        ids = list(session.execute(stmt, [_values(r) for r in rows]).scalars())
    for row, new_id in zip(rows, ids, strict=True):
        row.id = new_id


def _replay(session: Session, scope: str | None, key: str | None, digest: str) -> Sale:
    """The sale an Idempotency-Key already made, as it is now."""
    assert scope is not None and key is not None
    order = find_idempotent(session, scope, key)
    if order is None:
        raise Conflict("duplicate_order", "This order already exists", "订单已存在")
    _same_request(order, digest)
    payment = session.scalar(
        select(Payment).where(Payment.order_id == order.id, Payment.provider == "counter").order_by(Payment.id).limit(1)
    )
    if payment is None:
        raise Conflict(
            "idempotency_key_reused", "This Idempotency-Key was used for another order", "该幂等键已用于另一个订单"
        )
    tickets = list(session.scalars(select(Ticket).where(Ticket.order_id == order.id).order_by(Ticket.id)))
    return Sale(order, payment, tickets)
