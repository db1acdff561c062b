"""Money back on rental and lesson orders goes the way the money came (`cloud/refunds/money.py`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cloud.db import utcnow
from cloud.deps import Role
from cloud.payments.providers import Confirmation
from cloud.payments.service import settle
from cloud.refunds.models import Refund, RefundStatus
from harness.api import Api
from tests.cloud.rental_desk import R, lines, make_desk

pytestmark = pytest.mark.rentals


def _online_rental(api: Api, site: dict[str, Any], skis: dict[str, Any], helmets: dict[str, Any]) -> dict[str, Any]:
    start = (utcnow() + timedelta(hours=1)).isoformat()
    body = {"site_id": site["id"], "lines": lines(skis, helmets, n_skis=1, n_helmets=0, unit="day", periods=1)}
    r = api.as_(Role.CUSTOMER).post(f"{R}/orders", json={**body, "start_at": start})
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    return order


def _refunds(app: FastAPI, order_id: int) -> list[tuple[int, str, str | None, str]]:
    with app.state.sessionmaker() as s:
        rows = s.scalars(select(Refund).where(Refund.order_id == order_id).order_by(Refund.id))
        return [(x.amount_fen, x.status, x.provider, x.reason) for x in rows]


def test_an_online_rental_paid_in_cash_at_the_desk_gets_its_deposit_back_in_cash(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    skis, helmets = make_desk(api, site["id"], tags=["SK-1"], helmets=1)
    order = _online_rental(api, site, skis, helmets)
    clerk = api.as_(Role.RENTAL_CLERK)
    paid = {"method": "cash", "amount_fen": order["total_fen"]}
    assert clerk.post(f"{R}/orders/{order['order_id']}/payments/counter", json=paid).status_code == 201
    assert clerk.post(f"{R}/orders/{order['order_id']}/hand-out", json={"tags": ["SK-1"]}).status_code == 200

    r = clerk.post(f"{R}/orders/{order['order_id']}/return", json={"assets": [{"tag": "SK-1"}]})

    assert r.status_code == 200, r.text
    [(amount, status, provider, _)] = _refunds(app, order["order_id"])
    assert amount == skis["deposit_fen"] and status == RefundStatus.SUCCEEDED.value and provider is None


def test_a_late_wechat_payment_refunded_apart_does_not_block_the_deposit_refund(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    skis, helmets = make_desk(api, site["id"], tags=["SK-1"], helmets=1)
    order = _online_rental(api, site, skis, helmets)
    clerk = api.as_(Role.RENTAL_CLERK)
    paid = {"method": "cash", "amount_fen": order["total_fen"]}
    assert clerk.post(f"{R}/orders/{order['order_id']}/payments/counter", json=paid).status_code == 201
    with app.state.sessionmaker() as s:  # the customer's WeChat payment lands after the desk took cash
        late = Confirmation(order["number"], "wx-late-1", order["total_fen"], utcnow())
        settle(s, app.state.settings, "wechat", "jsapi", late, now=utcnow())
        s.commit()
    assert clerk.post(f"{R}/orders/{order['order_id']}/hand-out", json={"tags": ["SK-1"]}).status_code == 200

    r = clerk.post(f"{R}/orders/{order['order_id']}/return", json={"assets": [{"tag": "SK-1"}]})

    assert r.status_code == 200, r.text
    refunds = _refunds(app, order["order_id"])
    assert (order["total_fen"], "wechat", "late payment") in [(a, p, why) for a, _, p, why in refunds]
    assert (skis["deposit_fen"], RefundStatus.SUCCEEDED.value, None) in [(a, s, p) for a, s, p, _ in refunds]
