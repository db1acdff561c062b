"""Refunds outside the rules: asked for with a reason, approved or denied by a second person, then made as any."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from cloud.audit.models import AuditEntry
from cloud.db import utcnow
from cloud.deps import Role
from cloud.points.service import balance
from cloud.refunds.models import Refund
from cloud.settings import Settings
from cloud.sync.models import FeedChange
from cloud.tickets.models import Ticket
from harness.api import Api
from harness.cloud import live_server
from models import TicketStatus
from models.sync import StatusChange
from tests.cloud.api import make_product, next_weekday
from tests.cloud.paid_orders import sell_paid
from tests.cloud.test_wechat_pay import deliver, place_order
from tests.cloud.wechat_platform import WechatPlatform

STORM = "lifts closed by the storm at 11:00"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WechatPlatform]:
    p = WechatPlatform(tmp_path_factory.mktemp("wechatpay")).start()
    yield p
    p.stop()


@pytest.fixture
def settings(settings: Settings, platform: WechatPlatform) -> Settings:
    return platform.configure(settings)


def tickets_of(api: Api, order_id: int) -> list[int]:
    return [t["id"] for t in api.as_(Role.ADMIN).get(f"/api/v1/orders/{order_id}/tickets").json()]


def available(api: Api, product_id: int, day: date) -> int:
    price = api.as_(None).get(f"/api/v1/products/{product_id}/price", params={"day": day.isoformat()})
    return int(price.json()["available"])


def used_at_the_gate(app: FastAPI, ticket_id: int) -> None:
    with app.state.sessionmaker() as session:  # as sync records a passage a gate reported
        ticket = session.get(Ticket, ticket_id)
        ticket.entries_used, ticket.first_entry_at = 1, utcnow()
        session.commit()


def ask(api: Api, order_id: int, ticket_ids: list[int], role: Role = Role.CASHIER, **extra: Any) -> httpx.Response:
    body = {"ticket_ids": ticket_ids, "reason": STORM, **extra}
    return api.as_(role).post(f"/api/v1/orders/{order_id}/refund-reviews", json=body)


def decide(api: Api, review_id: int, verdict: str, role: Role = Role.FINANCE, reason: str = "ok") -> httpx.Response:
    return api.as_(role).post(f"/api/v1/refund-reviews/{review_id}/{verdict}", json={"reason": reason})


def revoked_on_the_feeds(api: Api, app: FastAPI, site_id: int) -> tuple[list[int], list[StatusChange]]:
    feed = api.as_(Role.ADMIN).get(f"/api/v1/sites/{site_id}/revocations").json()["items"]
    with app.state.sessionmaker() as session:
        bodies = session.scalars(
            select(FeedChange.body)
            .where(FeedChange.site_id == site_id, FeedChange.kind == "status")
            .order_by(FeedChange.seq)
        )
        return [i["ticket_id"] for i in feed], [StatusChange.model_validate(b) for b in bodies]


def audit_actions(app: FastAPI, review_id: int) -> list[tuple[str, str]]:
    with app.state.sessionmaker() as session:
        rows = session.execute(
            select(AuditEntry.action, AuditEntry.actor)
            .where(AuditEntry.entity == "refund_review", AuditEntry.entity_id == str(review_id))
            .order_by(AuditEntry.id)
        )
        return [(a, b) for a, b in rows]


def test_a_used_ticket_of_a_weather_closure_is_refunded_in_full_once_finance_approves(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    day = next_weekday()
    order = sell_paid(app, api, site["id"], day_product["id"], day)
    (ticket,) = tickets_of(api, order["id"])
    used_at_the_gate(app, ticket)
    assert (
        api.as_(Role.CASHIER)
        .post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [ticket]})
        .json()["error"]["code"]
        == "ticket_used"
    )

    r = ask(api, order["id"], [ticket], waive_fee=True)
    assert r.status_code == 201, r.text
    review = r.json()
    assert (review["status"], review["rule_codes"], review["requested_by"]) == (
        "pending_review",
        ["ticket_used"],
        "cashier:cashier-user",
    )
    # Asked for, nothing changed yet: the ticket still admits, no stock back.
    assert api.as_(Role.CASHIER).get(f"/api/v1/tickets/{ticket}").json()["status"] == "valid"
    assert revoked_on_the_feeds(api, app, site["id"]) == ([], [])
    assert available(api, day_product["id"], day) == 99

    r = decide(api, review["id"], "approve", reason="storm closure confirmed by ops")
    assert r.status_code == 200, r.text
    refund = r.json()
    assert (refund["amount_fen"], refund["fee_fen"], refund["status"]) == (28000, 0, "succeeded")  # cash back
    assert (refund["ticket_ids"], refund["reason"], refund["created_by"]) == ([ticket], STORM, "finance:finance-user")
    assert api.as_(Role.CASHIER).get(f"/api/v1/tickets/{ticket}").json()["status"] == "refunded"
    assert revoked_on_the_feeds(api, app, site["id"]) == (
        [ticket],
        [StatusChange(ticket_id=str(ticket), status=TicketStatus.REVOKED, reason="refunded")],
    )
    assert available(api, day_product["id"], day) == 100
    decided = api.as_(Role.CASHIER).get(f"/api/v1/refund-reviews/{review['id']}").json()
    assert (decided["status"], decided["refund_id"], decided["decided_by"], decided["decision_reason"]) == (
        "approved",
        refund["id"],
        "finance:finance-user",
        "storm closure confirmed by ops",
    )
    assert audit_actions(app, review["id"]) == [
        ("refund_review.request", "cashier:cashier-user"),
        ("refund_review.approve", "finance:finance-user"),
    ]


def test_past_the_cutoff_a_wechat_order_is_paid_back_through_wechat_less_the_fee_and_its_points_go(
    app: FastAPI, api: Api, site: dict[str, Any], platform: WechatPlatform
) -> None:
    product = make_product(api, site["id"], code="strict", refund_cutoff_hours=24 * 30)
    order = place_order(api, product)
    assert deliver(api, platform.notification(order["number"], order["total_fen"])).status_code == 200
    assert api.customer_id is not None
    with app.state.sessionmaker() as session:
        assert balance(session, api.customer_id) == 280
    tickets = tickets_of(api, order["id"])

    review = ask(api, order["id"], tickets, role=Role.ADMIN).json()
    assert review["rule_codes"] == ["past_cutoff"]
    assert decide(api, review["id"], "approve", role=Role.CASHIER).status_code == 403  # the window only asks
    r = decide(api, review["id"], "approve")
    assert r.status_code == 200, r.text
    refund = r.json()
    assert (refund["provider"], refund["status"], refund["amount_fen"]) == ("wechat", "processing", 27000)
    at_wechat = platform.refunds[refund["out_refund_no"]]
    assert (at_wechat.refund_fen, at_wechat.total_fen) == (27000, 28000)
    with app.state.sessionmaker() as session:
        assert balance(session, api.customer_id) == 0
    assert api.as_(Role.CUSTOMER).get(f"/api/v1/orders/{order['id']}").json()["status"] == "refunded"


def test_a_denied_request_changes_nothing_and_cannot_be_approved_afterwards(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    (ticket,) = tickets_of(api, order["id"])
    used_at_the_gate(app, ticket)
    review = ask(api, order["id"], [ticket]).json()

    r = decide(api, review["id"], "deny", role=Role.ADMIN, reason="skied until 15:00; lifts reopened")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["refund_id"]) == ("denied", None)
    r = decide(api, review["id"], "approve")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "review_decided")
    assert api.as_(Role.FINANCE).get(f"/api/v1/orders/{order['id']}/refunds").json() == []
    assert api.as_(Role.CASHIER).get(f"/api/v1/tickets/{ticket}").json()["status"] == "valid"
    assert revoked_on_the_feeds(api, app, site["id"]) == ([], [])
    assert [a for a, _ in audit_actions(app, review["id"])] == ["refund_review.request", "refund_review.deny"]
    assert ask(api, order["id"], [ticket]).status_code == 201  # a new request, with new facts, may follow


def test_the_requester_may_not_approve_their_own_request_but_may_withdraw_it(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    (ticket,) = tickets_of(api, order["id"])
    used_at_the_gate(app, ticket)
    review = ask(api, order["id"], [ticket], role=Role.ADMIN).json()

    r = decide(api, review["id"], "approve", role=Role.ADMIN)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "own_request")
    assert r.json()["error"]["message_zh"]
    assert api.as_(Role.ADMIN).get(f"/api/v1/refund-reviews/{review['id']}").json()["status"] == "pending_review"
    r = decide(api, review["id"], "deny", role=Role.ADMIN, reason="asked for the wrong ticket")
    assert (r.status_code, r.json()["status"]) == (200, "denied")


def test_refused_requests_say_why(app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=2)
    first, second = tickets_of(api, order["id"])

    r = ask(api, order["id"], [first])  # within the rules, the fee kept: no reason for a review
    assert (r.status_code, r.json()["error"]["code"]) == (409, "no_review_needed")
    assert ask(api, order["id"], [first], waive_fee=True).status_code == 201  # within the rules, fee waived
    r = ask(api, order["id"], [second, first], waive_fee=True)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "review_pending")
    assert r.json()["error"]["details"]["ticket_ids"] == [first]
    r = ask(api, order["id"], [999_999], waive_fee=True)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "ticket_not_in_order")
    assert api.as_(Role.CASHIER).post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [second]}).is_success
    r = ask(api, order["id"], [second], waive_fee=True)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "already_refunded")
    r = ask(api, order["id"], [second], reason="   ")
    assert r.status_code == 422  # a request without a reason


def test_a_ticket_refunded_while_its_request_waited_is_not_refunded_twice(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    (ticket,) = tickets_of(api, order["id"])
    review = ask(api, order["id"], [ticket], waive_fee=True).json()
    r = api.as_(Role.CASHIER).post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [ticket]})
    assert r.status_code == 201  # meanwhile the window refunded it under the rules, less the fee

    r = decide(api, review["id"], "approve")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "already_refunded")
    assert api.as_(Role.ADMIN).get(f"/api/v1/refund-reviews/{review['id']}").json()["status"] == "pending_review"
    assert len(api.as_(Role.FINANCE).get(f"/api/v1/orders/{order['id']}/refunds").json()) == 1
    assert decide(api, review["id"], "deny", reason="refunded at the window").status_code == 200


def test_a_ticket_used_while_its_request_waited_makes_the_approval_stale_until_asked_again(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    day = next_weekday()
    order = sell_paid(app, api, site["id"], day_product["id"], day)
    (ticket,) = tickets_of(api, order["id"])
    review = ask(api, order["id"], [ticket], waive_fee=True).json()  # unused when asked: the fee waived
    used_at_the_gate(app, ticket)  # the skier went up anyway while the request waited

    r = decide(api, review["id"], "approve")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "review_stale")
    assert r.json()["error"]["details"]["ticket_ids"] == [ticket]
    assert api.as_(Role.ADMIN).get(f"/api/v1/refund-reviews/{review['id']}").json()["status"] == "pending_review"
    assert api.as_(Role.CASHIER).get(f"/api/v1/tickets/{ticket}").json()["status"] == "valid"
    assert api.as_(Role.FINANCE).get(f"/api/v1/orders/{order['id']}/refunds").json() == []
    assert (revoked_on_the_feeds(api, app, site["id"]), available(api, day_product["id"], day)) == (([], []), 99)

    assert decide(api, review["id"], "deny", reason="used since; ask again").status_code == 200
    again = ask(api, order["id"], [ticket], waive_fee=True).json()
    assert again["rule_codes"] == ["ticket_used"]  # the second reviewer sees the use this time
    r = decide(api, again["id"], "approve")
    assert r.status_code == 200, r.text
    assert api.as_(Role.CASHIER).get(f"/api/v1/tickets/{ticket}").json()["status"] == "refunded"


def test_two_approvals_at_once_make_one_refund(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    (ticket,) = tickets_of(api, order["id"])
    used_at_the_gate(app, ticket)
    review = ask(api, order["id"], [ticket], waive_fee=True).json()
    url = f"/api/v1/refund-reviews/{review['id']}/approve"
    approvers = [{"Authorization": f"Bearer {api.token(role)}"} for role in (Role.ADMIN, Role.FINANCE)]
    start = threading.Barrier(2)

    with live_server(app) as base:

        def approve(headers: dict[str, str]) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=60) as c:
                start.wait()
                return c.post(url, json={"reason": "storm"}, headers=headers)

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(approve, approvers))

    assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
    assert [r.json()["error"]["code"] for r in answers if r.status_code == 409] == ["review_decided"]
    with app.state.sessionmaker() as session:
        assert session.scalar(select(func.count(Refund.id))) == 1
    assert revoked_on_the_feeds(api, app, site["id"])[0] == [ticket]


def test_refunds_across_orders_page_and_filter_for_finance(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    orders = [sell_paid(app, api, site["id"], day_product["id"], next_weekday()) for _ in range(3)]
    made = []
    for order in orders:
        body = {"ticket_ids": tickets_of(api, order["id"])}
        made.append(api.as_(Role.CASHIER).post(f"/api/v1/orders/{order['id']}/refunds", json=body).json()["id"])

    first = api.as_(Role.FINANCE).get("/api/v1/refunds", params={"limit": 2}).json()
    rest = api.as_(Role.FINANCE).get("/api/v1/refunds", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [r["id"] for r in first["items"] + rest["items"]] == made[::-1]
    assert rest["next_cursor"] is None
    listed = api.as_(Role.ADMIN).get("/api/v1/refunds", params={"status": "succeeded", "site_id": site["id"]})
    assert len(listed.json()["items"]) == 3
    assert api.as_(Role.ADMIN).get("/api/v1/refunds", params={"status": "failed"}).json()["items"] == []
    assert api.as_(Role.ADMIN).get("/api/v1/refunds", params={"site_id": site["id"] + 1}).json()["items"] == []
    assert api.as_(Role.ADMIN).get("/api/v1/refunds", params={"from": "2999-01-01T00:00:00Z"}).json()["items"] == []
    assert len(api.as_(Role.ADMIN).get("/api/v1/refunds", params={"to": "2999-01-01T00:00:00Z"}).json()["items"]) == 3
    assert api.as_(Role.CASHIER).get("/api/v1/refunds").status_code == 403


def test_the_review_queue_lists_what_waits(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    orders = [sell_paid(app, api, site["id"], day_product["id"], next_weekday()) for _ in range(3)]
    ids = [ask(api, o["id"], tickets_of(api, o["id"]), waive_fee=True).json()["id"] for o in orders]
    decide(api, ids[0], "deny")

    waiting = api.as_(Role.FINANCE).get("/api/v1/refund-reviews", params={"status": "pending_review"}).json()
    assert [r["id"] for r in waiting["items"]] == ids[:0:-1]
    one = api.as_(Role.CASHIER).get("/api/v1/refund-reviews", params={"limit": 1}).json()
    two = api.as_(Role.CASHIER).get("/api/v1/refund-reviews", params={"limit": 2, "cursor": one["next_cursor"]})
    assert [r["id"] for r in one["items"] + two.json()["items"]] == ids[::-1]
    by_order = api.as_(Role.ADMIN).get("/api/v1/refund-reviews", params={"order_id": orders[1]["id"]}).json()
    assert [r["id"] for r in by_order["items"]] == [ids[1]]
    assert api.as_(Role.ADMIN).get("/api/v1/refund-reviews", params={"site_id": site["id"] + 1}).json()["items"] == []
    for role in (Role.CUSTOMER, Role.GATE_TECH, Role.VERIFIER):
        assert api.as_(role).get("/api/v1/refund-reviews").status_code == 403
        assert ask(api, orders[0]["id"], [1], role=role).status_code == 403
    assert ask(api, orders[0]["id"], [1], role=Role.FINANCE).status_code == 403  # finance decides, never asks
    assert api.as_(Role.ADMIN).get("/api/v1/refund-reviews/999999").status_code == 404
