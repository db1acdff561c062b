"""A fault while issuing paid tickets is not a refusal: the money is not turned into a refund.

Only a refusal made on purpose (the credential cannot carry the ticket, ...) makes an order
unfulfillable; a bug in a deploy answers 503 and the provider or cashier tries again. The bug is
simulated by replacing the ticket issuer for the duration of the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from cloud.audit.models import AuditEntry
from cloud.customers.models import Customer
from cloud.deps import Role
from cloud.orders.models import Order
from cloud.payments.routes import wechat_pay
from cloud.payments.wechat import WechatPay
from cloud.settings import Settings
from cloud.tickets import service as tickets
from cloud.tickets.models import Ticket
from harness.api import Api
from tests.cloud.api import next_weekday
from tests.cloud.wechat_platform import WechatPlatform

pytestmark = pytest.mark.security

ORDERS = "/api/v1/orders"
NOTIFY = "/api/v1/payments/wechat/notify"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


@pytest.fixture
def wechat_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WechatPlatform]:
    p = WechatPlatform(tmp_path_factory.mktemp("wechatpay-faults")).start()
    yield p
    p.stop()


def a_bug_in_issuing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deploy whose ticket issuer crashes on every order (a coding bug, not a refusal)."""

    def broken(*_: Any, **__: Any) -> list[Ticket]:
        raise AttributeError("'NoneType' object has no attribute 'timezone'")

    monkeypatch.setattr(tickets, "issue_for_order", broken)


def place_online_order(app: FastAPI, api: Api, product: dict[str, Any]) -> dict[str, Any]:
    """A pending online order of a customer who signed in with WeChat."""
    customer_client = api.as_(Role.CUSTOMER)  # signs the customer up
    with app.state.sessionmaker() as s:
        customer = s.get(Customer, api.customer_id)
        assert customer is not None
        customer.wechat_openid = OPENID
        s.commit()
    body = {
        "site_id": product["site_id"],
        "items": [{"product_id": product["id"], "visit_date": next_weekday().isoformat(), "quantity": 2}],
    }
    r = customer_client.post(ORDERS, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def state(api: Api, order_id: int) -> tuple[str, list[tuple[str, str | None]]]:
    """The order's status and its payments as (status, provider_ref)."""
    order = api.as_(Role.ADMIN).get(f"{ORDERS}/{order_id}").json()
    pays = api.as_(Role.FINANCE).get(f"{ORDERS}/{order_id}/payments").json()
    return order["status"], [(p["status"], p["provider_ref"]) for p in pays]


def issued(app: FastAPI, order_id: int) -> int:
    with app.state.sessionmaker() as s:
        return int(s.scalar(select(func.count()).select_from(Ticket).where(Ticket.order_id == order_id)) or 0)


def audited(app: FastAPI, action: str) -> int:
    with app.state.sessionmaker() as s:
        return int(s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)) or 0)


def error(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def test_a_bug_while_issuing_leaves_wechat_money_unrecorded_for_a_retry_that_issues_once_fixed(
    app: FastAPI,
    api: Api,
    settings: Settings,
    day_product: dict[str, Any],
    wechat_platform: WechatPlatform,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app.dependency_overrides[wechat_pay] = lambda: WechatPay(wechat_platform.configure(settings))
    placed = place_online_order(app, api, day_product)
    assert api.as_(Role.CUSTOMER).post(f"{ORDERS}/{placed['id']}/payments/wechat").status_code == 201
    notify = wechat_platform.notification(placed["number"], placed["total_fen"])

    with monkeypatch.context() as patched:
        a_bug_in_issuing(patched)
        r = api.as_(None).post(NOTIFY, content=notify.body, headers=notify.headers)

    assert r.status_code == 503, r.text  # not received: WeChat Pay retries
    assert r.json()["message"].startswith("fulfilment_failed")
    assert state(api, placed["id"]) == ("pending", [("pending", None)])  # nothing recorded, not `late`
    assert issued(app, placed["id"]) == 0
    assert (audited(app, "payment.unfulfilled"), audited(app, "payment.succeeded")) == (0, 0)

    # The bug is fixed; WeChat's retry: the same transaction, freshly signed.
    retry = wechat_platform.notification(placed["number"], placed["total_fen"], transaction_id=notify.transaction_id)
    r = api.as_(None).post(NOTIFY, content=retry.body, headers=retry.headers)

    assert r.status_code == 200, r.text
    assert state(api, placed["id"]) == ("issued", [("succeeded", notify.transaction_id)])
    assert issued(app, placed["id"]) == 2


def test_a_bug_while_issuing_at_the_window_takes_no_cash_and_the_order_can_still_be_paid(
    app: FastAPI, api: Api, day_product: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {
        "site_id": day_product["site_id"],
        "channel": "counter",
        "items": [{"product_id": day_product["id"], "visit_date": next_weekday().isoformat(), "quantity": 1}],
    }
    placed = api.as_(Role.CASHIER).post(ORDERS, json=body).json()
    pay = {"method": "cash", "amount_fen": placed["total_fen"]}
    url = f"{ORDERS}/{placed['id']}/payments/counter"

    with monkeypatch.context() as patched:
        a_bug_in_issuing(patched)
        r = api.as_(Role.CASHIER).post(url, json=pay)

    assert error(r) == (503, "fulfilment_failed")
    assert state(api, placed["id"]) == ("pending", [])
    with app.state.sessionmaker() as s:
        order = s.get(Order, placed["id"])
        assert order is not None and order.status == "pending"

    r = api.as_(Role.CASHIER).post(url, json=pay)
    assert r.status_code == 201, r.text
    assert state(api, placed["id"])[0] == "issued"
    assert issued(app, placed["id"]) == 1
