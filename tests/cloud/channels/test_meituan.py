"""美团门票直连: the adapter on its own (MWS vector, real-shaped messages, answers, the consume notice sent over a real
socket to the stand-in), then Meituan and our cloud end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select

from cloud.channels.base import (
    Authentic,
    CancelOrder,
    ChannelAccount,
    Failure,
    InboundRequest,
    Malformed,
    OrderOutcome,
    PayOrder,
    PlaceOrder,
    QueryOrder,
    RefundOutcome,
    RefundRequest,
    Rejected,
    UsedEntry,
    VerifyCall,
    Voucher,
)
from cloud.channels.meituan import CONSUME_PATH, MeituanAdapter, mws_signature
from cloud.channels.models import ChannelCall, ChannelOrder
from cloud.orders.models import Order
from cloud.sync.models import FeedChange
from cloud.tickets.models import Ticket
from tests.cloud.channels.kit import TEST_SECRETS, ChannelCloud
from tests.cloud.channels.meituan_platform import CONFIG, MeituanPlatform, mws

ADAPTER = MeituanAdapter()
NOW = datetime(2026, 12, 20, 2, 0, tzinfo=UTC)
VISIT = date(2026, 12, 21)
CLOUD = "http://127.0.0.1:9/api/v1/channels/meituan/notify"


def account(base_url: str = "http://127.0.0.1:9", secret: str | None = None) -> ChannelAccount:
    secrets = {"client_secret": secret or TEST_SECRETS["meituan"]["client_secret"]}
    return ChannelAccount("meituan", base_url, 600, CONFIG, secrets)


def meituan() -> MeituanPlatform:
    return MeituanPlatform(notify_url=lambda action: f"{CLOUD}/{action}")


def inbound(prepared: tuple[str, dict[str, str], bytes], **header_changes: str) -> InboundRequest:
    url, headers, content = prepared
    path = url.removeprefix("http://127.0.0.1:9")
    lowered = {k.lower(): v for k, v in headers.items()} | header_changes
    return InboundRequest(path.rsplit("/", 1)[-1], "POST", path, {}, lowered, content)


def authentic(prepared: tuple[str, dict[str, str], bytes]) -> Authentic:
    verdict = ADAPTER.authenticate(inbound(prepared), account(), NOW)
    assert isinstance(verdict, Authentic), verdict
    return verdict


CREATE = {
    "orderId": 4001,
    "partnerDealId": "MT-DAY",
    "quantity": 2,
    "visitDate": "2026-12-21",
    "unitPriceFen": 26000,
    "contactName": "张三",
    "contactPhone": "13800138000",
}


# ---- signing ----


def test_mws_signature_reproduces_the_researched_example() -> None:
    date_header = "Fri, 17 Feb 2012 23:34:53 GMT"
    assert mws_signature("secret", "POST", CONSUME_PATH, date_header) == "NfYGN1fwVHewM7s525lAOMHPyvQ="
    assert mws("secret", "POST", CONSUME_PATH, date_header) == "NfYGN1fwVHewM7s525lAOMHPyvQ="


def test_a_signed_order_is_authentic_and_reads_as_an_unpaid_order() -> None:
    prepared = meituan().prepare("create", CREATE, at=NOW)
    message = authentic(prepared)
    intent = ADAPTER.parse(message, inbound(prepared))
    assert isinstance(intent, PlaceOrder)
    assert (intent.order_ref, intent.paid, intent.phone, intent.name) == ("4001", False, "13800138000", "张三")
    (line,) = intent.lines
    assert (line.sku, line.quantity, line.unit_price_fen, line.visit_date) == ("MT-DAY", 2, 26000, VISIT)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        pytest.param({"secret": "not-the-secret"}, "bad_signature", id="wrong-secret"),
        pytest.param({"at": NOW - timedelta(seconds=601)}, "stale", id="date-too-old"),
        pytest.param({"at": NOW + timedelta(seconds=601)}, "stale", id="date-in-the-future"),
    ],
)
def test_a_wrongly_signed_or_stale_order_is_rejected(change: dict[str, Any], kind: str) -> None:
    verdict = ADAPTER.authenticate(inbound(meituan().prepare("create", CREATE, **change)), account(), NOW)
    assert isinstance(verdict, Rejected) and verdict.kind == kind


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        pytest.param({"partnerid": "99999"}, "unknown_account", id="other-partner"),
        pytest.param({"authorization": "Basic abc"}, "bad_signature", id="not-mws"),
        pytest.param({"date": "yesterday"}, "bad_signature", id="date-changed-after-signing"),
        pytest.param({"x-encryption-status": "encrypted"}, "malformed", id="encrypted-body-left-out"),
    ],
)
def test_headers_that_do_not_hold_are_rejected(headers: dict[str, str], kind: str) -> None:
    verdict = ADAPTER.authenticate(inbound(meituan().prepare("create", CREATE, at=NOW), **headers), account(), NOW)
    assert isinstance(verdict, Rejected) and verdict.kind == kind


def test_another_client_id_is_rejected() -> None:
    platform = meituan()
    platform.client_id = "someone-else"
    verdict = ADAPTER.authenticate(inbound(platform.prepare("create", CREATE, at=NOW)), account(), NOW)
    assert isinstance(verdict, Rejected) and verdict.kind == "bad_signature"


def test_a_body_that_is_not_the_envelope_is_malformed() -> None:
    for content in (b"not json", b"[1]", b'{"partnerId": 10086, "body": "x"}', b'{"partnerId": 1, "body": {}}'):
        verdict = ADAPTER.authenticate(
            inbound(meituan().prepare("create", {}, at=NOW, content=content)), account(), NOW
        )
        assert isinstance(verdict, Rejected) and verdict.kind in {"malformed", "unknown_account"}, content


def test_a_resend_has_the_same_fingerprint_and_a_body_changed_under_the_same_signature_reuses_its_nonce() -> None:
    url, headers, content = meituan().prepare("create", CREATE, at=NOW)
    first = authentic((url, headers, content))
    resend = authentic((url, headers, content))
    reordered = json.dumps({"body": dict(reversed(CREATE.items())), "partnerId": 10086}).encode()
    replayed = authentic((url, headers, reordered))
    fresh = authentic(meituan().prepare("create", CREATE, at=NOW + timedelta(seconds=30)))
    assert resend.fingerprint == first.fingerprint and resend.nonce == first.nonce
    assert replayed.fingerprint != first.fingerprint and replayed.nonce == first.nonce  # the machinery: replay
    assert fresh.fingerprint != first.fingerprint and fresh.nonce != first.nonce  # Meituan's retry: a new message


# ---- parse ----


def test_each_action_reads_as_its_intent() -> None:
    platform = meituan()
    cases: list[tuple[str, dict[str, Any], Any]] = [
        (
            "pay",
            {"orderId": 4001, "payTime": "2026-12-20 10:00:00"},
            PayOrder("4001", {"payTime": "2026-12-20 10:00:00"}),
        ),
        ("refund", {"orderId": 4001, "refundId": "R9", "quantity": 1}, RefundRequest("4001", "R9", None, 1)),
        ("refund", {"orderId": "4001", "refundId": 77}, RefundRequest("4001", "77")),
        ("refund", {"orderId": 1, "refundId": "R", "voucherCodes": ["A"]}, RefundRequest("1", "R", ("A",))),
        ("query", {"orderId": 4001}, QueryOrder("4001")),
        ("cancel", {"orderId": 4001}, CancelOrder("4001")),
    ]
    for action, body, expected in cases:
        prepared = platform.prepare(action, body, at=NOW)
        assert ADAPTER.parse(authentic(prepared), inbound(prepared)) == expected, action


def test_an_undated_voucher_has_no_visit_date() -> None:
    prepared = meituan().prepare("create", {k: v for k, v in CREATE.items() if k != "visitDate"}, at=NOW)
    intent = ADAPTER.parse(authentic(prepared), inbound(prepared))
    assert isinstance(intent, PlaceOrder) and intent.lines[0].visit_date is None


@pytest.mark.parametrize(
    ("action", "body"),
    [
        pytest.param("create", {**CREATE, "orderId": None}, id="no-order-id"),
        pytest.param("create", {**CREATE, "quantity": 0}, id="zero-quantity"),
        pytest.param("create", {**CREATE, "quantity": "2"}, id="quantity-as-text"),
        pytest.param("create", {**CREATE, "visitDate": "21/12/2026"}, id="visit-date-shape"),
        pytest.param("create", {**CREATE, "unitPriceFen": 260.0}, id="price-not-fen"),
        pytest.param("create", {k: v for k, v in CREATE.items() if k != "partnerDealId"}, id="no-deal"),
        pytest.param("refund", {"orderId": 4001}, id="refund-without-refund-id"),
        pytest.param("refund", {"orderId": 4001, "refundId": "R", "voucherCodes": "A"}, id="codes-not-a-list"),
        pytest.param("ship", {"orderId": 4001}, id="unknown-action"),
    ],
)
def test_unreadable_messages_are_malformed(action: str, body: dict[str, Any]) -> None:
    prepared = meituan().prepare(action, body, at=NOW)
    with pytest.raises(Malformed):
        ADAPTER.parse(authentic(prepared), inbound(prepared))


# ---- answer ----


def voucher(code: str, state: str = "valid", used: int = 0) -> Voucher:
    return Voucher(ticket_id=1, code=code, sku="MT-DAY", visit_date=VISIT, state=state, entries_used=used)  # type: ignore[arg-type]


def envelope(answer: Any) -> dict[str, Any]:
    assert answer.status == 200
    data: dict[str, Any] = json.loads(answer.body)
    assert data["partnerId"] == 10086
    return data


def test_an_order_is_answered_with_our_order_number_and_codes() -> None:
    message = authentic(meituan().prepare("pay", {"orderId": 4001}, at=NOW))
    outcome = OrderOutcome("4001", "O-20261220-0001", "issued", (voucher("MTNA0000001ABCDEF"),))
    data = envelope(ADAPTER.answer(message, outcome, account()))
    assert (data["code"], data["describe"]) == (200, "success")
    assert data["body"] == {
        "orderId": 4001,
        "partnerOrderId": "O-20261220-0001",
        "orderStatus": "issued",
        "vouchers": [
            {
                "voucherCode": "MTNA0000001ABCDEF",
                "partnerDealId": "MT-DAY",
                "visitDate": "2026-12-21",
                "status": "valid",
                "usedQuantity": 0,
            }
        ],
    }


def test_refund_decisions_are_answered_approve_or_reject() -> None:
    message = authentic(meituan().prepare("refund", {"orderId": 4001, "refundId": "R9"}, at=NOW))
    approved = RefundOutcome("4001", "R9", True, "ok", "", (voucher("MTX", "revoked"),))
    denied = RefundOutcome("4001", "R9", False, "ticket_used", "the ticket was used", ())
    yes = envelope(ADAPTER.answer(message, approved, account()))["body"]
    no = envelope(ADAPTER.answer(message, denied, account()))["body"]
    assert (yes["refundResult"], yes["vouchers"][0]["status"], "rejectCode" in yes) == ("APPROVE", "revoked", False)
    assert (no["refundResult"], no["rejectCode"], no["rejectReason"]) == (
        "REJECT",
        "ticket_used",
        "the ticket was used",
    )


def test_failures_and_refusals_carry_a_non_200_code_and_what_went_wrong() -> None:
    message = authentic(meituan().prepare("create", CREATE, at=NOW))
    sold_out = envelope(ADAPTER.answer(message, Failure("sold_out", "no stock on 2026-12-21"), account()))
    stale = envelope(ADAPTER.answer(None, Rejected("stale", "Date too old"), account()))
    assert sold_out["code"] == 409 and "no stock on 2026-12-21" in sold_out["describe"]
    assert stale["code"] == 401 and "Date too old" in stale["describe"] and stale["body"] == {}


# ---- the consume notice (核销) over a real socket ----


@pytest.fixture
def platform() -> Iterator[MeituanPlatform]:
    started = meituan().start()
    yield started
    started.stop()


def call(key: str = "mt-verify-17-1", used_total: int = 1) -> VerifyCall:
    used_at = datetime(2026, 12, 21, 1, 30, tzinfo=UTC)
    return VerifyCall(
        call_id=1,
        idempotency_key=key,
        created_at=used_at,
        order_ref="4001",
        order_number="O-20261220-0001",
        order_extra={"orderId": 4001},
        entries=(UsedEntry(17, "MTNA0000001ABCDEF", "", used_at),),
        used_total=used_total,
        quantity_total=2,
    )


def send(platform: MeituanPlatform, verify: VerifyCall, secret: str | None = None) -> Any:
    with httpx.Client(timeout=5) as http:
        return ADAPTER.send(verify, account(platform.base_url, secret), http, datetime.now(UTC))


def test_a_consume_notice_is_signed_and_carries_the_order_the_count_and_the_request_id(
    platform: MeituanPlatform,
) -> None:
    result = send(platform, call())
    assert result.verdict == "done" and result.reply["consumeId"] == "C1", result
    (got,) = platform.consumed
    assert got.headers["partnerid"] == "10086" and got.headers["authorization"].startswith("MWS mt-client-7:")
    assert got.body == {
        "orderId": 4001,
        "partnerOrderId": "O-20261220-0001",
        "requestId": "mt-verify-17-1",
        "usedQuantity": 1,
        "quantity": 2,
        "consumeTime": "2026-12-21 09:30:00",
        "vouchers": [{"voucherCode": "MTNA0000001ABCDEF", "usedTime": "2026-12-21 09:30:00"}],
    }
    assert platform.refused == [] and platform.used == {"4001": 1}


@pytest.mark.parametrize("mode", ["http500", "code500"])
def test_platform_errors_are_retried_with_the_same_request_id(platform: MeituanPlatform, mode: str) -> None:
    platform.fail_first, platform.fail_mode = 2, mode  # type: ignore[assignment]
    verdicts = [send(platform, call()).verdict for _ in range(3)]
    assert verdicts == ["retry", "retry", "done"]
    assert {c.body["requestId"] for c in platform.consumed} == {"mt-verify-17-1"} and platform.used == {"4001": 1}


def test_already_verified_after_a_lost_answer_is_done(platform: MeituanPlatform) -> None:
    platform.fail_first, platform.fail_mode, platform.already_on_repeat = 1, "lost", True
    first, second = send(platform, call()), send(platform, call())
    assert (first.verdict, second.verdict) == ("retry", "done") and "already verified" in second.detail


def test_a_permanent_refusal_gives_up(platform: MeituanPlatform) -> None:
    platform.refuse_with = (1006, "券号不存在")
    result = send(platform, call())
    assert result.verdict == "give_up" and "1006" in result.detail


def test_a_call_signed_with_the_wrong_secret_is_refused_by_meituan_and_given_up(platform: MeituanPlatform) -> None:
    result = send(platform, call(), secret="not-the-secret")
    assert result.verdict == "give_up" and platform.refused == ["bad signature"] and platform.consumed == []


def test_an_unreachable_platform_is_retried() -> None:
    with httpx.Client(timeout=2) as http:
        result = ADAPTER.send(call(), account("http://127.0.0.1:9"), http, datetime.now(UTC))
    assert result.verdict == "retry" and result.detail.startswith("network")


# ---- end to end: Meituan and our cloud over real sockets ----


@pytest.fixture
def mt(channel_cloud: ChannelCloud, product: dict[str, Any]) -> Iterator[MeituanPlatform]:
    platform = MeituanPlatform(notify_url=lambda action: channel_cloud.notify_url("meituan", action)).start()
    channel_cloud.configure(
        "meituan", base_url=platform.base_url, skus={"MT-DAY": (product["id"], 26000)}, config=CONFIG
    )
    yield platform
    platform.stop()


def tomorrow() -> date:
    return datetime.now(ZoneInfo("Asia/Shanghai")).date() + timedelta(days=1)


def state(cloud: ChannelCloud) -> tuple[int, int, int, int]:
    """Orders, tickets, feed rows and verify calls: what a refused message must leave alone."""
    with cloud.sessions() as s:
        return (
            s.scalar(select(func.count(Order.id))) or 0,
            s.scalar(select(func.count(Ticket.id))) or 0,
            s.scalar(select(func.count(FeedChange.id))) or 0,
            s.scalar(select(func.count(ChannelCall.id))) or 0,
        )


def tickets_of(cloud: ChannelCloud, meituan_order: int) -> list[Ticket]:
    with cloud.sessions() as s:
        order_id = s.scalar(select(ChannelOrder.order_id).where(ChannelOrder.order_ref == str(meituan_order)))
        return list(s.scalars(select(Ticket).where(Ticket.order_id == order_id).order_by(Ticket.id)))


def feed(cloud: ChannelCloud, kind: str) -> list[dict[str, Any]]:
    with cloud.sessions() as s:
        return [row.body for row in s.scalars(select(FeedChange).where(FeedChange.kind == kind))]


def bought(mt: MeituanPlatform, order_id: int, quantity: int = 1) -> list[str]:
    """Meituan creates and pays an order; the codes we answered."""
    created = mt.create(order_id, "MT-DAY", quantity, tomorrow(), unit_price_fen=26000)
    assert created.json()["code"] == 200, created.json()
    paid = mt.pay(order_id).json()
    assert paid["code"] == 200, paid
    return [v["voucherCode"] for v in paid["body"]["vouchers"]]


def test_an_order_paid_on_meituan_gets_our_codes_in_the_answer_and_on_the_sites_feed(
    channel_cloud: ChannelCloud, mt: MeituanPlatform
) -> None:
    created = mt.create(5001, "MT-DAY", 2, tomorrow(), unit_price_fen=26000).json()
    assert (created["code"], created["body"]["orderStatus"], created["body"]["vouchers"]) == (200, "pending", [])
    assert state(channel_cloud)[:2] == (1, 0)  # stock held, nothing issued before the payment
    paid = mt.pay(5001).json()
    codes = [v["voucherCode"] for v in paid["body"]["vouchers"]]
    assert (paid["code"], paid["body"]["orderStatus"], paid["body"]["orderId"]) == (200, "issued", 5001)
    assert len(codes) == 2 and all(c.startswith("MTNA") and len(c) == 17 for c in codes)
    assert paid["body"]["partnerOrderId"] == created["body"]["partnerOrderId"]
    assert [t.code for t in tickets_of(channel_cloud, 5001)] == codes
    assert sorted(b["ticket"]["code"] for b in feed(channel_cloud, "ticket")) == sorted(codes)


def test_resends_and_meituans_own_retries_make_one_order_with_the_same_codes(
    channel_cloud: ChannelCloud, mt: MeituanPlatform
) -> None:
    created = mt.create(5002, "MT-DAY", 1, tomorrow())
    assert mt.resend(created).response.content == created.response.content
    assert mt.retry(created).json()["body"]["partnerOrderId"] == created.json()["body"]["partnerOrderId"]
    paid = mt.pay(5002)
    before = state(channel_cloud)
    again = [mt.resend(paid), mt.retry(paid), mt.retry(paid, at=datetime.now(UTC) + timedelta(seconds=5))]
    assert again[0].response.content == paid.response.content
    assert all(a.json()["body"]["vouchers"] == paid.json()["body"]["vouchers"] for a in again)
    assert mt.query(5002).json()["body"]["vouchers"] == paid.json()["body"]["vouchers"]
    assert state(channel_cloud) == before and before[:2] == (1, 1)


@pytest.mark.parametrize("case", ["bad-signature", "stale-date", "future-date", "reserialised", "altered-body"])
def test_forged_stale_or_replayed_messages_are_refused_and_change_nothing(
    channel_cloud: ChannelCloud, mt: MeituanPlatform, case: str
) -> None:
    created = mt.create(5003, "MT-DAY", 1, tomorrow())
    before = state(channel_cloud)
    pay = {"orderId": 5003, "payTime": "2026-12-20 10:00:00"}
    if case == "bad-signature":
        refused = mt.send("pay", pay, secret="not-the-secret")
    elif case == "stale-date":
        refused = mt.send("pay", pay, at=datetime.now(UTC) - timedelta(seconds=700))
    elif case == "future-date":
        refused = mt.send("pay", pay, at=datetime.now(UTC) + timedelta(seconds=700))
    elif case == "reserialised":
        refused = mt.reserialised(created)
    else:
        refused = mt.reserialised(created, orderId=6666, quantity=5)  # another order under captured headers
    answer = refused.json()
    expected = 503 if case in {"reserialised", "altered-body"} else 401
    assert (refused.response.status_code, answer["code"]) == (200, expected), answer
    assert answer["describe"] != "success" and answer["body"] == {}
    assert state(channel_cloud) == before
    assert mt.query(5003).json()["body"]["orderStatus"] == "pending"


def test_a_refund_of_an_unused_ticket_is_approved_and_revokes_it_on_the_feed(
    channel_cloud: ChannelCloud, mt: MeituanPlatform
) -> None:
    codes = bought(mt, 5004, 2)
    asked = mt.refund(5004, "MT-R-1", quantity=1)
    answer = asked.json()["body"]
    assert (asked.json()["code"], answer["refundResult"], answer["refundId"]) == (200, "APPROVE", "MT-R-1")
    (refunded,) = answer["vouchers"]
    assert refunded["voucherCode"] in codes and refunded["status"] in {"refunded", "revoked"}
    first, second = tickets_of(channel_cloud, 5004)
    revoked = first if first.code == refunded["voucherCode"] else second
    assert [b["ticket_id"] for b in feed(channel_cloud, "status")] == [str(revoked.id)]
    before = state(channel_cloud)
    assert mt.retry(asked).json()["body"] == answer  # Meituan asks again: the same decision, nothing more revoked
    assert state(channel_cloud) == before


def test_a_refund_of_a_used_ticket_is_rejected(channel_cloud: ChannelCloud, mt: MeituanPlatform) -> None:
    bought(mt, 5005, 1)
    (ticket,) = tickets_of(channel_cloud, 5005)
    assert channel_cloud.gate_passage(ticket.id) is None
    answer = mt.refund(5005, "MT-R-2").json()
    assert (answer["code"], answer["body"]["refundResult"], answer["body"]["rejectCode"]) == (
        200,
        "REJECT",
        "ticket_used",
    )
    assert feed(channel_cloud, "status") == [] and tickets_of(channel_cloud, 5005)[0].status == "valid"


def calls(cloud: ChannelCloud) -> list[ChannelCall]:
    with cloud.sessions() as s:
        return list(s.scalars(select(ChannelCall).order_by(ChannelCall.id)))


def test_a_gate_passage_sends_one_signed_consume_notice_with_the_calls_request_id(
    channel_cloud: ChannelCloud, mt: MeituanPlatform
) -> None:
    (code,) = bought(mt, 5006, 1)
    (ticket,) = tickets_of(channel_cloud, 5006)
    channel_cloud.gate_passage(ticket.id)
    now = datetime.now(UTC)
    assert channel_cloud.send_due_calls(now) == 1
    (call,) = calls(channel_cloud)
    (got,) = mt.consumed
    assert mt.refused == [] and got.headers["authorization"].startswith("MWS mt-client-7:")
    assert (got.body["orderId"], got.body["requestId"], got.body["usedQuantity"], got.body["quantity"]) == (
        5006,
        call.idempotency_key,
        1,
        1,
    )
    with channel_cloud.sessions() as s:
        number = s.scalar(select(Order.number).where(Order.id == ticket.order_id))
    assert got.body["partnerOrderId"] == number and got.body["vouchers"][0]["voucherCode"] == code
    assert (call.state, call.attempts, mt.used) == ("done", 0, {"5006": 1})
    assert channel_cloud.send_due_calls(now + timedelta(hours=1)) == 0 and len(mt.consumed) == 1


def test_platform_errors_are_retried_with_the_same_request_id_until_already_verified_is_done(
    channel_cloud: ChannelCloud, mt: MeituanPlatform
) -> None:
    mt.fail_first, mt.fail_mode, mt.already_on_repeat = 2, "lost", True  # counted, but the answer is lost twice
    bought(mt, 5007, 1)
    channel_cloud.gate_passage(tickets_of(channel_cloud, 5007)[0].id)
    start = datetime.now(UTC)
    assert channel_cloud.send_due_calls(start) == 1
    assert channel_cloud.send_due_calls(start) == 0  # backing off
    (call,) = calls(channel_cloud)
    assert (call.state, call.attempts) == ("pending", 1) and "500" in (call.last_error or "")
    for minutes in (1, 10):
        later = start + timedelta(minutes=minutes)
        mt.clock = lambda later=later: later  # type: ignore[misc]
        assert channel_cloud.send_due_calls(later) == 1
    (call,) = calls(channel_cloud)
    assert call.state == "done" and [c.body["requestId"] for c in mt.consumed] == [call.idempotency_key] * 3
    assert mt.used == {"5007": 1}


def test_a_permanent_refusal_leaves_the_call_failing(channel_cloud: ChannelCloud, mt: MeituanPlatform) -> None:
    mt.refuse_with = (1006, "券号不存在")
    bought(mt, 5008, 1)
    channel_cloud.gate_passage(tickets_of(channel_cloud, 5008)[0].id)
    assert channel_cloud.send_due_calls(datetime.now(UTC)) == 1
    (call,) = calls(channel_cloud)
    assert (call.state, call.attempts) == ("failing", 1) and "1006" in (call.last_error or "")


def test_an_unpaid_order_cancelled_gives_its_stock_back_and_cannot_be_paid(
    channel_cloud: ChannelCloud, mt: MeituanPlatform
) -> None:
    mt.create(5009, "MT-DAY", 3, tomorrow())
    cancelled = mt.cancel(5009).json()
    assert (cancelled["code"], cancelled["body"]["orderStatus"]) == (200, "cancelled")
    late = mt.pay(5009).json()
    assert late["code"] == 409 and "订单未支付" in late["describe"]
    assert state(channel_cloud)[:2] == (1, 0)
    again = mt.create(5010, "MT-DAY", 100, tomorrow()).json()  # the whole day's stock is free again
    assert (again["code"], again["body"]["orderStatus"]) == (200, "pending")


def test_a_second_order_in_the_same_second_is_asked_to_resend_and_then_taken(
    channel_cloud: ChannelCloud, mt: MeituanPlatform
) -> None:
    at = datetime.now(UTC)  # one Date, so one MWS signature for both
    first = mt.send("create", {**CREATE, "orderId": 5020}, at=at).json()
    second = mt.send("create", {**CREATE, "orderId": 5021}, at=at).json()
    assert (first["code"], second["code"]) == (200, 503)
    resent = mt.send("create", {**CREATE, "orderId": 5021}, at=at + timedelta(seconds=1)).json()
    assert resent["code"] == 200 and resent["body"]["partnerOrderId"] != first["body"]["partnerOrderId"]


@pytest.mark.parametrize(
    ("action", "body", "code"),
    [
        pytest.param("create", {**CREATE, "orderId": 5011, "partnerDealId": "MT-NONE"}, 404, id="unknown-deal"),
        pytest.param("create", {**CREATE, "orderId": 5012, "quantity": 101}, 400, id="more-than-an-order-may-hold"),
        pytest.param("create", {**CREATE, "orderId": 5013, "quantity": "2"}, 400, id="unreadable"),
        pytest.param("pay", {"orderId": 5014}, 404, id="pay-an-unknown-order"),
    ],
)
def test_orders_we_cannot_take_are_answered_with_meituans_error_form_and_change_nothing(
    channel_cloud: ChannelCloud, mt: MeituanPlatform, action: str, body: dict[str, Any], code: int
) -> None:
    if action == "create":
        body = {**body, "visitDate": tomorrow().isoformat()}
    before = state(channel_cloud)
    answer = mt.send(action, body).json()
    assert answer["code"] == code and answer["describe"] != "success", answer
    assert state(channel_cloud) == before
