"""Payments at the ticket window, who may record and read them, and an unconfigured WeChat Pay."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from cloud.audit.models import AuditEntry
from cloud.db import utcnow
from cloud.deps import Role
from cloud.orders.models import Order
from cloud.tickets.models import Ticket
from harness.api import Api
from harness.cloud import live_server
from tests.cloud.api import next_weekday


def counter_order(api: Api, product: dict[str, Any], quantity: int = 2) -> dict[str, Any]:
    body = {
        "site_id": product["site_id"],
        "channel": "counter",
        "items": [{"product_id": product["id"], "visit_date": next_weekday().isoformat(), "quantity": quantity}],
    }
    r = api.as_(Role.CASHIER).post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def order_status(api: Api, order_id: int) -> str:
    return str(api.as_(Role.ADMIN).get(f"/api/v1/orders/{order_id}").json()["status"])


def payments(api: Api, order_id: int) -> list[dict[str, Any]]:
    r = api.as_(Role.FINANCE).get(f"/api/v1/orders/{order_id}/payments")
    assert r.status_code == 200, r.text
    return list(r.json())


def count(api: Api, model: Any, *where: Any) -> int:
    with api.app.state.sessionmaker() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_cash_at_the_window_pays_and_issues_the_order(api: Api, day_product: dict[str, Any]) -> None:
    order = counter_order(api, day_product, quantity=2)
    r = api.as_(Role.CASHIER).post(
        f"/api/v1/orders/{order['id']}/payments/counter", json={"method": "cash", "amount_fen": order["total_fen"]}
    )
    assert r.status_code == 201, r.text
    payment = r.json()
    assert payment["provider"] == "counter"
    assert payment["method"] == "cash"
    assert payment["status"] == "succeeded"
    assert payment["amount_fen"] == order["total_fen"] == 2 * 28000
    assert payment["recorded_by"] == "cashier:cashier-user"
    assert order_status(api, order["id"]) == "issued"
    assert count(api, Ticket, Ticket.order_id == order["id"]) == 2
    assert count(api, AuditEntry, AuditEntry.action == "payment.succeeded", AuditEntry.entity_id == str(payment["id"]))
    assert [p["id"] for p in payments(api, order["id"])] == [payment["id"]]


@pytest.mark.parametrize("tendered", [pytest.param(-1, id="short"), pytest.param(+1, id="over")])
def test_card_for_the_wrong_amount_is_refused_and_changes_nothing(
    api: Api, day_product: dict[str, Any], tendered: int
) -> None:
    order = counter_order(api, day_product)
    r = api.as_(Role.CASHIER).post(
        f"/api/v1/orders/{order['id']}/payments/counter",
        json={"method": "card", "amount_fen": order["total_fen"] + tendered},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "amount_mismatch"
    assert r.json()["error"]["message_zh"]
    assert order_status(api, order["id"]) == "pending"
    assert payments(api, order["id"]) == []


def test_an_order_is_paid_only_once_at_the_window(api: Api, day_product: dict[str, Any]) -> None:
    order = counter_order(api, day_product)
    url, body = f"/api/v1/orders/{order['id']}/payments/counter", {"method": "cash", "amount_fen": order["total_fen"]}
    assert api.as_(Role.CASHIER).post(url, json=body).status_code == 201
    again = api.as_(Role.ADMIN).post(url, json=body)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "order_not_payable"
    assert len(payments(api, order["id"])) == 1


def test_an_expired_order_cannot_be_paid_at_the_window(api: Api, day_product: dict[str, Any]) -> None:
    order = counter_order(api, day_product)
    with api.app.state.sessionmaker() as s:
        s.get(Order, order["id"]).expires_at = utcnow() - timedelta(seconds=1)
        s.commit()
    r = api.as_(Role.CASHIER).post(
        f"/api/v1/orders/{order['id']}/payments/counter", json={"method": "cash", "amount_fen": order["total_fen"]}
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "order_not_payable"


def test_paying_an_unknown_order_is_not_found(api: Api) -> None:
    r = api.as_(Role.CASHIER).post("/api/v1/orders/999999/payments/counter", json={"method": "cash", "amount_fen": 1})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "order_not_found"


@pytest.mark.parametrize(
    ("role", "status"),
    [
        pytest.param(Role.CASHIER, 201, id="cashier"),
        pytest.param(Role.ADMIN, 201, id="admin"),
        pytest.param(Role.FINANCE, 403, id="finance"),
        pytest.param(Role.GATE_TECH, 403, id="gate_tech"),
        pytest.param(Role.CUSTOMER, 403, id="customer"),
        pytest.param(None, 401, id="anonymous"),
    ],
)
def test_only_the_window_records_counter_payments(
    api: Api, day_product: dict[str, Any], role: Role | None, status: int
) -> None:
    order = counter_order(api, day_product)
    r = api.as_(role).post(
        f"/api/v1/orders/{order['id']}/payments/counter", json={"method": "cash", "amount_fen": order["total_fen"]}
    )
    assert r.status_code == status, r.text
    assert order_status(api, order["id"]) == ("issued" if status == 201 else "pending")


@pytest.mark.parametrize(
    ("role", "status"),
    [
        pytest.param(Role.ADMIN, 200, id="admin"),
        pytest.param(Role.FINANCE, 200, id="finance"),
        pytest.param(Role.CASHIER, 200, id="cashier"),
        pytest.param(Role.GATE_TECH, 403, id="gate_tech"),
        pytest.param(Role.CUSTOMER, 403, id="customer"),
        pytest.param(None, 401, id="anonymous"),
    ],
)
def test_who_may_read_an_orders_payments(api: Api, day_product: dict[str, Any], role: Role | None, status: int) -> None:
    order = counter_order(api, day_product)
    assert api.as_(role).get(f"/api/v1/orders/{order['id']}/payments").status_code == status


def test_counter_payment_body_is_validated(api: Api, day_product: dict[str, Any]) -> None:
    order = counter_order(api, day_product)
    url = f"/api/v1/orders/{order['id']}/payments/counter"
    assert api.as_(Role.CASHIER).post(url, json={"method": "bitcoin", "amount_fen": 1}).status_code == 422
    assert api.as_(Role.CASHIER).post(url, json={"method": "cash", "amount_fen": "lots"}).status_code == 422
    assert api.as_(Role.CASHIER).post("/api/v1/orders/0/payments/counter", json={}).status_code == 422


def test_unconfigured_wechat_pay_is_refused_clearly(api: Api, day_product: dict[str, Any]) -> None:
    body = {
        "site_id": day_product["site_id"],
        "items": [{"product_id": day_product["id"], "visit_date": next_weekday().isoformat()}],
    }
    order = api.as_(Role.CUSTOMER).post("/api/v1/orders", json=body).json()
    r = api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{order['id']}/payments/wechat")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "payment_provider_unconfigured"
    assert "STARFISH_WECHAT_MCHID" in r.json()["error"]["message"]

    notify = api.as_(None).post("/api/v1/payments/wechat/notify", content=b"{}")
    assert notify.status_code == 503
    assert notify.json()["code"] == "FAIL"
    assert order_status(api, order["id"]) == "pending"


def test_two_cashiers_at_once_take_the_money_only_once(app: FastAPI, api: Api, day_product: dict[str, Any]) -> None:
    order = counter_order(api, day_product)
    url, body = f"/api/v1/orders/{order['id']}/payments/counter", {"method": "cash", "amount_fen": order["total_fen"]}
    headers = {"Authorization": f"Bearer {api.token(Role.CASHIER)}"}
    with live_server(app) as base:

        def take(_: int) -> int:
            with httpx.Client(base_url=base, timeout=30) as c:
                return c.post(url, json=body, headers=headers).status_code

        with ThreadPoolExecutor(max_workers=4) as pool:
            codes = sorted(pool.map(take, range(4)))
    assert codes == [201, 409, 409, 409]
    assert [p["status"] for p in payments(api, order["id"])] == ["succeeded"]
    assert count(api, Ticket, Ticket.order_id == order["id"]) == 2
