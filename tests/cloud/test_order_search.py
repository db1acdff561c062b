"""The back office finds orders: by number, ticket, phone, dates, channel and status, a page at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from cloud.db import utcnow
from cloud.deps import Role
from cloud.orders.models import Order
from cloud.tickets.models import Ticket
from harness.api import Api
from tests.cloud.api import next_weekday
from tests.cloud.paid_orders import another_customer, pay, sell, sell_paid

SEARCH = "/api/v1/orders/search"


def found(api: Api, **params: Any) -> list[int]:
    r = api.as_(Role.CASHIER).get(SEARCH, params=params)
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return [o["id"] for o in r.json()["items"]]


def ota_order(api: Api, site_id: int, product_id: int, ota: str, ref: str) -> dict[str, Any]:
    body = {
        "site_id": site_id,
        "channel": "ota",
        "ota_channel": ota,
        "ota_order_ref": ref,
        "items": [{"product_id": product_id, "visit_date": next_weekday().isoformat()}],
    }
    r = api.as_(Role.ADMIN).post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_staff_find_an_order_by_number_ticket_phone_channel_status_and_visit_day(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    sid, pid, day = site["id"], day_product["id"], next_weekday()
    window = sell_paid(app, api, sid, pid, day)
    online = sell(api, sid, pid, day + timedelta(days=7), role=Role.CUSTOMER)  # left unpaid
    douyin = ota_order(api, sid, pid, "douyin", "DY-1")
    pay(app, douyin["id"])
    (window_ticket,) = [t["id"] for t in api.as_(Role.ADMIN).get(f"/api/v1/orders/{window['id']}/tickets").json()]
    (douyin_ticket,) = [t["id"] for t in api.as_(Role.ADMIN).get(f"/api/v1/orders/{douyin['id']}/tickets").json()]
    with app.state.sessionmaker() as session:  # the plain code of an OTA voucher, as the channel stores it
        session.get(Ticket, douyin_ticket).code = "884213377001"
        session.commit()

    assert found(api, number=window["number"]) == [window["id"]]
    assert found(api, number=window["number"].lower()) == [window["id"]]
    assert found(api, number="SF00000000NOPE") == []
    assert found(api, ticket=str(window_ticket)) == [window["id"]]
    assert found(api, ticket="884213377001") == [douyin["id"]]
    assert found(api, phone="13800000000") == [online["id"]]  # the test customer's phone
    assert found(api, phone="13999999999") == []
    assert found(api, channel="counter") == [window["id"]]
    assert found(api, channel="online") == [online["id"]]
    assert found(api, channel="ota") == [douyin["id"]]
    assert found(api, channel="douyin") == [douyin["id"]]
    assert found(api, channel="meituan") == []
    assert found(api, status="pending") == [online["id"]]
    assert found(api, status="issued", channel="counter") == [window["id"]]
    assert found(api, visit_date=(day + timedelta(days=7)).isoformat()) == [online["id"]]
    assert found(api, site_id=sid) == [douyin["id"], online["id"], window["id"]]  # newest first
    assert found(api, site_id=sid + 1) == []


def test_a_date_range_includes_its_start_and_excludes_its_end(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    ids = [sell(api, site["id"], day_product["id"], next_weekday())["id"] for _ in range(3)]
    start = datetime(2026, 12, 1, tzinfo=UTC)
    with app.state.sessionmaker() as session:
        for n, order_id in enumerate(ids):
            session.get(Order, order_id).created_at = start + timedelta(days=n)
        session.commit()
    dec1, dec2, dec3 = ids
    assert found(api, **{"from": "2026-12-01T00:00:00Z", "to": "2026-12-03T00:00:00Z"}) == [dec2, dec1]
    assert found(api, **{"from": "2026-12-02T08:00:00+08:00"}) == [dec3, dec2]  # 08:00 Beijing is midnight UTC
    assert found(api, **{"to": "2026-12-01T00:00:00.000001Z"}) == [dec1]
    r = api.as_(Role.CASHIER).get(SEARCH, params={"from": "2026-12-01T00:00:00"})
    assert r.status_code == 422  # an instant without a time zone is ambiguous: refused


def test_paging_reaches_every_order_and_orders_sold_between_pages_neither_repeat_nor_shift_it(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    sid, pid, day = site["id"], day_product["id"], next_weekday()
    before = [sell(api, sid, pid, day)["id"] for _ in range(7)]
    pages: list[list[int]] = []
    cursor: str | None = None
    sold_meanwhile: list[int] = []
    while True:
        params: dict[str, Any] = {"site_id": sid, "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = api.as_(Role.FINANCE).get(SEARCH, params=params).json()
        pages.append([o["id"] for o in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        sold_meanwhile.append(sell(api, sid, pid, day)["id"])  # the window keeps selling while someone pages

    assert pages == [before[6:3:-1], before[3:0:-1], before[0:1]]
    fresh = api.as_(Role.FINANCE).get(SEARCH, params={"site_id": sid, "limit": 3}).json()
    assert [o["id"] for o in fresh["items"]] == [*sold_meanwhile[::-1], before[6]]


def test_a_season_of_orders_pages_past_any_ceiling(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    template = sell(api, site["id"], day_product["id"], next_weekday())
    at = utcnow()
    with app.state.sessionmaker() as session:  # 520 orders, several sharing one instant: the id breaks ties
        session.add_all(
            Order(
                number=f"SFBULK{n:06d}",
                site_id=site["id"],
                channel="counter",
                status="issued",
                total_fen=28000,
                created_by="test",
                created_at=at - timedelta(seconds=n // 4),
                expires_at=at,
            )
            for n in range(520)
        )
        session.commit()
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        body = api.as_(Role.ADMIN).get(SEARCH, params=params).json()
        seen += [o["id"] for o in body["items"]]
        pages += 1
        if (cursor := body["next_cursor"]) is None:
            break
    assert (pages, len(seen), len(set(seen))) == (3, 521, 521)
    assert template["id"] in seen


def test_staff_see_one_customers_orders_and_only_theirs(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    sid, pid, day = site["id"], day_product["id"], next_weekday()
    mine = [sell(api, sid, pid, day, role=Role.CUSTOMER)["id"] for _ in range(3)]
    other_id, other = another_customer(api, app)
    theirs = sell(api, sid, pid, day, role=Role.CUSTOMER, customer=other)["id"]
    sell(api, sid, pid, day)  # an anonymous window sale
    url = f"/api/v1/customers/{api.customer_id}/orders"

    first = api.as_(Role.CASHIER).get(url, params={"limit": 2}).json()
    rest = api.as_(Role.CASHIER).get(url, params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [o["id"] for o in first["items"] + rest["items"]] == mine[::-1]
    assert rest["next_cursor"] is None
    assert [o["id"] for o in api.as_(Role.FINANCE).get(f"/api/v1/customers/{other_id}/orders").json()["items"]] == [
        theirs
    ]
    assert api.as_(Role.ADMIN).get(url, params={"status": "issued"}).json()["items"] == []
    r = api.as_(Role.ADMIN).get("/api/v1/customers/999999/orders")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "customer_not_found")


@pytest.mark.parametrize(
    ("role", "status"),
    [
        pytest.param(Role.ADMIN, 200, id="admin"),
        pytest.param(Role.CASHIER, 200, id="cashier"),
        pytest.param(Role.FINANCE, 200, id="finance"),
        pytest.param(Role.GATE_TECH, 403, id="gate-tech"),
        pytest.param(Role.VERIFIER, 403, id="verifier"),
        pytest.param(Role.CUSTOMER, 403, id="customer-not-even-their-own"),
        pytest.param(None, 401, id="nobody"),
    ],
)
def test_only_the_back_office_searches_orders(api: Api, site: dict[str, Any], role: Role | None, status: int) -> None:
    api.as_(Role.CUSTOMER)  # the customer exists
    assert api.as_(role).get(SEARCH).status_code == status
    assert api.as_(role).get(f"/api/v1/customers/{api.customer_id}/orders").status_code == status


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("not-a-cursor", id="garbage"),
        pytest.param("MjAyNi0xMi0wMVQwMDowMDowMHwx", id="naive-time"),  # "2026-12-01T00:00:00|1"
        pytest.param("MjAyNi0xMi0wMVQwMDowMDowMCswMDowMHww", id="id-zero"),  # "...+00:00|0"
        pytest.param(
            "OTk5OS0xMi0zMVQyMzo1OTo1OS0xNDowMHwx", id="past-the-last-instant"
        ),  # "9999-12-31T23:59:59-14:00|1"
    ],
)
def test_a_cursor_this_list_never_gave_out_is_a_422(api: Api, cursor: str) -> None:
    r = api.as_(Role.ADMIN).get(SEARCH, params={"cursor": cursor})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "bad_cursor")


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"from": "9999-12-31T23:59:59-14:00"}, id="from-past-the-last-instant"),
        pytest.param({"to": "0001-01-01T00:00:00+14:00"}, id="to-before-the-first-instant"),
        pytest.param({"channel": "window"}, id="unknown-channel"),
        pytest.param({"limit": 201}, id="page-too-large"),
    ],
)
def test_unusable_filters_are_a_422(api: Api, params: dict[str, Any]) -> None:
    assert api.as_(Role.ADMIN).get(SEARCH, params=params).status_code == 422


def test_a_ticket_that_is_no_number_is_looked_for_as_a_plain_code(api: Api) -> None:
    assert found(api, ticket="²") == []  # a digit to Python, but no ticket number
