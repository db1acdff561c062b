"""Issue 14, rentals (租赁): a desk and an online rental from order to the deposit coming back by itself."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cloud.db import utcnow
from cloud.deps import Principal, Role
from cloud.orders.models import Order
from cloud.payments.providers import Confirmation
from cloud.payments.service import settle
from cloud.refunds.models import Refund
from cloud.rentals import desk
from cloud.rentals.models import RentalAsset, RentalItem
from cloud.rentals.orders import on_given_up
from cloud.rentals.schemas import HandOutIn, ReturnIn
from harness.api import Api
from tests.cloud.rental_desk import R, lines, make_desk

pytestmark = pytest.mark.rentals

CLERK = Principal(role=Role.RENTAL_CLERK, subject_id=1, name="desk-1")


def rent(api: Api, site_id: int, body_lines: list[dict[str, Any]], role: Role = Role.RENTAL_CLERK, **kw: Any) -> Any:
    r = api.as_(role).post(f"{R}/orders", json={"site_id": site_id, "lines": body_lines, **kw})
    assert r.status_code == 201, r.text
    return r.json()


def pay_cash(api: Api, order: dict[str, Any]) -> None:
    body = {"method": "cash", "amount_fen": order["total_fen"]}
    r = api.as_(Role.RENTAL_CLERK).post(f"{R}/orders/{order['order_id']}/payments/counter", json=body)
    assert r.status_code == 201, r.text


def error(r: Any) -> str:
    return str(r.json()["error"]["code"])


def refunds_of(app: FastAPI, order_id: int) -> list[tuple[int, str, str]]:
    with app.state.sessionmaker() as s:
        rows = s.scalars(select(Refund).where(Refund.order_id == order_id).order_by(Refund.id))
        return [(x.amount_fen, x.status, x.reason) for x in rows]


def item_stock(app: FastAPI, item_id: int) -> tuple[int, int]:
    with app.state.sessionmaker() as s:
        item = s.get(RentalItem, item_id)
        assert item is not None
        return item.stock, item.available


def test_desk_rental_goes_out_comes_back_in_two_trips_and_the_deposit_is_paid_back_in_cash(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    skis, helmets = make_desk(api, site["id"], tags=["SK-1", "SK-2", "SK-3"], helmets=5)
    body = lines(skis, helmets, n_skis=2, n_helmets=1, unit="day", periods=1)
    order = rent(api, site["id"], body, phone="13812345678", name="王五")
    assert (order["total_fen"], order["deposit_fen"], order["rent_fen"]) == (2 * 62000 + 13000, 110000, 27000)
    assert (item_stock(app, skis["id"]), item_stock(app, helmets["id"])) == ((3, 1), (5, 4))  # held at ordering
    pay_cash(api, order)
    oid = order["order_id"]
    clerk, handheld = api.as_(Role.RENTAL_CLERK), api.as_(Role.VERIFIER)
    helmet_line = next(x["id"] for x in order["lines"] if x["item_id"] == helmets["id"])

    r = clerk.post(
        f"{R}/orders/{oid}/hand-out", json={"tags": ["SK-1"], "counted": [{"line_id": helmet_line, "quantity": 1}]}
    )
    assert r.status_code == 200, r.text
    r = handheld.post(f"{R}/orders/{oid}/hand-out", json={"tags": ["SK-1"]})
    assert (r.status_code, error(r)) == (409, "asset_not_available")  # never out twice
    r = handheld.post(f"{R}/orders/{oid}/hand-out", json={"tags": ["SK-2"]})
    assert r.json()["status"] == "out" and r.json()["assets_out"] == ["SK-1", "SK-2"]
    r = handheld.post(f"{R}/orders/{oid}/hand-out", json={"tags": ["SK-3"]})
    assert (r.status_code, error(r)) == (409, "nothing_to_hand_out")  # two pairs rented, two out

    found = api.as_(Role.CASHIER).get(f"{R}/orders", params={"tag": "SK-2"}).json()
    assert [o["number"] for o in found] == [order["number"]]
    assert [o["order_id"] for o in clerk.get(f"{R}/orders", params={"phone": "13812345678"}).json()] == [oid]
    scanned = handheld.get(f"{R}/assets/by-tag", params={"tag": "SK-1"}).json()
    assert (scanned["status"], scanned["order_number"]) == ("out", order["number"])

    r = handheld.post(f"{R}/orders/{oid}/return", json={"assets": [{"tag": "SK-1"}]})
    assert (r.json()["status"], r.json()["assets_out"], refunds_of(app, oid)) == ("out", ["SK-2"], [])
    r = clerk.post(f"{R}/orders/{oid}/return", json={"counted": [{"line_id": helmet_line, "quantity": 2}]})
    assert (r.status_code, error(r)) == (409, "more_back_than_out")
    r = clerk.post(
        f"{R}/orders/{oid}/return",
        json={"assets": [{"tag": "SK-2"}], "counted": [{"line_id": helmet_line, "quantity": 1}]},
    )
    done = r.json()
    assert (done["status"], done["order_status"], done["deposit_refund_fen"], done["owed_fen"]) == (
        "closed",
        "used",
        110000,
        0,
    )
    assert refunds_of(app, oid) == [(110000, "succeeded", "rental deposit")]  # cash back at the desk
    assert (item_stock(app, skis["id"]), item_stock(app, helmets["id"])) == ((3, 3), (5, 5))
    r = clerk.post(f"{R}/orders/{oid}/return", json={"assets": [{"tag": "SK-2"}]})
    assert (r.status_code, error(r)) == (409, "rental_not_at_desk")


def _paid_desk_order(app: FastAPI, api: Api, site_id: int, body_lines: list[dict[str, Any]]) -> dict[str, Any]:
    order = rent(api, site_id, body_lines)
    pay_cash(api, order)
    return order


def test_overtime_damage_and_loss_are_charged_from_the_deposit_and_the_rest_comes_back(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    skis, helmets = make_desk(api, site["id"], tags=["SK-1", "SK-2"], helmets=3)
    order = _paid_desk_order(app, api, site["id"], lines(skis, helmets, n_skis=2, n_helmets=2, unit="hour", periods=2))
    helmet_line = next(x["id"] for x in order["lines"] if x["item_id"] == helmets["id"])
    oid = order["order_id"]
    with app.state.sessionmaker() as s:
        desk.hand_out(
            s,
            CLERK,
            oid,
            HandOutIn.model_validate({"tags": ["SK-1", "SK-2"], "counted": [{"line_id": helmet_line, "quantity": 2}]}),
            now=utcnow(),
        )
    due = datetime.fromisoformat(order["lines"][0]["due_at"])
    settings = app.state.settings
    with app.state.sessionmaker() as s:  # 10 minutes late: within the grace, no overtime; a helmet lost
        body = ReturnIn.model_validate(
            {"assets": [{"tag": "SK-1"}], "counted": [{"line_id": helmet_line, "quantity": 1, "condition": "lost"}]}
        )
        desk.return_items(s, settings, CLERK, oid, body, now=due + timedelta(minutes=10))
    with app.state.sessionmaker() as s:  # 1 h 20 late: two started hours; damaged with a fee the clerk gives
        body = ReturnIn.model_validate(
            {
                "assets": [{"tag": "SK-2", "condition": "damaged", "damage_fen": 5000}],
                "counted": [{"line_id": helmet_line, "quantity": 1, "condition": "damaged"}],
            }
        )
        desk.return_items(s, settings, CLERK, oid, body, now=due + timedelta(minutes=80))
    charges = 30000 + (2 * 3000 + 5000) + (2 * 1000 + 2000)  # helmet lost; skis 2 h + damage; helmet 2 h + damage
    deposit = 2 * 50000 + 2 * 10000
    got = api.as_(Role.RENTAL_CLERK).get(f"{R}/orders/{oid}").json()
    assert (got["status"], got["charges_fen"], got["deposit_refund_fen"]) == ("closed", charges, deposit - charges)
    assert refunds_of(app, oid) == [(deposit - charges, "succeeded", "rental deposit")]
    with app.state.sessionmaker() as s:
        assert {a.tag: a.status for a in s.scalars(select(RentalAsset))} == {"SK-1": "available", "SK-2": "damaged"}
    assert item_stock(app, skis["id"]) == (2, 1)  # the damaged pair is off the shelf until repaired
    assert item_stock(app, helmets["id"]) == (1, 1)  # one lost, one damaged: both out of the stock
    r = api.as_(Role.ADMIN).patch(f"{R}/assets/{_asset_id(app, 'SK-2')}", json={"status": "available", "note": "waxed"})
    assert r.status_code == 200 and item_stock(app, skis["id"]) == (2, 2)


def _asset_id(app: FastAPI, tag: str) -> int:
    with app.state.sessionmaker() as s:
        return int(s.scalars(select(RentalAsset.id).where(RentalAsset.tag == tag)).one())


def test_overtime_is_capped_at_the_deposit_and_a_loss_beyond_it_is_owed(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    skis, helmets = make_desk(api, site["id"], tags=["SK-1", "SK-2"], helmets=1)
    order = _paid_desk_order(app, api, site["id"], lines(skis, helmets, n_skis=2, n_helmets=0, unit="hour", periods=1))
    oid = order["order_id"]
    due = datetime.fromisoformat(order["lines"][0]["due_at"])
    settings = app.state.settings
    with app.state.sessionmaker() as s:
        desk.hand_out(s, CLERK, oid, HandOutIn(tags=["SK-1", "SK-2"]), now=utcnow())
    with app.state.sessionmaker() as s:  # two days late: overtime stops at the pair's deposit; the other is lost
        body = ReturnIn.model_validate({"assets": [{"tag": "SK-1"}, {"tag": "SK-2", "condition": "lost"}]})
        desk.return_items(s, settings, CLERK, oid, body, now=due + timedelta(days=2))
    got = api.as_(Role.RENTAL_CLERK).get(f"{R}/orders/{oid}").json()
    assert (got["charges_fen"], got["deposit_refund_fen"], got["owed_fen"]) == (50000 + 200000, 0, 150000)
    assert refunds_of(app, oid) == []
    assert item_stock(app, skis["id"]) == (1, 1)


def test_an_online_rental_paid_by_wechat_gets_its_deposit_back_through_wechat(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    skis, helmets = make_desk(api, site["id"], tags=["SK-1"], helmets=2)
    start = (utcnow() + timedelta(hours=3)).isoformat()
    order = rent(
        api,
        site["id"],
        lines(skis, helmets, n_skis=1, n_helmets=1, unit="day", periods=1),
        Role.CUSTOMER,
        start_at=start,
    )
    assert order["channel"] == "online" and order["customer_id"] == api.customer_id
    with app.state.sessionmaker() as s:
        settle(
            s,
            app.state.settings,
            "wechat",
            "jsapi",
            Confirmation(order["number"], "wx-1", order["total_fen"], utcnow()),
            now=utcnow(),
        )
        s.commit()
    mine = api.as_(Role.CUSTOMER).get(f"{R}/orders/{order['order_id']}").json()
    assert (mine["status"], mine["order_status"]) == ("ready", "issued")
    r = api.as_(Role.RENTAL_CLERK).post(
        f"{R}/orders/{order['order_id']}/payments/counter", json={"method": "cash", "amount_fen": order["total_fen"]}
    )
    assert (r.status_code, error(r)) == (409, "order_not_payable")
    helmet_line = next(x["id"] for x in order["lines"] if x["item_id"] == helmets["id"])
    handheld = api.as_(Role.VERIFIER)
    oid = order["order_id"]
    assert (
        handheld.post(
            f"{R}/orders/{oid}/hand-out", json={"tags": ["SK-1"], "counted": [{"line_id": helmet_line, "quantity": 1}]}
        ).status_code
        == 200
    )
    r = handheld.post(f"{R}/orders/{oid}/return", json={"assets": [{"tag": "SK-1", "condition": "lost"}]})
    assert (r.status_code, error(r)) == (403, "clerk_only")  # a loss and its fee are the desk's to declare
    r = handheld.post(f"{R}/orders/{oid}/return", json={"assets": [{"tag": "SK-1", "damage_fen": 99999}]})
    assert (r.status_code, error(r), r.json()["error"]["message_zh"] != "") == (403, "clerk_only", True)
    done = handheld.post(
        f"{R}/orders/{oid}/return",
        json={"assets": [{"tag": "SK-1"}], "counted": [{"line_id": helmet_line, "quantity": 1}]},
    ).json()
    assert (done["status"], done["assets_out"], refunds_of(app, oid)) == ("out", [], [])  # no money at the handheld
    done = api.as_(Role.RENTAL_CLERK).post(f"{R}/orders/{oid}/close").json()
    assert (done["status"], done["deposit_refund_fen"]) == ("closed", 60000)
    assert refunds_of(app, oid) == [(60000, "pending_provider", "rental deposit")]  # the refund sweep sends it
    with app.state.sessionmaker() as s:
        queued = s.scalars(select(Refund).where(Refund.order_id == oid)).one()
        assert (queued.provider, queued.out_refund_no) == ("wechat", f"{order['number']}R{queued.id}")

    helmet_only = lines(skis, helmets, n_skis=0, n_helmets=1, unit="hour", periods=1)
    for _ in range(2):
        rent(api, site["id"], helmet_only, Role.CUSTOMER, start_at=start)
    r = api.as_(Role.CUSTOMER).post(
        f"{R}/orders", json={"site_id": site["id"], "lines": helmet_only, "start_at": start}
    )
    assert (r.status_code, error(r)) == (409, "too_many_unpaid")  # each unpaid order holds units off the shelf


def test_an_asset_out_on_one_rental_cannot_go_out_on_another_and_the_last_pair_is_promised_once(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    skis, helmets = make_desk(api, site["id"], tags=["SK-1", "SK-2"], helmets=0)
    one = _paid_desk_order(app, api, site["id"], lines(skis, helmets, n_skis=1, n_helmets=0, unit="day", periods=1))
    two = _paid_desk_order(app, api, site["id"], lines(skis, helmets, n_skis=1, n_helmets=0, unit="day", periods=1))
    clerk = api.as_(Role.RENTAL_CLERK)
    assert clerk.post(f"{R}/orders/{one['order_id']}/hand-out", json={"tags": ["SK-1"]}).status_code == 200
    r = clerk.post(f"{R}/orders/{two['order_id']}/hand-out", json={"tags": ["SK-1"]})
    assert (r.status_code, error(r), r.json()["error"]["details"]["status"]) == (409, "asset_not_available", "out")
    r = clerk.post(
        f"{R}/orders",
        json={"site_id": site["id"], "lines": lines(skis, helmets, n_skis=1, n_helmets=0, unit="hour", periods=1)},
    )
    assert (r.status_code, error(r)) == (409, "rental_unavailable")  # both pairs are promised
    r = clerk.post(
        f"{R}/orders",
        json={"site_id": site["id"], "lines": lines(skis, helmets, n_skis=0, n_helmets=1, unit="hour", periods=1)},
    )
    assert (r.status_code, error(r)) == (409, "rental_unavailable")  # no helmets at all

    r = clerk.post(f"{R}/orders/{two['order_id']}/close")
    assert r.json()["status"] == "closed" and r.json()["deposit_refund_fen"] == 50000  # never picked up: deposit back
    assert item_stock(app, skis["id"]) == (2, 1)  # its pair is free again
    assert clerk.post(f"{R}/orders/{one['order_id']}/close").json()["error"]["code"] == "rental_still_out"

    ticket = api.as_(Role.CASHIER).post(
        "/api/v1/orders",
        json={
            "site_id": site["id"],
            "channel": "counter",
            "items": [{"product_id": day_product["id"], "visit_date": one["lines"][0]["due_at"][:10], "quantity": 1}],
        },
    )
    r = clerk.post(
        f"{R}/orders/{ticket.json()['id']}/payments/counter",
        json={"method": "cash", "amount_fen": ticket.json()["total_fen"]},
    )
    assert (r.status_code, error(r)) == (400, "not_a_rental")  # the rental desk takes money for rentals only


def test_an_unpaid_rental_given_up_frees_its_units_and_a_paid_one_never_does(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    skis, helmets = make_desk(api, site["id"], tags=["SK-1"], helmets=3)
    paid = _paid_desk_order(app, api, site["id"], lines(skis, helmets, n_skis=0, n_helmets=1, unit="hour", periods=3))
    with app.state.sessionmaker() as s:  # a cancel or expiry that read the order before the money came in
        on_given_up(s, s.get(Order, paid["order_id"]))
        s.commit()
    assert item_stock(app, helmets["id"]) == (3, 2)  # the paid rental keeps its helmet
    assert api.as_(Role.RENTAL_CLERK).get(f"{R}/orders/{paid['order_id']}").json()["status"] == "ready"
    order = rent(api, site["id"], lines(skis, helmets, n_skis=1, n_helmets=2, unit="hour", periods=3))
    assert (item_stock(app, skis["id"]), item_stock(app, helmets["id"])) == ((1, 0), (3, 0))
    r = api.as_(Role.RENTAL_CLERK).post(f"{R}/orders/{order['order_id']}/hand-out", json={"tags": ["SK-1"]})
    assert (r.status_code, error(r)) == (409, "rental_not_at_desk")  # not paid yet
    from cloud.orders.service import expire_pending

    with app.state.sessionmaker() as s:
        assert expire_pending(s, utcnow() + timedelta(hours=1)) == 1
    assert (item_stock(app, skis["id"]), item_stock(app, helmets["id"])) == ((1, 1), (3, 2))
    assert api.as_(Role.RENTAL_CLERK).get(f"{R}/orders/{order['order_id']}").json()["status"] == "cancelled"
