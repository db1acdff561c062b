"""Issue 13, the lean sell path: `POST /orders/counter-sale` makes what the two calls (create, pay) make, in
few statements, from a catalog cache that sees every committed change, and never sells more than the stock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select, update

from cloud.audit.models import AuditEntry
from cloud.deps import Role
from cloud.orders.models import Order
from cloud.points.models import PointsEntry
from cloud.products import catalog
from cloud.products.models import Product, Stock
from cloud.sync.models import FeedChange
from cloud.tickets.models import Ticket
from harness.api import Api
from harness.cloud import live_server
from models.credential import SignedCredential, parse
from tests.cloud.api import make_product, next_weekday

ORDERS = "/api/v1/orders"
SALE = f"{ORDERS}/counter-sale"
WEEKDAY_FEN = 28000


def sale_body(site_id: int, product_id: int, *, quantity: int = 1, customer_id: int | None = None) -> dict[str, Any]:
    item = {"product_id": product_id, "visit_date": next_weekday().isoformat(), "quantity": quantity}
    body: dict[str, Any] = {"site_id": site_id, "items": [item], "payment": {"method": "cash"}}
    body["payment"]["amount_fen"] = WEEKDAY_FEN * quantity
    if customer_id is not None:
        body["customer_id"] = customer_id
    return body


def two_calls(api: Api, body: dict[str, Any]) -> int:
    """The old path: create the counter order, then pay it at the counter; returns the order id."""
    order_in = {k: v for k, v in body.items() if k != "payment"} | {"channel": "counter"}
    order = api.as_(Role.CASHIER).post(ORDERS, json=order_in)
    assert order.status_code == 201, order.text
    paid = api.as_(Role.CASHIER).post(f"{ORDERS}/{order.json()['id']}/payments/counter", json=body["payment"])
    assert paid.status_code == 201, paid.text
    return int(order.json()["id"])


def made_by(app: FastAPI, order_id: int) -> dict[str, Any]:
    """What a sale left in the database, without ids, numbers and times."""
    with app.state.sessionmaker() as s:
        order = s.get(Order, order_id)
        assert order is not None
        tickets = list(s.scalars(select(Ticket).where(Ticket.order_id == order_id).order_by(Ticket.id)))
        ids = {str(t.id) for t in tickets}
        feed = [c.body for c in s.scalars(select(FeedChange).order_by(FeedChange.seq)) if c.kind == "ticket"]
        mine = [b for b in feed if b["ticket"]["ticket_id"] in ids]
        points = list(s.scalars(select(PointsEntry).where(PointsEntry.order_id == order_id)))
        return {
            "order": (order.status, order.total_fen, order.channel, order.customer_id, order.paid_at is not None),
            "items": [(i.product_id, i.visit_date, i.quantity, i.unit_price_fen) for i in order.items],
            "tickets": [
                (t.kind, t.visit_date, t.valid_from, t.valid_until, t.price_fen, t.status, t.unit_no) for t in tickets
            ],
            "tokens": [(t.token != "", t.id) for t in tickets],
            "feed": [{**b["ticket"], "ticket_id": "-"} for b in mine],
            "points": [(p.kind, p.delta) for p in points],
        }


def test_a_counter_sale_makes_what_the_two_calls_make_with_one_audit_row(app: FastAPI, api: Api, site: dict) -> None:
    product = make_product(api, site["id"])
    api.token(Role.CUSTOMER)  # a member buying at the window earns points
    body = sale_body(site["id"], product["id"], quantity=2, customer_id=api.customer_id)

    old = made_by(app, two_calls(api, body))
    r = api.as_(Role.CASHIER).post(SALE, json=body)
    assert r.status_code == 201, r.text
    new = made_by(app, r.json()["order"]["id"])

    assert {k: v for k, v in new.items() if k != "tokens"} == {k: v for k, v in old.items() if k != "tokens"}
    assert new["order"][0] == "issued" and new["points"] and new["points"][0][0] == "earn"
    keys = {app.state.settings.signing_key_id: app.state.settings.signing_key.public_key()}
    for ticket in r.json()["tickets"]:
        credential = parse(ticket["token"], keys)
        assert isinstance(credential, SignedCredential) and credential.ticket_no == ticket["id"]
    with app.state.sessionmaker() as s:
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.entity_id == str(r.json()["order"]["id"])))
        assert list(actions) == ["order.counter_sale"]
        assert s.scalar(select(Stock.sold).where(Stock.product_id == product["id"])) == 4


def test_one_counter_sale_runs_at_most_twelve_statements(app: FastAPI, api: Api, site: dict) -> None:
    product = make_product(api, site["id"])
    body = sale_body(site["id"], product["id"])
    assert api.as_(Role.CASHIER).post(SALE, json=body).status_code == 201  # the catalog is cached now
    statements: list[str] = []

    def seen(_c: Any, _cur: Any, sql: str, *_: Any) -> None:
        statements.append(sql.split()[0])

    event.listen(app.state.engine, "before_cursor_execute", seen)
    try:
        r = api.as_(Role.CASHIER).post(SALE, json=body)
    finally:
        event.remove(app.state.engine, "before_cursor_execute", seen)
    assert r.status_code == 201, r.text
    assert len(statements) <= 12, statements
    assert "SELECT" not in statements, statements  # nothing read back: the catalog came from the cache


def test_a_price_committed_by_another_process_is_charged_by_the_next_sale(app: FastAPI, api: Api, site: dict) -> None:
    product = make_product(api, site["id"])
    body = sale_body(site["id"], product["id"])
    assert api.as_(Role.CASHIER).post(SALE, json=body).status_code == 201
    with app.state.sessionmaker() as s:  # what another cloud process would commit: a new price and the bump
        s.execute(update(Product).where(Product.id == product["id"]).values(weekday_price_fen=30000))
        catalog.bump(s, site["id"])
        s.commit()

    stale = api.as_(Role.CASHIER).post(SALE, json=body)
    assert stale.status_code == 400 and stale.json()["error"]["code"] == "amount_mismatch", stale.text
    assert stale.json()["error"]["details"]["expected_fen"] == 30000
    body["payment"]["amount_fen"] = 30000
    fresh = api.as_(Role.CASHIER).post(SALE, json=body)
    assert fresh.status_code == 201 and fresh.json()["order"]["total_fen"] == 30000, fresh.text


def test_the_new_price_another_process_committed_sells_at_once(app: FastAPI, api: Api, site: dict) -> None:
    product = make_product(api, site["id"])
    body = sale_body(site["id"], product["id"])
    assert api.as_(Role.CASHIER).post(SALE, json=body).status_code == 201  # this process caches the catalog
    with app.state.sessionmaker() as s:
        s.execute(update(Product).where(Product.id == product["id"]).values(weekday_price_fen=30000))
        catalog.bump(s, site["id"])
        s.commit()

    body["payment"]["amount_fen"] = 30000  # the cashier's screen already shows the new price
    sold = api.as_(Role.CASHIER).post(SALE, json=body)
    assert sold.status_code == 201 and sold.json()["order"]["total_fen"] == 30000, sold.text


def test_a_retry_after_the_price_changed_gets_its_sale_not_a_refusal(app: FastAPI, api: Api, site: dict) -> None:
    product = make_product(api, site["id"])
    body = sale_body(site["id"], product["id"])
    key = {"Idempotency-Key": "window-3-sale-0002"}
    first = api.as_(Role.CASHIER).post(SALE, json=body, headers=key)
    with app.state.sessionmaker() as s:
        s.execute(update(Product).where(Product.id == product["id"]).values(weekday_price_fen=30000))
        catalog.bump(s, site["id"])
        s.commit()
    refused = api.as_(Role.CASHIER).post(SALE, json=body)  # another sale at the old price: refused, cache renewed
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "amount_mismatch"

    again = api.as_(Role.CASHIER).post(SALE, json=body, headers=key)  # the answer was lost; the price is new
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["order"]["id"] == first.json()["order"]["id"]


def test_a_retried_sale_answers_the_same_sale_and_a_reused_key_is_refused(app: FastAPI, api: Api, site: dict) -> None:
    product = make_product(api, site["id"], daily_stock=1)
    body = sale_body(site["id"], product["id"])
    key = {"Idempotency-Key": "window-3-sale-0001"}
    first = api.as_(Role.CASHIER).post(SALE, json=body, headers=key)
    again = api.as_(Role.CASHIER).post(SALE, json=body, headers=key)  # the last ticket is gone: still its sale
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["order"]["id"] == first.json()["order"]["id"]
    assert [t["id"] for t in again.json()["tickets"]] == [t["id"] for t in first.json()["tickets"]]
    other = api.as_(Role.CASHIER).post(
        SALE, json={**body, "payment": {"method": "card", "amount_fen": 28000}}, headers=key
    )
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    with app.state.sessionmaker() as s:
        assert s.scalar(select(func.count(Order.id))) == 1


def test_a_customer_cannot_sell_at_the_counter(api: Api, site: dict) -> None:
    product = make_product(api, site["id"])
    assert api.as_(Role.CUSTOMER).post(SALE, json=sale_body(site["id"], product["id"])).status_code == 403


def at_once(base: str, n: int, send: Callable[[httpx.Client], httpx.Response]) -> list[httpx.Response]:
    start = threading.Barrier(n)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=120) as c:
            start.wait()
            return send(c)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_sixty_buyers_at_once_for_twenty_tickets_buy_exactly_twenty(app: FastAPI, api: Api, site: dict) -> None:
    product = make_product(api, site["id"], code="flash", daily_stock=20)
    body = sale_body(site["id"], product["id"])
    headers = {"Authorization": f"Bearer {api.token(Role.CASHIER)}"}
    with live_server(app) as base:
        answers = at_once(base, 60, lambda c: c.post(SALE, json=body, headers=headers))
    codes = sorted((r.status_code, r.json().get("error", {}).get("code", "")) for r in answers)
    assert codes == [(201, "")] * 20 + [(409, "sold_out")] * 40, codes
    with app.state.sessionmaker() as s:
        assert s.scalar(select(Stock.sold).where(Stock.product_id == product["id"])) == 20
        assert s.scalar(select(func.count(Ticket.id)).where(Ticket.product_id == product["id"])) == 20
        assert s.scalar(select(func.count(FeedChange.id)).where(FeedChange.kind == "ticket")) == 20
