"""WeChat Pay refunds against the loopback stand-in: request, notification, query, failures and retries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cloud.app import create_app
from cloud.audit.models import AuditEntry
from cloud.db import utcnow
from cloud.deps import Role
from cloud.payments.wechat import WechatPay
from cloud.payments.wechat_refunds import REFUND_NOTIFY_PATH, WechatRefunds
from cloud.refunds import payout
from cloud.refunds.models import Refund
from cloud.settings import Settings
from harness.api import Api
from harness.cloud import live_server
from harness.processes import poll_until
from tests.cloud.test_wechat_pay import deliver, place_order
from tests.cloud.wechat_platform import Notify, WechatPlatform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WechatPlatform]:
    p = WechatPlatform(tmp_path_factory.mktemp("wechatpay")).start()
    yield p
    p.stop()


@pytest.fixture
def settings(settings: Settings, platform: WechatPlatform) -> Settings:
    return platform.configure(settings)


@pytest.fixture
def wechat(api: Api, platform: WechatPlatform) -> Iterator[WechatPlatform]:
    """The platform delivering refund notifications to this test's cloud, once each, nothing scripted."""
    platform.refund_failures, platform.refund_notify = [], "once"
    platform.refund_sink = lambda n: notify(api, n).status_code
    yield platform
    platform.refund_sink = None


def notify(api: Api, n: Notify) -> httpx.Response:
    return api.as_(None).post(REFUND_NOTIFY_PATH, content=n.body, headers=n.headers)


def paid_order(api: Api, platform: WechatPlatform, product: dict[str, Any]) -> dict[str, Any]:
    """An online order of one day ticket (280.00), paid with WeChat Pay and issued."""
    order = place_order(api, product)
    assert deliver(api, platform.notification(order["number"], order["total_fen"])).status_code == 200
    return order


def refund_all(api: Api, order: dict[str, Any]) -> dict[str, Any]:
    """The customer refunds every ticket of their order (the day product's fee is 10.00)."""
    customer = api.as_(Role.CUSTOMER)
    ids = [t["id"] for t in customer.get(f"/api/v1/orders/{order['id']}/tickets").json()]
    r = customer.post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": ids})
    assert r.status_code == 201, r.text
    return dict(r.json())


def refund_of(api: Api, order: dict[str, Any]) -> dict[str, Any]:
    (refund,) = api.as_(Role.FINANCE).get(f"/api/v1/orders/{order['id']}/refunds").json()
    return dict(refund)


def sweep(app: FastAPI, settings: Settings, *, at: datetime) -> int:
    with app.state.sessionmaker() as session:
        return payout.sweep(session, WechatRefunds(WechatPay(settings)), now=at)


def audited(app: FastAPI, action: str, refund_id: int) -> int:
    with app.state.sessionmaker() as s:
        q = select(func.count()).where(AuditEntry.action == action, AuditEntry.entity_id == str(refund_id))
        return int(s.scalar(q) or 0)


def test_a_refund_of_a_wechat_order_is_sent_and_succeeds_when_wechat_notifies(
    app: FastAPI, api: Api, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = paid_order(api, wechat, day_product)
    refund = refund_all(api, order)
    assert (refund["status"], refund["provider"], refund["attempts"]) == ("processing", "wechat", 1)
    number = refund["out_refund_no"]
    assert number == f"{order['number']}R{refund['id']}"
    at_wechat = wechat.refunds[number]
    assert (at_wechat.refund_fen, at_wechat.total_fen) == (27000, 28000)  # less the 10.00 fee
    assert at_wechat.notify_url == f"https://starfish.test{REFUND_NOTIFY_PATH}"  # the payment notification's host

    with live_server(app) as base:  # the notification crosses a real socket

        def deliver_live(n: Notify) -> int:
            with httpx.Client(base_url=base, timeout=30) as c:
                return c.post(REFUND_NOTIFY_PATH, content=n.body, headers=n.headers).status_code

        wechat.refund_sink = deliver_live
        assert wechat.finish_refund(number, "SUCCESS") == [200]
    settled = refund_of(api, order)
    assert (settled["status"], settled["last_error"], settled["next_attempt_at"]) == ("succeeded", None, None)
    assert settled["settled_at"] is not None
    assert audited(app, "refund.succeeded", refund["id"]) == 1


def test_not_enough_balance_fails_visibly_and_a_retry_sends_the_same_number(
    app: FastAPI, api: Api, settings: Settings, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = paid_order(api, wechat, day_product)
    wechat.refund_failures = ["NOT_ENOUGH"]
    refund = refund_all(api, order)
    assert refund["status"] == "failed"
    assert refund["last_error"].startswith("NOT_ENOUGH")
    assert [r["id"] for r in api.as_(Role.FINANCE).get("/api/v1/refunds/failing").json()] == [refund["id"]]
    assert sweep(app, settings, at=utcnow() + timedelta(minutes=2)) == 0  # a refusal waits for a person

    retry = f"/api/v1/refunds/{refund['id']}/retry"
    for role in (Role.CUSTOMER, Role.CASHIER):
        assert api.as_(role).post(retry).status_code == 403
    r = api.as_(Role.FINANCE).post(retry)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "processing"
    assert wechat.refund_requests.count(refund["out_refund_no"]) == 2
    assert audited(app, "refund.retry", refund["id"]) == 1

    assert wechat.finish_refund(refund["out_refund_no"]) == [200]
    assert refund_of(api, order)["status"] == "succeeded"
    assert api.as_(Role.FINANCE).get("/api/v1/refunds/failing").json() == []
    again = api.as_(Role.ADMIN).post(retry)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "refund_not_retryable")


def test_a_lost_notification_is_found_by_the_query(
    app: FastAPI, api: Api, settings: Settings, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = paid_order(api, wechat, day_product)
    wechat.refund_notify = "never"
    refund = refund_all(api, order)
    assert wechat.finish_refund(refund["out_refund_no"]) == []  # WeChat paid it back and told nobody

    assert sweep(app, settings, at=utcnow()) == 0  # asked no sooner than 1 min after the request
    assert refund_of(api, order)["status"] == "processing"
    assert sweep(app, settings, at=utcnow() + timedelta(minutes=2)) == 1
    settled = refund_of(api, order)
    assert (settled["status"], settled["next_attempt_at"]) == ("succeeded", None)
    assert audited(app, "refund.succeeded", refund["id"]) == 1


def test_a_still_processing_refund_is_asked_after_again_later(
    app: FastAPI, api: Api, settings: Settings, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = paid_order(api, wechat, day_product)
    refund = refund_all(api, order)
    at = utcnow() + timedelta(minutes=2)
    assert sweep(app, settings, at=at) == 1
    still = refund_of(api, order)
    assert still["status"] == "processing"
    assert datetime.fromisoformat(still["next_attempt_at"]) >= at + timedelta(minutes=1)
    assert sweep(app, settings, at=at) == 0
    assert wechat.refund_requests.count(refund["out_refund_no"]) == 1  # asked after, never sent twice


def test_a_duplicate_notification_settles_the_refund_once(
    app: FastAPI, api: Api, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = paid_order(api, wechat, day_product)
    wechat.refund_notify = "twice"
    refund = refund_all(api, order)
    assert wechat.finish_refund(refund["out_refund_no"]) == [200, 200]
    assert refund_of(api, order)["status"] == "succeeded"
    assert audited(app, "refund.succeeded", refund["id"]) == 1

    replay = wechat.refund_notification(refund["out_refund_no"])
    assert notify(api, replay).status_code == 200
    assert notify(api, replay).status_code == 409  # the same signed delivery again: a replay


@pytest.mark.parametrize(
    "forge, status, code",
    [
        pytest.param(
            lambda p, n: p.refund_notification(n, key=p.merchant_key), 401, "bad_signature", id="bad-signature"
        ),
        pytest.param(
            lambda p, n: p.refund_notification(n, timestamp=str(int(utcnow().timestamp()) - 400)),
            401,
            "stale_notification",
            id="stale-timestamp",
        ),
        pytest.param(
            lambda p, n: p.refund_notification(n, tamper=True), 400, "undecryptable_notification", id="tampered"
        ),
    ],
)
def test_a_notification_that_is_not_genuine_changes_nothing(
    api: Api, wechat: WechatPlatform, day_product: dict[str, Any], forge: Any, status: int, code: str
) -> None:
    order = paid_order(api, wechat, day_product)
    wechat.refund_notify = "never"
    refund = refund_all(api, order)
    wechat.finish_refund(refund["out_refund_no"])

    r = notify(api, forge(wechat, refund["out_refund_no"]))
    assert (r.status_code, r.json()) == (status, {"code": "FAIL", "message": r.json()["message"]})
    assert r.json()["message"].startswith(code)
    assert refund_of(api, order)["status"] == "processing"
    assert notify(api, wechat.refund_notification(refund["out_refund_no"])).status_code == 200
    assert refund_of(api, order)["status"] == "succeeded"


def test_a_refund_wechat_closes_is_shown_and_a_retry_pays_it_back(
    app: FastAPI, api: Api, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = paid_order(api, wechat, day_product)
    refund = refund_all(api, order)
    assert wechat.finish_refund(refund["out_refund_no"], "CLOSED") == [200]
    shown = refund_of(api, order)
    assert (shown["status"], shown["last_error"]) == ("failed", "CLOSED: WeChat Pay closed the refund")
    assert [r["id"] for r in api.as_(Role.ADMIN).get("/api/v1/refunds/failing").json()] == [refund["id"]]

    r = api.as_(Role.ADMIN).post(f"/api/v1/refunds/{refund['id']}/retry")
    assert r.json()["status"] == "processing"
    assert wechat.refund_requests.count(refund["out_refund_no"]) == 2
    assert wechat.finish_refund(refund["out_refund_no"]) == [200]
    assert refund_of(api, order)["status"] == "succeeded"


def test_an_abnormal_refund_is_shown_and_asked_after_until_it_is_settled_by_hand(
    app: FastAPI, api: Api, settings: Settings, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = paid_order(api, wechat, day_product)
    refund = refund_all(api, order)
    assert wechat.finish_refund(refund["out_refund_no"], "ABNORMAL") == [200]
    shown = refund_of(api, order)
    assert (shown["status"], shown["last_error"].split(":")[0]) == ("abnormal", "ABNORMAL")
    assert [r["id"] for r in api.as_(Role.FINANCE).get("/api/v1/refunds/failing").json()] == [refund["id"]]

    wechat.refund_notify = "never"
    wechat.finish_refund(refund["out_refund_no"], "SUCCESS")  # settled by hand on the merchant platform
    assert sweep(app, settings, at=utcnow() + timedelta(minutes=4)) == 0  # abnormal: asked after hourly
    with app.state.sessionmaker() as session:  # an hour on (the stand-in signs with the real clock)
        session.get(Refund, refund["id"]).next_attempt_at = utcnow()
        session.commit()
    assert sweep(app, settings, at=utcnow()) == 1
    assert refund_of(api, order)["status"] == "succeeded"


def test_a_genuine_notification_of_a_refund_we_never_made_is_acknowledged(
    api: Api, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = paid_order(api, wechat, day_product)
    refund = refund_all(api, order)
    stranger = wechat.refunds.pop(refund["out_refund_no"])
    stranger.out_refund_no, stranger.status = "MANUAL-0001", "SUCCESS"
    wechat.refunds["MANUAL-0001"] = stranger
    assert notify(api, wechat.refund_notification("MANUAL-0001")).status_code == 200
    assert refund_of(api, order)["status"] == "processing"


def test_a_request_whose_answer_was_lost_is_sent_again_under_the_same_number(
    app: FastAPI, api: Api, settings: Settings, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = paid_order(api, wechat, day_product)
    wechat.refund_failures = ["ACCEPTED_BUT_500"]  # WeChat took the refund, then answered SYSTEM_ERROR
    refund = refund_all(api, order)
    assert (refund["status"], refund["attempts"]) == ("pending_provider", 1)
    assert refund["last_error"].startswith("SYSTEM_ERROR")
    accepted = wechat.refunds[refund["out_refund_no"]]

    assert sweep(app, settings, at=utcnow()) == 0  # sent again 30 s later, not at once
    assert sweep(app, settings, at=utcnow() + timedelta(minutes=1)) == 1
    again = refund_of(api, order)
    assert (again["status"], again["attempts"]) == ("processing", 2)
    assert wechat.refund_requests.count(refund["out_refund_no"]) == 2
    assert wechat.refunds[refund["out_refund_no"]] is accepted  # one refund at WeChat, not two
    assert wechat.finish_refund(refund["out_refund_no"]) == [200]
    assert refund_of(api, order)["status"] == "succeeded"


def test_a_rate_limited_request_is_queried_before_it_is_sent_again(
    app: FastAPI, api: Api, settings: Settings, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = paid_order(api, wechat, day_product)
    wechat.refund_failures = ["FREQUENCY_LIMITED"]
    refund = refund_all(api, order)
    assert refund["status"] == "processing" and refund["last_error"].startswith("FREQUENCY_LIMITED")
    at = utcnow() + timedelta(minutes=2)
    assert sweep(app, settings, at=at) == 1  # WeChat has no such refund: it goes back to be sent
    assert refund_of(api, order)["status"] == "pending_provider"
    assert sweep(app, settings, at=at) == 1
    assert refund_of(api, order)["status"] == "processing"
    assert wechat.refund_requests.count(refund["out_refund_no"]) == 2


def test_a_late_payment_is_refunded_through_wechat_pay(
    app: FastAPI, api: Api, settings: Settings, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = place_order(api, day_product)
    assert api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{order['id']}/cancel").status_code == 200
    assert deliver(api, wechat.notification(order["number"], order["total_fen"])).status_code == 200

    late = refund_of(api, order)
    assert (late["status"], late["ticket_ids"], late["amount_fen"], late["fee_fen"]) == (
        "pending_provider",
        [],
        28000,
        0,
    )
    assert sweep(app, settings, at=utcnow()) == 1
    assert refund_of(api, order)["status"] == "processing"
    assert wechat.refunds[late["out_refund_no"]].refund_fen == 28000
    assert wechat.finish_refund(late["out_refund_no"]) == [200]
    assert refund_of(api, order)["status"] == "succeeded"


def test_the_background_loop_sends_a_late_payments_refund(
    app: FastAPI, api: Api, settings: Settings, wechat: WechatPlatform, day_product: dict[str, Any]
) -> None:
    order = place_order(api, day_product)
    assert api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{order['id']}/cancel").status_code == 200
    assert deliver(api, wechat.notification(order["number"], order["total_fen"])).status_code == 200
    number = refund_of(api, order)["out_refund_no"]

    with TestClient(create_app(settings, expiry_every_s=0.05)):  # the service's loop, on the same database
        assert poll_until(lambda: number in wechat.refunds, 20)
        # WeChat has the request; the loop stores its answer just after: wait for it, not for a lucky schedule.
        assert poll_until(lambda: refund_of(api, order)["status"] == "processing", 20)
