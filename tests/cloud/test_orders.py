"""Orders: prices from the calendar, stock, the state machine, idempotency, expiry, concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cloud.db import utcnow
from cloud.deps import Role
from cloud.errors import Conflict
from cloud.orders.models import Order, OrderStatus
from cloud.orders.service import expire_pending, transition
from harness.api import Api
from harness.cloud import live_server
from tests.cloud.api import make_product, next_weekday

ORDERS = "/api/v1/orders"


def order_body(
    site: dict[str, Any], product: dict[str, Any], day: date, quantity: int = 1, **kw: Any
) -> dict[str, Any]:
    return {
        "site_id": site["id"],
        "items": [{"product_id": product["id"], "visit_date": day.isoformat(), "quantity": quantity}],
        **kw,
    }


def test_customer_order_is_priced_from_the_calendar_and_holds_stock(
    api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    wednesday, saturday = next_weekday(), next_weekday(weekday=5)
    api.as_(Role.ADMIN).post(
        f"/api/v1/sites/{site['id']}/holidays", json={"day": wednesday.isoformat(), "name": "元旦"}
    )
    r = api.as_(Role.CUSTOMER).post(
        ORDERS,
        json={
            "site_id": site["id"],
            "items": [
                {"product_id": day_product["id"], "visit_date": wednesday.isoformat(), "quantity": 2},
                {"product_id": day_product["id"], "visit_date": saturday.isoformat(), "quantity": 1},
            ],
        },
    )
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "pending"
    assert order["total_fen"] == 2 * 45000 + 38000  # holiday ×2 + weekend
    assert order["customer_id"] == api.customer_id
    price = api.as_(None).get(f"/api/v1/products/{day_product['id']}/price", params={"day": wednesday.isoformat()})
    assert price.json() == {
        "product_id": day_product["id"],
        "day": wednesday.isoformat(),
        "day_type": "holiday",
        "price_fen": 45000,
        "available": 98,
    }


def test_retried_create_with_the_same_idempotency_key_returns_the_same_order(
    api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    body = order_body(site, day_product, next_weekday())
    headers = {"Idempotency-Key": "mini-program-retry-0001"}
    first = api.as_(Role.CUSTOMER).post(ORDERS, json=body, headers=headers)
    again = api.as_(Role.CUSTOMER).post(ORDERS, json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = api.as_(Role.CUSTOMER).post(ORDERS, json=order_body(site, day_product, next_weekday(), 3), headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    price = api.as_(None).get(f"/api/v1/products/{day_product['id']}/price", params={"day": next_weekday().isoformat()})
    assert price.json()["available"] == 99  # stock held once


def test_sold_out_day_refuses_the_order_with_a_clear_error(api: Api, site: dict[str, Any]) -> None:
    product = make_product(api, site["id"], code="few", daily_stock=2)
    ok = api.as_(Role.CASHIER).post(ORDERS, json=order_body(site, product, next_weekday(), 2, channel="counter"))
    assert ok.status_code == 201
    r = api.as_(Role.CASHIER).post(ORDERS, json=order_body(site, product, next_weekday(), 1, channel="counter"))
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "sold_out" and err["message"] and err["message_zh"]


def test_cancelled_order_gives_its_stock_back_and_cannot_be_paid(
    api: Api, app: FastAPI, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = api.as_(Role.CUSTOMER).post(ORDERS, json=order_body(site, day_product, next_weekday(), 5)).json()
    r = api.as_(Role.CUSTOMER).post(f"{ORDERS}/{order['id']}/cancel")
    assert r.json()["status"] == "cancelled"
    price = api.as_(None).get(f"/api/v1/products/{day_product['id']}/price", params={"day": next_weekday().isoformat()})
    assert price.json()["available"] == 100
    again = api.as_(Role.CUSTOMER).post(f"{ORDERS}/{order['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "illegal_transition"
    with app.state.sessionmaker() as s:
        row = s.get(Order, order["id"])
        assert row is not None
        with pytest.raises(Conflict):
            transition(s, row, OrderStatus.PAID, "test")


@pytest.mark.parametrize(
    ("start", "to", "legal"),
    [
        pytest.param(OrderStatus.PENDING, OrderStatus.ISSUED, False, id="pending-to-issued"),
        pytest.param(OrderStatus.PAID, OrderStatus.CANCELLED, False, id="paid-to-cancelled"),
        pytest.param(OrderStatus.ISSUED, OrderStatus.USED, True, id="issued-to-used"),
        pytest.param(OrderStatus.REFUNDED, OrderStatus.ISSUED, False, id="refunded-to-issued"),
        pytest.param(OrderStatus.EXPIRED, OrderStatus.PAID, False, id="expired-to-paid"),
    ],
)
def test_state_machine_refuses_illegal_moves(
    api: Api,
    app: FastAPI,
    site: dict[str, Any],
    day_product: dict[str, Any],
    start: OrderStatus,
    to: OrderStatus,
    legal: bool,
) -> None:
    order = api.as_(Role.CUSTOMER).post(ORDERS, json=order_body(site, day_product, next_weekday())).json()
    with app.state.sessionmaker() as s:
        row = s.get(Order, order["id"])
        assert row is not None
        row.status = start.value
        if legal:
            transition(s, row, to, "test")
            assert row.status == to.value
        else:
            with pytest.raises(Conflict):
                transition(s, row, to, "test")


def test_unpaid_order_expires_after_the_timeout_and_releases_stock(
    api: Api, app: FastAPI, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = api.as_(Role.CUSTOMER).post(ORDERS, json=order_body(site, day_product, next_weekday(), 4)).json()
    with app.state.sessionmaker() as s:
        assert expire_pending(s, utcnow()) == 0
        assert expire_pending(s, utcnow() + timedelta(minutes=16)) == 1
    assert api.as_(Role.CUSTOMER).get(f"{ORDERS}/{order['id']}").json()["status"] == "expired"
    price = api.as_(None).get(f"/api/v1/products/{day_product['id']}/price", params={"day": next_weekday().isoformat()})
    assert price.json()["available"] == 100


def test_customers_see_only_their_own_orders(
    api: Api, app: FastAPI, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    cashier_order = api.as_(Role.CASHIER).post(
        ORDERS, json=order_body(site, day_product, next_weekday(), channel="counter")
    )
    assert cashier_order.status_code == 201
    assert api.as_(Role.CUSTOMER).get(f"{ORDERS}/{cashier_order.json()['id']}").status_code == 404
    assert api.as_(Role.CUSTOMER).get(ORDERS).json() == []
    assert len(api.as_(Role.FINANCE).get(ORDERS).json()) == 1


@pytest.mark.parametrize(
    ("role", "channel", "status"),
    [
        pytest.param(Role.CUSTOMER, "counter", 403, id="customer-cannot-sell-at-the-window"),
        pytest.param(Role.CASHIER, "online", 403, id="cashier-sells-counter-only"),
        pytest.param(Role.CASHIER, "counter", 201, id="cashier-window-sale"),
    ],
)
def test_channels_belong_to_roles(
    api: Api, site: dict[str, Any], day_product: dict[str, Any], role: Role, channel: str, status: int
) -> None:
    r = api.as_(role).post(ORDERS, json=order_body(site, day_product, next_weekday(), channel=channel))
    assert r.status_code == status, r.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"site_id": 1, "items": []}, "items", id="no-items"),
        pytest.param(
            {"site_id": 1, "items": [{"product_id": 1, "visit_date": "2026-13-01"}]}, "visit_date", id="bad-date"
        ),
        pytest.param(
            {"site_id": 1, "items": [{"product_id": 1, "visit_date": "2030-01-01", "quantity": 0}]},
            "quantity",
            id="zero-qty",
        ),
        pytest.param(
            {"site_id": 1, "channel": "ota", "items": [{"product_id": 1, "visit_date": "2030-01-01"}]},
            "ota",
            id="ota-without-ref",
        ),
    ],
)
def test_malformed_orders_get_a_clear_422(api: Api, body: dict[str, Any], field: str) -> None:
    r = api.as_(Role.CUSTOMER).post(ORDERS, json=body)
    assert r.status_code == 422
    assert field in r.text


def test_order_for_a_past_day_is_refused(api: Api, site: dict[str, Any], day_product: dict[str, Any]) -> None:
    r = api.as_(Role.CUSTOMER).post(ORDERS, json=order_body(site, day_product, date.today() - timedelta(days=2)))
    assert r.status_code == 400 and r.json()["error"]["code"] == "visit_date_past"


def test_concurrent_clients_never_oversell(app: FastAPI, api: Api, site: dict[str, Any]) -> None:
    product = make_product(api, site["id"], code="rush", daily_stock=10)
    token = api.token(Role.CASHIER)
    body = order_body(site, product, next_weekday(), channel="counter")
    with live_server(app) as base:

        def buy(_: int) -> int:
            with httpx.Client(base_url=base, timeout=30) as c:
                return c.post(ORDERS, json=body, headers={"Authorization": f"Bearer {token}"}).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            codes = list(pool.map(buy, range(40)))
    assert sorted(codes).count(201) == 10
    assert set(codes) == {201, 409}
    price = api.as_(None).get(f"/api/v1/products/{product['id']}/price", params={"day": next_weekday().isoformat()})
    assert price.json()["available"] == 0
