"""WeChat Pay APIv3 against a loopback stand-in of the platform: prepay, pay parameters, notifications."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import func, select

from cloud.customers.models import Customer
from cloud.db import utcnow
from cloud.deps import Role
from cloud.errors import DomainError
from cloud.orders.models import Order
from cloud.payments.routes import wechat_pay
from cloud.payments.wechat import MAX_NOTIFY_BYTES, WechatPay, WechatPayConfig
from cloud.settings import Settings
from cloud.tickets.models import Ticket
from harness.api import Api
from harness.cloud import live_server
from tests.cloud.api import next_weekday
from tests.cloud.wechat_platform import Notify, WechatPlatform, rsa_verifies

NOTIFY = "/api/v1/payments/wechat/notify"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WechatPlatform]:
    """One stand-in platform (and one set of RSA keys) for the whole session."""
    p = WechatPlatform(tmp_path_factory.mktemp("wechatpay")).start()
    yield p
    p.stop()


@pytest.fixture
def settings(settings: Settings, platform: WechatPlatform) -> Settings:
    return platform.configure(settings)


@pytest.fixture
def customer_order(api: Api, day_product: dict[str, Any]) -> dict[str, Any]:
    """A pending online order of a customer who signed in with WeChat."""
    return place_order(api, day_product)


def place_order(api: Api, product: dict[str, Any], quantity: int = 1) -> dict[str, Any]:
    customer = api.as_(Role.CUSTOMER)
    with api.app.state.sessionmaker() as s:
        s.get(Customer, api.customer_id).wechat_openid = OPENID
        s.commit()
    body = {
        "site_id": product["site_id"],
        "items": [{"product_id": product["id"], "visit_date": next_weekday().isoformat(), "quantity": quantity}],
    }
    r = customer.post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def deliver(api: Api, notify: Notify) -> httpx.Response:
    """POST a notification as WeChat does: anonymous, the exact signed bytes."""
    return api.as_(None).post(NOTIFY, content=notify.body, headers=notify.headers)


def state(api: Api, order_id: int) -> tuple[str, list[tuple[str, str | None]]]:
    """The order's status and its payments as (status, provider_ref)."""
    order = api.as_(Role.ADMIN).get(f"/api/v1/orders/{order_id}").json()
    pays = api.as_(Role.FINANCE).get(f"/api/v1/orders/{order_id}/payments").json()
    return order["status"], [(p["status"], p["provider_ref"]) for p in pays]


def tickets(api: Api, order_id: int) -> int:
    with api.app.state.sessionmaker() as s:
        return int(s.scalar(select(func.count()).select_from(Ticket).where(Ticket.order_id == order_id)) or 0)


def test_prepay_returns_mini_program_params_signed_by_the_merchant(
    api: Api, platform: WechatPlatform, customer_order: dict[str, Any]
) -> None:
    r = api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{customer_order['id']}/payments/wechat")
    assert r.status_code == 201, r.text
    params, payment = r.json()["params"], r.json()["payment"]

    prepay = platform.prepays[customer_order["number"]]
    assert params["package"] == f"prepay_id={prepay.prepay_id}"
    assert params["signType"] == "RSA"
    message = f"{platform.appid}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n".encode()
    assert rsa_verifies(platform.merchant_key.public_key(), message, params["paySign"])
    assert prepay.body["amount"] == {"total": customer_order["total_fen"], "currency": "CNY"}
    assert prepay.body["payer"] == {"openid": OPENID}
    assert prepay.body["notify_url"] == "https://starfish.test/api/v1/payments/wechat/notify"
    assert prepay.body["time_expire"].endswith("+08:00")
    assert payment["status"] == "pending"
    assert state(api, customer_order["id"]) == ("pending", [("pending", None)])


def test_asking_to_pay_again_reuses_the_pending_payment(
    api: Api, platform: WechatPlatform, customer_order: dict[str, Any]
) -> None:
    url = f"/api/v1/orders/{customer_order['id']}/payments/wechat"
    first, second = (api.as_(Role.CUSTOMER).post(url).json() for _ in range(2))
    assert first["payment"]["id"] == second["payment"]["id"]
    assert first["params"]["package"] == second["params"]["package"]


def test_a_merchant_signature_the_platform_rejects_is_a_clear_502(
    api: Api, app: FastAPI, settings: Settings, platform: WechatPlatform, customer_order: dict[str, Any], tmp_path: Path
) -> None:
    wrong_key = tmp_path / "not_the_merchant_key.pem"
    wrong_key.write_bytes(
        platform.platform_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    misconfigured = settings.model_copy(update={"wechat_merchant_key_file": str(wrong_key)})
    app.dependency_overrides[wechat_pay] = lambda: WechatPay(misconfigured)
    refusals = len(platform.refusals)
    r = api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{customer_order['id']}/payments/wechat")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "wechat_pay_refused"
    assert platform.refusals[refusals:] == ["signature does not verify"]
    assert state(api, customer_order["id"]) == ("pending", [])


def test_a_prepay_answer_not_signed_by_the_platform_is_refused(
    api: Api, platform: WechatPlatform, customer_order: dict[str, Any]
) -> None:
    platform.response_key = platform.merchant_key
    try:
        r = api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{customer_order['id']}/payments/wechat")
    finally:
        platform.response_key = platform.platform_key
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "wechat_pay_bad_response"
    assert state(api, customer_order["id"]) == ("pending", [])


def test_only_the_customer_who_owns_the_order_starts_a_wechat_payment(api: Api, customer_order: dict[str, Any]) -> None:
    url = f"/api/v1/orders/{customer_order['id']}/payments/wechat"
    assert api.as_(Role.CASHIER).post(url).status_code == 403
    assert api.as_(None).post(url).status_code == 401
    with api.app.state.sessionmaker() as s:
        s.get(Order, customer_order["id"]).customer_id = None  # now someone else's (a window order)
        s.commit()
    r = api.as_(Role.CUSTOMER).post(url)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "order_not_found"


def test_a_customer_without_wechat_sign_in_cannot_use_wechat_pay(api: Api, customer_order: dict[str, Any]) -> None:
    with api.app.state.sessionmaker() as s:
        s.get(Customer, api.customer_id).wechat_openid = None
        s.commit()
    r = api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{customer_order['id']}/payments/wechat")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "wechat_openid_missing"


def test_a_valid_notification_pays_and_issues_the_order(
    api: Api, platform: WechatPlatform, customer_order: dict[str, Any]
) -> None:
    api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{customer_order['id']}/payments/wechat")
    notify = platform.notification(customer_order["number"], customer_order["total_fen"])
    r = deliver(api, notify)
    assert r.status_code == 200, r.text
    assert state(api, customer_order["id"]) == ("issued", [("succeeded", notify.transaction_id)])
    assert tickets(api, customer_order["id"]) == 1


def test_a_repeated_valid_notification_is_idempotent(
    api: Api, platform: WechatPlatform, customer_order: dict[str, Any]
) -> None:
    first = platform.notification(customer_order["number"], customer_order["total_fen"])
    # WeChat's retry: the same transaction, freshly signed with a new nonce.
    retry = platform.notification(
        customer_order["number"], customer_order["total_fen"], transaction_id=first.transaction_id
    )
    assert deliver(api, first).status_code == 200
    assert deliver(api, retry).status_code == 200
    assert state(api, customer_order["id"]) == ("issued", [("succeeded", first.transaction_id)])
    assert tickets(api, customer_order["id"]) == 1


def test_a_replayed_nonce_is_refused(
    api: Api, platform: WechatPlatform, day_product: dict[str, Any], customer_order: dict[str, Any]
) -> None:
    first = platform.notification(customer_order["number"], customer_order["total_fen"])
    assert deliver(api, first).status_code == 200
    replay = deliver(api, first)
    assert replay.status_code == 409
    assert replay.json() == {"code": "FAIL", "message": replay.json()["message"]}
    assert replay.json()["message"].startswith("replayed_notification")

    other = place_order(api, day_product)
    same_nonce = platform.notification(other["number"], other["total_fen"], nonce=first.headers["Wechatpay-Nonce"])
    assert deliver(api, same_nonce).status_code == 409
    assert state(api, other["id"]) == ("pending", [])


def test_a_notification_that_money_did_not_arrive_is_acknowledged_and_changes_nothing(
    api: Api, platform: WechatPlatform, customer_order: dict[str, Any]
) -> None:
    api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{customer_order['id']}/payments/wechat")
    notify = platform.notification(customer_order["number"], customer_order["total_fen"], trade_state="PAYERROR")
    assert deliver(api, notify).status_code == 200
    assert state(api, customer_order["id"]) == ("pending", [("pending", None)])


Forge = Callable[[WechatPlatform, dict[str, Any]], Notify]


def _unsigned(p: WechatPlatform, o: dict[str, Any]) -> Notify:
    n = p.notification(o["number"], o["total_fen"])
    return Notify({"Content-Type": "application/json"}, n.body, n.transaction_id)


def _oversized(p: WechatPlatform, o: dict[str, Any]) -> Notify:
    body = p.notification(o["number"], o["total_fen"]).body[:-1] + b', "padding": "' + b"x" * MAX_NOTIFY_BYTES + b'"}'
    return Notify(p.signed_headers(body), body, "")


REFUSED: list[Any] = [
    pytest.param(_unsigned, 401, "signature_missing", id="unsigned"),
    pytest.param(_oversized, 413, "bad_notification", id="oversized"),
    pytest.param(
        lambda p, o: p.notification(o["number"], o["total_fen"], key=p.merchant_key), 401, "bad_signature", id="forged"
    ),
    pytest.param(
        lambda p, o: p.notification(o["number"], o["total_fen"], timestamp=str(int(time.time()) - 600)),
        401,
        "stale_notification",
        id="stale",
    ),
    pytest.param(
        lambda p, o: p.notification(o["number"], o["total_fen"], timestamp=str(int(time.time()) + 600)),
        401,
        "stale_notification",
        id="from-the-future",
    ),
    pytest.param(
        lambda p, o: p.notification(o["number"], o["total_fen"], serial="5157F09EFDC096DE15EBE81A47057A7232F1B8E1"),
        401,
        "unknown_platform_serial",
        id="unknown-serial",
    ),
    pytest.param(
        lambda p, o: p.notification(o["number"], o["total_fen"], tamper=True),
        400,
        "undecryptable_notification",
        id="tampered-ciphertext",
    ),
    pytest.param(
        lambda p, o: p.notification(o["number"], o["total_fen"] - 1), 400, "amount_mismatch", id="wrong-amount"
    ),
    pytest.param(
        lambda p, o: p.notification(o["number"], o["total_fen"], mchid="1230000109"),
        400,
        "wrong_merchant",
        id="wrong-mchid",
    ),
    pytest.param(
        lambda p, o: p.notification(o["number"], o["total_fen"], appid="wx0000000000000000"),
        400,
        "wrong_merchant",
        id="wrong-appid",
    ),
    pytest.param(
        lambda p, o: p.notification("SF20240101DEADBEEF00", o["total_fen"]), 404, "order_not_found", id="unknown-order"
    ),
]


@pytest.mark.parametrize(("forge", "status", "code"), REFUSED)
def test_a_notification_that_is_not_genuine_and_ours_changes_nothing(
    api: Api, platform: WechatPlatform, customer_order: dict[str, Any], forge: Forge, status: int, code: str
) -> None:
    api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{customer_order['id']}/payments/wechat")
    r = deliver(api, forge(platform, customer_order))
    assert r.status_code == status, r.text
    assert r.json()["code"] == "FAIL"
    assert r.json()["message"].startswith(code)
    assert state(api, customer_order["id"]) == ("pending", [("pending", None)])
    assert tickets(api, customer_order["id"]) == 0


def _expire(api: Api, order: dict[str, Any]) -> None:
    with api.app.state.sessionmaker() as s:
        s.get(Order, order["id"]).expires_at = utcnow() - timedelta(seconds=1)
        s.commit()
    assert api.as_(Role.ADMIN).post("/api/v1/orders/expire").json()["expired"] >= 1


def _cancel(api: Api, order: dict[str, Any]) -> None:
    assert api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{order['id']}/cancel").status_code == 200


@pytest.mark.parametrize(
    ("end", "final"),
    [pytest.param(_expire, "expired", id="expired"), pytest.param(_cancel, "cancelled", id="cancelled")],
)
def test_money_for_an_order_that_ended_is_recorded_late_and_not_resurrected(
    api: Api,
    platform: WechatPlatform,
    customer_order: dict[str, Any],
    end: Callable[[Api, dict[str, Any]], None],
    final: str,
) -> None:
    api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{customer_order['id']}/payments/wechat")
    end(api, customer_order)
    notify = platform.notification(customer_order["number"], customer_order["total_fen"])
    r = deliver(api, notify)
    assert r.status_code == 200, r.text  # received: WeChat stops retrying; the money goes back by refund
    assert state(api, customer_order["id"]) == (final, [("late", notify.transaction_id)])
    assert tickets(api, customer_order["id"]) == 0
    audit = api.as_(Role.ADMIN).get("/api/v1/audit", params={"entity": "payment"}).json()
    assert any(e["action"] == "payment.late" and e["detail"]["needs_refund"] for e in audit)


def test_money_for_an_order_already_paid_at_the_window_is_late(
    api: Api, platform: WechatPlatform, customer_order: dict[str, Any]
) -> None:
    api.as_(Role.CUSTOMER).post(f"/api/v1/orders/{customer_order['id']}/payments/wechat")
    paid = api.as_(Role.CASHIER).post(
        f"/api/v1/orders/{customer_order['id']}/payments/counter",
        json={"method": "cash", "amount_fen": customer_order["total_fen"]},
    )
    assert paid.status_code == 201
    notify = platform.notification(customer_order["number"], customer_order["total_fen"])
    assert deliver(api, notify).status_code == 200
    status, pays = state(api, customer_order["id"])
    assert (status, sorted(pays, key=str)) == ("issued", sorted([("late", notify.transaction_id), ("succeeded", None)]))


def test_outside_development_the_placeholder_notify_url_is_refused(platform: WechatPlatform) -> None:
    production = platform.configure(
        Settings(
            environment="production",
            jwt_secret=SecretStr("x" * 40),
            signing_key_b64=SecretStr(base64.b64encode(bytes(range(32))).decode()),
            keyset_root_key_b64=SecretStr(base64.b64encode(bytes(range(1, 33))).decode()),
            face_key_b64=SecretStr(base64.b64encode(bytes(range(2, 34))).decode()),
        ),
        wechat_notify_url="https://example.invalid/api/v1/payments/wechat/notify",
    )
    with pytest.raises(DomainError) as refused:
        WechatPayConfig.from_settings(production)
    assert (refused.value.code, refused.value.status_code) == ("payment_provider_unconfigured", 503)
    development = production.model_copy(update={"environment": "development"})
    assert WechatPayConfig.from_settings(development).mchid == platform.mchid


def test_concurrent_deliveries_of_one_transaction_record_one_payment(
    app: FastAPI, api: Api, platform: WechatPlatform, customer_order: dict[str, Any]
) -> None:
    number, total = customer_order["number"], customer_order["total_fen"]
    first = platform.notification(number, total)
    deliveries = [first] + [platform.notification(number, total, transaction_id=first.transaction_id) for _ in range(5)]
    with live_server(app) as base:

        def deliver_live(n: Notify) -> int:
            with httpx.Client(base_url=base, timeout=30) as c:
                return c.post(NOTIFY, content=n.body, headers=n.headers).status_code

        with ThreadPoolExecutor(max_workers=6) as pool:
            codes = list(pool.map(deliver_live, deliveries))
    # A delivery that lost a race is refused with 409 and WeChat delivers it again later.
    assert set(codes) <= {200, 409} and 200 in codes
    assert state(api, customer_order["id"]) == ("issued", [("succeeded", first.transaction_id)])
    assert tickets(api, customer_order["id"]) == 1
