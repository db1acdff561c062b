"""Refunds: per-product rules, money less the fee, revoked tickets on the feed the gates receive."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

import models
from cloud.audit.service import entries
from cloud.db import utcnow
from cloud.deps import Principal, Role
from cloud.errors import Conflict, DomainError
from cloud.points.service import balance
from cloud.products.models import Product
from cloud.refunds.rules import assess, refund_deadline
from cloud.refunds.service import refund
from cloud.tickets.models import Ticket
from cloud.tickets.service import wire_ticket
from harness.api import Api, AuthedClient
from tests.cloud.api import make_product, next_weekday
from tests.cloud.paid_orders import another_customer, pay, sell_paid

SHANGHAI = ZoneInfo("Asia/Shanghai")
CASHIER = Principal(role=Role.CASHIER, subject_id=1, name="cashier-user")


def ticket_ids(api: Api, order_id: int) -> list[int]:
    return [t["id"] for t in api.as_(Role.ADMIN).get(f"/api/v1/orders/{order_id}/tickets").json()]


def available(api: Api, product_id: int, day: date) -> int:
    price = api.as_(None).get(f"/api/v1/products/{product_id}/price", params={"day": day.isoformat()})
    return int(price.json()["available"])


def refund_all(client: AuthedClient, api: Api, order_id: int) -> httpx.Response:
    return client.post(f"/api/v1/orders/{order_id}/refunds", json={"ticket_ids": ticket_ids(api, order_id)})


def test_counter_refund_pays_back_the_price_less_the_fee_and_revokes_the_ticket(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    day = next_weekday()
    order = sell_paid(app, api, site["id"], day_product["id"], day, quantity=2)
    first, second = ticket_ids(api, order["id"])
    assert available(api, day_product["id"], day) == 98

    r = api.as_(Role.CASHIER).post(
        f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [first], "reason": "plans changed"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["ticket_ids"], body["amount_fen"], body["fee_fen"]) == ([first], 27000, 1000)
    assert (body["status"], body["reason"]) == ("succeeded", "plans changed")
    assert body["created_by"] == "cashier:cashier-user"
    assert api.as_(Role.CASHIER).get(f"/api/v1/tickets/{first}").json()["status"] == "refunded"
    assert api.as_(Role.CASHIER).get(f"/api/v1/tickets/{second}").json()["status"] == "valid"
    assert api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}").json()["status"] == "issued"
    assert available(api, day_product["id"], day) == 99
    with app.state.sessionmaker() as session:
        assert wire_ticket(session.get(Ticket, first)).status is models.TicketStatus.REVOKED
        audit = [e for e in entries(session, entity="order") if e.action == "refund.create"]
        assert audit[0].detail["ticket_ids"] == [first]

    feed = api.as_(Role.GATE_TECH).get(f"/api/v1/sites/{site['id']}/revocations").json()
    assert [(i["ticket_id"], i["reason"]) for i in feed["items"]] == [(first, "refunded")]
    assert feed["last_seq"] == feed["items"][0]["seq"]


def test_refunding_the_last_ticket_refunds_the_order_and_the_feed_resumes_after_a_sequence(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=2)
    first, second = ticket_ids(api, order["id"])
    cashier = api.as_(Role.CASHIER)
    assert cashier.post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [first]}).status_code == 201
    seen = api.as_(Role.ADMIN).get(f"/api/v1/sites/{site['id']}/revocations").json()["last_seq"]
    assert cashier.post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [second]}).status_code == 201

    assert api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}").json()["status"] == "refunded"
    feed = api.as_(Role.ADMIN).get(f"/api/v1/sites/{site['id']}/revocations", params={"after": seen}).json()
    assert [i["ticket_id"] for i in feed["items"]] == [second]
    assert feed["last_seq"] > seen
    refunds = api.as_(Role.FINANCE).get(f"/api/v1/orders/{order['id']}/refunds").json()
    assert [r["ticket_ids"] for r in refunds] == [[first], [second]]


def test_online_refund_waits_for_wechat_and_takes_back_the_points_earned(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), role=Role.CUSTOMER)
    customer = api.as_(Role.CUSTOMER)
    assert api.customer_id is not None
    with app.state.sessionmaker() as session:
        assert balance(session, api.customer_id) == 280  # 1 point per yuan of 280.00

    r = customer.post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": ticket_ids(api, order["id"])})
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["amount_fen"]) == ("pending_provider", 27000)
    assert customer.get(f"/api/v1/orders/{order['id']}").json()["status"] == "refunded"
    with app.state.sessionmaker() as session:
        assert balance(session, api.customer_id) == 0  # all of them: the fee the resort keeps earns no points


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        pytest.param({"refundable": False}, "not_refundable", id="product-not-refundable"),
        pytest.param({"refund_cutoff_hours": 24 * 30}, "past_cutoff", id="past-the-cutoff"),
    ],
)
def test_product_rules_refuse_the_refund_with_a_stable_code(
    app: FastAPI, api: Api, site: dict[str, Any], overrides: dict[str, Any], code: str
) -> None:
    product = make_product(api, site["id"], code="strict", **overrides)
    order = sell_paid(app, api, site["id"], product["id"], next_weekday())
    r = refund_all(api.as_(Role.CASHIER), api, order["id"])
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == code
    assert error["message"] and error["message_zh"]
    assert api.as_(Role.ADMIN).get(f"/api/v1/sites/{site['id']}/revocations").json()["items"] == []


def test_a_used_ticket_cannot_be_refunded(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    (ticket_id,) = ticket_ids(api, order["id"])
    with app.state.sessionmaker() as session:  # as sync will record a passage reported by a gate
        ticket = session.get(Ticket, ticket_id)
        ticket.entries_used, ticket.first_entry_at = 1, utcnow()
        session.commit()
    r = api.as_(Role.CASHIER).post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [ticket_id]})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "ticket_used")


def test_a_ticket_is_refunded_once(app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    url, body = f"/api/v1/orders/{order['id']}/refunds", {"ticket_ids": ticket_ids(api, order["id"])}
    assert api.as_(Role.CASHIER).post(url, json=body).status_code == 201
    r = api.as_(Role.ADMIN).post(url, json=body)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "already_refunded")


def test_fee_never_exceeds_the_price(app: FastAPI, api: Api, site: dict[str, Any]) -> None:
    product = make_product(api, site["id"], code="cheap", weekday_price_fen=500, refund_fee_fen=2000)
    order = sell_paid(app, api, site["id"], product["id"], next_weekday())
    r = refund_all(api.as_(Role.CASHIER), api, order["id"])
    assert (r.json()["amount_fen"], r.json()["fee_fen"]) == (0, 500)


def test_two_concurrent_refunds_of_one_ticket_one_wins(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    (ticket_id,) = ticket_ids(api, order["id"])
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt() -> None:
        with app.state.sessionmaker() as session:
            start.wait()
            try:
                refund(session, app.state.settings, CASHIER, order["id"], [ticket_id], "", now=utcnow())
                outcomes.append("refunded")
            except DomainError as exc:
                outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["already_refunded", "refunded"]
    assert len(api.as_(Role.ADMIN).get(f"/api/v1/sites/{site['id']}/revocations").json()["items"]) == 1


def test_a_refund_that_read_a_stale_ticket_is_stopped_by_the_conditional_update(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any], db_url: str
) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite transactions begin IMMEDIATE: a second writer waits, so no stale read can happen")
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    (ticket_id,) = ticket_ids(api, order["id"])
    settings = app.state.settings
    with app.state.sessionmaker() as late, app.state.sessionmaker() as first:
        stale = late.get(Ticket, ticket_id)  # `late` holds this copy (its identity map is weak-referenced)
        assert stale.status == "valid"
        refund(first, settings, CASHIER, order["id"], [ticket_id], "", now=utcnow())
        with pytest.raises(Conflict) as refused:
            refund(late, settings, CASHIER, order["id"], [ticket_id], "", now=utcnow())
    assert refused.value.code == "already_refunded"
    assert "meanwhile" in refused.value.en  # refused by the UPDATE, not by the (stale) checks before it
    assert len(api.as_(Role.FINANCE).get(f"/api/v1/orders/{order['id']}/refunds").json()) == 1


def test_who_may_refund_and_see_refunds(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    online = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), role=Role.CUSTOMER)
    counter = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    (online_ticket,) = ticket_ids(api, online["id"])
    (counter_ticket,) = ticket_ids(api, counter["id"])
    _, stranger = another_customer(api, app)
    online_url = f"/api/v1/orders/{online['id']}/refunds"

    assert stranger.post(online_url, json={"ticket_ids": [online_ticket]}).status_code == 404
    assert stranger.get(online_url).status_code == 404
    for role in (Role.FINANCE, Role.GATE_TECH):
        assert api.as_(role).post(online_url, json={"ticket_ids": [online_ticket]}).status_code == 403
    assert api.as_(Role.GATE_TECH).get(online_url).status_code == 403
    for role in (Role.CUSTOMER, Role.ADMIN, Role.FINANCE, Role.CASHIER):
        assert api.as_(role).get(online_url).json() == [], role
    # A counter order is refunded at the counter, and a ticket must belong to the order named.
    r = api.as_(Role.CASHIER).post(online_url, json={"ticket_ids": [counter_ticket]})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "ticket_not_in_order")
    assert refund_all(api.as_(Role.CUSTOMER), api, counter["id"]).status_code == 404

    feed = f"/api/v1/sites/{site['id']}/revocations"
    assert api.as_(Role.GATE_TECH).get(feed).status_code == 200
    for role in (Role.CASHIER, Role.FINANCE, Role.CUSTOMER):
        assert api.as_(role).get(feed).status_code == 403
    assert api.as_(Role.ADMIN).get("/api/v1/sites/999/revocations").status_code == 404


def test_a_customer_named_on_a_counter_order_refunds_it_at_the_counter(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    api.as_(Role.CUSTOMER)
    body = {
        "site_id": site["id"],
        "channel": "counter",
        "customer_id": api.customer_id,
        "items": [{"product_id": day_product["id"], "visit_date": next_weekday().isoformat()}],
    }
    order = api.as_(Role.CASHIER).post("/api/v1/orders", json=body).json()
    pay(app, order["id"])
    r = refund_all(api.as_(Role.CUSTOMER), api, order["id"])
    assert (r.status_code, r.json()["error"]["code"]) == (403, "refund_at_counter")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"ticket_ids": []}, id="no-tickets"),
        pytest.param({"ticket_ids": [1, 1]}, id="repeated-ticket"),
        pytest.param({"ticket_ids": [0]}, id="bad-id"),
        pytest.param({"ticket_ids": [1], "reason": "x" * 201}, id="reason-too-long"),
        pytest.param({"ticket_ids": [1], "amount_fen": 1}, id="unknown-field"),
    ],
)
def test_malformed_refund_requests_get_a_422(api: Api, body: dict[str, Any]) -> None:
    assert api.as_(Role.CASHIER).post("/api/v1/orders/1/refunds", json=body).status_code == 422


@pytest.mark.parametrize(
    ("cutoff_hours", "now", "refusal"),
    [
        pytest.param(0, datetime(2026, 12, 19, 15, 59, 59, tzinfo=UTC), None, id="until-the-visit-day-starts"),
        pytest.param(0, datetime(2026, 12, 19, 16, 0, tzinfo=UTC), "past_cutoff", id="not-on-the-visit-day"),
        pytest.param(24, datetime(2026, 12, 18, 15, 59, tzinfo=UTC), None, id="a-day-ahead"),
        pytest.param(24, datetime(2026, 12, 18, 16, 0, tzinfo=UTC), "past_cutoff", id="less-than-a-day-ahead"),
    ],
)
def test_cutoff_counts_back_from_midnight_of_the_visit_day_in_beijing(
    cutoff_hours: int, now: datetime, refusal: str | None
) -> None:
    visit = date(2026, 12, 20)
    product = Product(name="全天票", refundable=True, refund_cutoff_hours=cutoff_hours, refund_fee_fen=1000)
    ticket = Ticket(id=7, status="valid", entries_used=0, visit_date=visit, price_fen=28000)
    assert refund_deadline(visit, SHANGHAI, cutoff_hours) == datetime(2026, 12, 19, 16, tzinfo=UTC) - timedelta(
        hours=cutoff_hours
    )
    if refusal is None:
        line = assess(ticket, product, SHANGHAI, now)
        assert (line.ticket_id, line.amount_fen, line.fee_fen) == (7, 27000, 1000)
    else:
        with pytest.raises(Conflict) as refused:
            assess(ticket, product, SHANGHAI, now)
        assert refused.value.code == refusal
