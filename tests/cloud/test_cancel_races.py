"""Issue 14: cancelling an unpaid order while its payment settles, on PostgreSQL: the money is never lost."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session

from cloud.db import utcnow
from cloud.deps import Principal, Role
from cloud.orders import service as orders
from cloud.orders.models import Order, OrderStatus
from cloud.payments.providers import Confirmation
from cloud.payments.service import settle
from harness.api import Api
from tests.cloud.rental_desk import R, lines, make_desk
from tests.cloud.test_rentals_races import _codes, race

pytestmark = [pytest.mark.rentals, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

CASHIER = Principal(role=Role.CASHIER, subject_id=1, name="window-1")


def test_a_cancel_that_meets_the_payment_settling_waits_and_finds_the_order_paid(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    skis, helmets = make_desk(api, site["id"], tags=["SK-1"], helmets=1)
    body = {"site_id": site["id"], "lines": lines(skis, helmets, n_skis=1, n_helmets=0, unit="day", periods=1)}
    r = api.as_(Role.CUSTOMER).post(
        f"{R}/orders", json={**body, "start_at": (utcnow() + timedelta(hours=1)).isoformat()}
    )
    assert r.status_code == 201, r.text
    order = r.json()

    def pay(s: Session) -> None:
        money = Confirmation(order["number"], "wx-1", order["total_fen"], utcnow())
        settle(s, app.state.settings, "wechat", "jsapi", money, now=utcnow())
        s.commit()

    def cancel(s: Session) -> None:
        orders.cancel(s, CASHIER, order["order_id"])

    assert _codes(race(app, pay, cancel)) == [None, "illegal_transition"]
    with app.state.sessionmaker() as s:
        got = s.get(Order, order["order_id"])
        assert got is not None and got.status != OrderStatus.CANCELLED.value
