"""抖音 三方码: the adapter's signature, reading and answers on requests that crossed a real socket from the Douyin
stand-in, and its verify calls to the stand-in (done / retry / give_up)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from cloud.channels.base import (
    Authentic,
    ChannelAccount,
    Failure,
    InboundRequest,
    Malformed,
    OrderOutcome,
    PlaceOrder,
    QueryOrder,
    RefundOutcome,
    RefundRequest,
    Rejected,
    UsedEntry,
    VerifyCall,
    Voucher,
)
from cloud.channels.douyin import CHINA, DouyinAdapter, life_sign, old_sign, sign_text
from cloud.channels.models import ChannelCall
from cloud.tickets.models import Ticket
from models.voucher import looks_like_ours, site_voucher_key
from tests.cloud.api import make_product
from tests.cloud.channels.douyin_platform import (
    CLIENT_KEY,
    POI_ID,
    SECRET,
    DouyinPlatform,
    Sent,
    douyin_sign,
    now_ms,
)
from tests.cloud.channels.kit import TEST_SECRETS, ChannelCloud, StandIn

ADAPTER = DouyinAdapter()


def account(base_url: str = "http://127.0.0.1:9", **config: str) -> ChannelAccount:
    return ChannelAccount(
        code="douyin",
        base_url=base_url,
        freshness_s=600,
        config={"client_key": CLIENT_KEY, "poi_id": POI_ID, **config},
        secrets=TEST_SECRETS["douyin"],
    )


@pytest.fixture
def douyin() -> Iterator[DouyinPlatform]:
    """Douyin's OpenAPI on loopback (token and verify endpoints)."""
    platform = DouyinPlatform().start()
    yield platform
    platform.stop()


@pytest.fixture
def spi() -> DouyinPlatform:
    """Douyin as the SPI client only (it sends notifications; nothing served)."""
    return DouyinPlatform()


@pytest.fixture(scope="module")
def inbox() -> Iterator[StandIn]:
    """Where the stand-in's notifications land for the adapter-only tests: a loopback server answering success."""
    server = StandIn(lambda got: (200, {}, b'{"data":{"error_code":0,"description":"success"}}')).start()
    yield server
    server.stop()


def deliver(douyin: DouyinPlatform, inbox: StandIn, action: str, send: str, *args: object, **kw: object) -> Sent:
    sent: Sent = getattr(douyin, send)(f"{inbox.base_url}/notify/{action}", *args, **kw)
    return sent


def request_of(inbox: StandIn) -> InboundRequest:
    got = inbox.received[-1]
    return InboundRequest(got.path.rsplit("/", 1)[-1], got.method, got.path, got.query, got.headers, got.body)


def authentic(inbox: StandIn) -> tuple[Authentic, InboundRequest]:
    request = request_of(inbox)
    message = ADAPTER.authenticate(request, account(), datetime.now(UTC))
    assert isinstance(message, Authentic), message
    return message, request


# ---- signature ----


def test_our_signing_reproduces_the_docs_example() -> None:
    """The doc's example string (spi-signature-rules): sign is left out, the body comes last, unsorted."""
    query = {"timestamp": "1624293280123", "client_key": "xxxxxx", "sign": "ignored"}
    assert sign_text("yyyyyy", query, b"zzzzzz") == b"yyyyyy&client_key=xxxxxx&timestamp=1624293280123&http_body=zzzzzz"
    assert life_sign("yyyyyy", query, b"zzzzzz") == "1cb07147475e76d0a8b9f6c7e201c7d8cde1617fb9f5d7e576bec5268fa887ae"
    assert old_sign("yyyyyy", query, b"zzzzzz") == "e1902a328e3fca6d4322fc4d8123bf2e"
    assert douyin_sign("yyyyyy", query, b"zzzzzz") == (
        life_sign("yyyyyy", query, b"zzzzzz"),
        old_sign("yyyyyy", query, b"zzzzzz"),
    )


def test_a_signed_notification_is_authentic_and_its_resend_has_the_same_fingerprint(
    spi: DouyinPlatform, inbox: StandIn
) -> None:
    first = deliver(spi, inbox, "issue", "issue", "DY-O-1", "sku-1")
    message, _ = authentic(inbox)
    assert message.fingerprint == first.headers["x-life-sign"] and message.nonce is None
    spi.resend(first)
    assert authentic(inbox)[0].fingerprint == message.fingerprint
    spi.retry(first)
    assert authentic(inbox)[0].fingerprint != message.fingerprint  # Douyin's retry: a new message, same order


@pytest.mark.parametrize(
    "case, kind",
    [
        ("wrong_secret", "bad_signature"),
        ("reserialised", "bad_signature"),
        ("body_changed", "bad_signature"),
        ("no_signature", "bad_signature"),
        ("stale", "stale"),
        ("future", "stale"),
        ("foreign_client_key", "unknown_account"),
    ],
)
def test_forged_or_stale_notifications_are_refused(spi: DouyinPlatform, inbox: StandIn, case: str, kind: str) -> None:
    url = f"{inbox.base_url}/notify/issue"
    first = spi.issue(url, "DY-O-2", "sku-1")
    now = datetime.now(UTC)
    if case == "wrong_secret":
        spi.send(url, first.body, secret="not-the-secret")
    elif case == "reserialised":  # same content, other key order and spacing: the raw bytes were signed
        spi._post(url, json.dumps(json.loads(first.body), sort_keys=True).encode(), first.query, first.headers)
    elif case == "body_changed":
        spi._post(url, first.body.replace(b'"count":1', b'"count":9'), first.query, first.headers)
    elif case == "no_signature":
        spi._post(url, first.body, first.query, {k: v for k, v in first.headers.items() if k != "x-life-sign"})
    elif case == "stale":
        spi.send(url, first.body, timestamp_ms=int((now - timedelta(seconds=601)).timestamp() * 1000))
    elif case == "future":
        spi.send(url, first.body, timestamp_ms=int((now + timedelta(seconds=601)).timestamp() * 1000))
    else:
        DouyinPlatform(client_key="someone-else").send(url, first.body)
    got = ADAPTER.authenticate(request_of(inbox), account(), now)
    assert isinstance(got, Rejected) and got.kind == kind, got
    answer = json.loads(ADAPTER.answer(None, got, account()).body)
    assert answer["data"]["error_code"] != 0 and answer["data"]["description"]


def test_within_the_window_is_fresh(spi: DouyinPlatform, inbox: StandIn) -> None:
    now = datetime.now(UTC)
    spi.issue(f"{inbox.base_url}/notify/issue", "DY-O-3", "sku-1", timestamp_ms=int(now.timestamp() * 1000) - 599_000)
    assert isinstance(ADAPTER.authenticate(request_of(inbox), account(), now), Authentic)


# ---- what Douyin asks ----


def test_issue_becomes_a_paid_order_of_the_mapped_sku(spi: DouyinPlatform, inbox: StandIn) -> None:
    deliver(spi, inbox, "issue", "issue", "DY-O-4", "1788000000001", 3, third_sku_id="day")
    message, request = authentic(inbox)
    order = ADAPTER.parse(message, request)
    assert isinstance(order, PlaceOrder) and order.paid and order.order_ref == "DY-O-4"
    (line,) = order.lines
    assert (line.sku, line.quantity, line.unit_price_fen, line.visit_date) == ("day", 3, 28000, None)
    assert (order.name, order.phone) == ("张三", "13800000000")
    assert "certificate_ids" not in order.extra and order.extra["sku_id"] == "1788000000001"

    deliver(spi, inbox, "issue", "issue", "DY-O-5", "1788000000001", 2, certificate_ids=["c-1", "c-2"])
    order = ADAPTER.parse(*authentic(inbox))
    assert isinstance(order, PlaceOrder) and order.lines[0].sku == "1788000000001"  # no third_sku_id: Douyin's
    assert order.extra["certificate_ids"] == ["c-1", "c-2"]


def test_a_voucher_sold_ahead_of_its_first_day_is_for_that_day(spi: DouyinPlatform, inbox: StandIn) -> None:
    opening = int(datetime(2030, 12, 20, 0, 0, tzinfo=CHINA).timestamp())
    deliver(spi, inbox, "issue", "issue", "DY-O-8", "1", third_sku_id="day", start_time=opening)
    message, request = authentic(inbox)
    order = ADAPTER.parse(message, request)
    assert isinstance(order, PlaceOrder) and order.lines[0].visit_date == date(2030, 12, 20)
    assert order.extra["start_time"] == opening


def test_refund_apply_notice_and_status_query(spi: DouyinPlatform, inbox: StandIn) -> None:
    spi.certificate_ids.update({"DYNA0000001AAAAAA": "c-1"})
    deliver(spi, inbox, "refund_apply", "refund_apply", "DY-O-6", "AS-1", ["DYNA0000001AAAAAA"])
    assert ADAPTER.parse(*authentic(inbox)) == RefundRequest(
        order_ref="DY-O-6", refund_ref="AS-1", codes=("DYNA0000001AAAAAA",), quantity=None, decided=False
    )
    deliver(spi, inbox, "refund_notice", "refund_notice", "DY-O-6", "AS-2", ["DYNA0000001AAAAAA"])
    notice = ADAPTER.parse(*authentic(inbox))
    assert isinstance(notice, RefundRequest) and notice.decided and notice.codes == ("DYNA0000001AAAAAA",)
    deliver(spi, inbox, "refund_apply", "refund_apply", "DY-O-6", "AS-3", ["", ""])  # codes never issued
    apply = ADAPTER.parse(*authentic(inbox))
    assert isinstance(apply, RefundRequest) and (apply.codes, apply.quantity) == (None, 2)
    deliver(spi, inbox, "status_query", "status_query", "DY-O-6")
    assert ADAPTER.parse(*authentic(inbox)) == QueryOrder("DY-O-6")


@pytest.mark.parametrize(
    "action, payload",
    [
        ("issue", {"count": 1, "sku": {"sku_id": "s"}}),  # no order_id
        ("issue", {"order_id": "o", "count": 0, "sku": {"sku_id": "s"}}),
        ("issue", {"order_id": "o", "count": 1}),
        ("refund_apply", {"order_id": "o", "certificates": []}),  # no after_sale_id
        ("refund_notice", {"order_id": "o", "after_sale_id": "a", "notice_list": "x"}),
        ("pre_create_order", {"order_id": "o"}),
    ],
)
def test_what_cannot_be_read_is_malformed(
    spi: DouyinPlatform, inbox: StandIn, action: str, payload: dict[str, object]
) -> None:
    spi.send(f"{inbox.base_url}/notify/{action}", spi.body(payload))
    with pytest.raises(Malformed):
        ADAPTER.parse(*authentic(inbox))


# ---- our answers ----


def voucher(ticket_id: int, code: str, state: str = "valid") -> Voucher:
    return Voucher(ticket_id, code, "day", date(2026, 12, 20), state, 0)  # type: ignore[arg-type]


def answer_to(inbox: StandIn, outcome: object) -> dict[str, object]:
    message, _ = authentic(inbox)
    return dict(json.loads(ADAPTER.answer(message, outcome, account()).body)["data"])  # type: ignore[arg-type]


def test_answers_in_douyins_envelope(spi: DouyinPlatform, inbox: StandIn) -> None:
    issued = OrderOutcome("DY-O-7", "A1001", "issued", (voucher(12, "CODE-B"), voucher(11, "CODE-A")))
    deliver(spi, inbox, "issue", "issue", "DY-O-7", "day", 2)
    assert answer_to(inbox, issued) == {
        "error_code": 0,
        "description": "success",
        "result": 1,
        "certificates": [{"certificate_id": "11", "code": "CODE-A"}, {"certificate_id": "12", "code": "CODE-B"}],
    }
    with_ids = OrderOutcome("DY-O-7", "A1001", "issued", issued.vouchers, extra={"certificate_ids": ["c-1", "c-2"]})
    assert answer_to(inbox, with_ids)["certificates"] == [
        {"certificate_id": "c-1", "code": "CODE-A"},
        {"certificate_id": "c-2", "code": "CODE-B"},
    ]
    assert answer_to(inbox, Failure("sold_out", "售罄")) == {
        "error_code": 0,
        "description": "售罄",
        "result": 2,
        "certificates": [],
    }
    deliver(spi, inbox, "refund_apply", "refund_apply", "DY-O-7", "AS-7", ["CODE-A"])
    approved = RefundOutcome("DY-O-7", "AS-7", True, "ok", "", (voucher(11, "CODE-A", "refunded"),))
    assert answer_to(inbox, approved) == {"error_code": 0, "description": "success", "result": 1}
    denied = RefundOutcome("DY-O-7", "AS-7", False, "ticket_used", "票已使用", ())
    assert answer_to(inbox, denied) == {"error_code": 0, "description": "success", "result": 2, "reason": "票已使用"}
    unknown = RefundOutcome("DY-O-7", "AS-7", False, "unknown_order", "No order DY-O-7", ())
    assert "result" not in answer_to(inbox, unknown)  # pending: Douyin approves it itself after 24 h
    deliver(spi, inbox, "refund_notice", "refund_notice", "DY-O-7", "AS-8", ["CODE-A"])
    assert answer_to(inbox, denied) == {"error_code": 0, "description": "success"}
    deliver(spi, inbox, "status_query", "status_query", "DY-O-7")
    status = answer_to(inbox, issued)
    assert status["third_order_id"] == "A1001" and status["certificates"] == [
        {"certificate_id": "11", "code": "CODE-A", "status": "valid"},
        {"certificate_id": "12", "code": "CODE-B", "status": "valid"},
    ]


# ---- the verify call ----


def call(
    key: str = "vt-0001", codes: tuple[str, ...] = ("DYNA0000001AAAAAA",), order_ref: str = "DY-O-9"
) -> VerifyCall:
    used_at = datetime(2026, 12, 20, 1, 2, 3, tzinfo=UTC)
    entries = tuple(UsedEntry(i + 1, c, "", used_at) for i, c in enumerate(codes))
    return VerifyCall(1, key, used_at, order_ref, "A1009", {}, entries, len(codes), len(codes))


def test_verify_call_carries_token_poi_order_codes_and_the_idempotency_key(douyin: DouyinPlatform) -> None:
    with httpx.Client() as http:
        first = ADAPTER.send(call("vt-1", ("CODE-1",)), account(douyin.base_url), http, datetime.now(UTC))
        second = ADAPTER.send(call("vt-2", ("CODE-2",)), account(douyin.base_url), http, datetime.now(UTC))
    assert (first.verdict, second.verdict) == ("done", "done"), (first, second)
    assert douyin.problems == []
    assert len(douyin.calls("/oauth/client_token/")) == 1  # the client token is cached until it expires
    assert douyin.verify_calls[0] == {
        "verify_token": "vt-1",
        "poi_id": POI_ID,
        "order_id": "DY-O-9",
        "codes": ["CODE-1"],
        "code_with_time_list": [{"code": "CODE-1", "verify_time": 1797728523}],
    }
    assert first.reply["verify_ids"]["CODE-1"] == douyin.verified["CODE-1"]["ids"]["verify_id"]


def test_platform_errors_are_retried_with_the_same_token_and_already_verified_then_is_done(
    douyin: DouyinPlatform,
) -> None:
    douyin.fail_first = 2
    with httpx.Client() as http:
        verdicts = [ADAPTER.send(call("vt-r"), account(douyin.base_url), http, datetime.now(UTC)) for _ in range(3)]
    assert [v.verdict for v in verdicts] == ["retry", "retry", "done"]
    assert "服务器错误" in verdicts[0].detail and "already verified (1208)" in verdicts[2].detail
    assert {c["verify_token"] for c in douyin.verify_calls} == {"vt-r"} and len(douyin.verify_calls) == 3


def test_a_code_douyin_refuses_for_good_is_given_up(douyin: DouyinPlatform) -> None:
    douyin.refuse["CODE-X"] = (1203, "券码已过期")
    with httpx.Client() as http:
        result = ADAPTER.send(call("vt-x", ("CODE-X",)), account(douyin.base_url), http, datetime.now(UTC))
    assert result.verdict == "give_up" and "1203" in result.detail and result.reply == {}


def test_an_expired_access_token_is_fetched_again(douyin: DouyinPlatform) -> None:
    with httpx.Client() as http:
        assert ADAPTER.send(call("vt-a", ("A",)), account(douyin.base_url), http, datetime.now(UTC)).verdict == "done"
        douyin.expire_tokens()
        assert ADAPTER.send(call("vt-b", ("B",)), account(douyin.base_url), http, datetime.now(UTC)).verdict == "retry"
        assert ADAPTER.send(call("vt-b", ("B",)), account(douyin.base_url), http, datetime.now(UTC)).verdict == "done"
    assert len(douyin.calls("/oauth/client_token/")) == 2


def test_an_unreachable_or_failing_platform_is_retried(douyin: DouyinPlatform) -> None:
    down = StandIn(lambda got: (502, {}, b"bad gateway")).start()
    base = down.base_url
    with httpx.Client() as http:
        assert ADAPTER.send(call(), account(base), http, datetime.now(UTC)).verdict == "retry"
        down.stop()
        assert ADAPTER.send(call(), account(base), http, datetime.now(UTC)).verdict == "retry"
        unconfigured = ChannelAccount(
            "douyin", douyin.base_url, 600, {"client_key": CLIENT_KEY}, {"client_secret": SECRET}
        )
        assert ADAPTER.send(call(), unconfigured, http, datetime.now(UTC)).verdict == "give_up"
    assert douyin.verify_calls == []


# ---- end to end: the stand-in, the cloud over a real socket, SQLite ----


@pytest.fixture
def shop(channel_cloud: ChannelCloud, product: dict[str, Any], douyin: DouyinPlatform) -> ChannelCloud:
    """Douyin configured: its verify calls go to the stand-in; SKU "day" (third_sku_id) is our day ticket."""
    channel_cloud.configure(
        "douyin",
        base_url=douyin.base_url,
        skus={"day": (product["id"], 25000)},
        config={"client_key": CLIENT_KEY, "poi_id": POI_ID},
    )
    return channel_cloud


def in_days(days: int) -> int:
    """A voucher's start_time: valid from `days` days ahead (refundable until then under our refund rules)."""
    return int(time.time()) + days * 86400


def counts(cloud: ChannelCloud) -> tuple[int, int, int]:
    return cloud.counts()


def tickets_of(cloud: ChannelCloud, order_ref: str) -> list[Ticket]:
    return cloud.tickets_of("douyin", order_ref)


def feed(cloud: ChannelCloud) -> list[dict[str, Any]]:
    return cloud.feed()


def revoked_on_feed(cloud: ChannelCloud) -> list[str]:
    return [str(c["ticket_id"]) for c in feed(cloud) if c["kind"] == "status" and c["status"] == "revoked"]


def test_an_order_becomes_tickets_with_our_codes_in_the_answer_and_on_the_feed_once(
    shop: ChannelCloud, douyin: DouyinPlatform
) -> None:
    url = shop.notify_url("douyin", "issue")
    first = douyin.issue(url, "DY-1001", "1788000000001", 2, third_sku_id="day", certificate_ids=["c-81", "c-82"])
    assert first.response.status_code == 200 and first.data["error_code"] == 0 and first.data["result"] == 1
    tickets = tickets_of(shop, "DY-1001")
    codes = [t.code for t in tickets]
    assert len(tickets) == 2 and all(c and looks_like_ours(c, site_key(shop)) for c in codes)
    assert first.data["certificates"] == [
        {"certificate_id": "c-81", "code": codes[0]},
        {"certificate_id": "c-82", "code": codes[1]},
    ]
    on_feed = [change["ticket"]["code"] for change in feed(shop) if change["kind"] == "ticket"]
    assert on_feed == codes
    before = counts(shop)

    again = douyin.resend(first)  # the same bytes: the same answer
    assert again.response.content == first.response.content
    retried = douyin.retry(first)  # Douyin's own retry (a fresh timestamp): the same order and codes
    assert retried.data["certificates"] == first.data["certificates"]
    assert counts(shop) == before


def test_an_order_refused_while_the_channel_is_off_is_issued_on_douyins_retry(
    shop: ChannelCloud, douyin: DouyinPlatform
) -> None:
    def configure(enabled: bool) -> None:
        config = {"client_key": CLIENT_KEY, "poi_id": POI_ID}
        shop.configure("douyin", base_url=douyin.base_url, skus={}, config=config, enabled=enabled)

    configure(False)
    first = douyin.issue(shop.notify_url("douyin", "issue"), "DY-1010", "1", 1, third_sku_id="day")
    assert first.data["error_code"] == 100 and counts(shop)[0] == 0  # "retry": Douyin resends at 10 s, 30 s ...
    configure(True)
    retried = douyin.retry(first)
    assert retried.data["result"] == 1 and [c["code"] for c in retried.data["certificates"]] == [
        t.code for t in tickets_of(shop, "DY-1010")
    ]


@pytest.mark.parametrize("case", ["bad_signature", "stale", "reserialised"])
def test_forged_stale_or_reserialised_orders_change_nothing(
    shop: ChannelCloud, douyin: DouyinPlatform, case: str
) -> None:
    url = shop.notify_url("douyin", "issue")
    body = douyin.body({"order_id": "DY-1002", "count": 1, "sku": {"sku_id": "1", "third_sku_id": "day"}})
    before = counts(shop)
    if case == "bad_signature":
        sent = douyin.send(url, body, secret="guessed-secret")
    elif case == "stale":
        sent = douyin.send(url, body, timestamp_ms=now_ms() - 601_000)
    else:
        signed = douyin.send(f"{douyin.base_url}/nowhere", body)  # signed, then re-serialised on the way
        sent = douyin._post(url, json.dumps(json.loads(body), indent=1).encode(), signed.query, signed.headers)
    assert sent.response.status_code == 200
    assert sent.data["error_code"] != 0 and "result" not in sent.data and "certificates" not in sent.data
    assert counts(shop) == before


def test_refund_of_an_unused_ticket_is_allowed_and_revokes_it_on_the_feed(
    shop: ChannelCloud, douyin: DouyinPlatform
) -> None:
    douyin.issue(shop.notify_url("douyin", "issue"), "DY-1003", "1", 2, third_sku_id="day", start_time=in_days(3))
    first, second = tickets_of(shop, "DY-1003")
    refund = douyin.refund_apply(shop.notify_url("douyin", "refund_apply"), "DY-1003", "AS-1003", [first.code or ""])
    assert refund.data == {"error_code": 0, "description": "success", "result": 1}
    first, second = tickets_of(shop, "DY-1003")
    assert (first.status, second.status) == ("refunded", "valid")
    assert revoked_on_feed(shop) == [str(first.id)]
    assert douyin.resend(refund).response.content == refund.response.content


def test_a_voucher_bought_today_is_open_dated_for_its_90_days_and_refundable_today(
    shop: ChannelCloud, douyin: DouyinPlatform
) -> None:
    start = int(time.time())
    douyin.issue(shop.notify_url("douyin", "issue"), "DY-1010", "1", 1, third_sku_id="day", start_time=start)
    [ticket] = tickets_of(shop, "DY-1010")
    last_day = datetime.fromtimestamp(start + 90 * 86400 - 1, ZoneInfo("Asia/Shanghai")).date()
    assert ticket.valid_until == datetime.combine(last_day + timedelta(days=1), dt_time(0), ZoneInfo("Asia/Shanghai"))
    assert ticket.valid_from <= datetime.now(UTC) < ticket.valid_until  # the gates admit it on any of those days

    refund = douyin.refund_apply(shop.notify_url("douyin", "refund_apply"), "DY-1010", "AS-1010", [ticket.code or ""])
    assert refund.data["result"] == 1  # an unused open voucher is refundable until its last day's cutoff
    assert revoked_on_feed(shop) == [str(ticket.id)]


def test_refund_of_a_used_ticket_is_rejected(shop: ChannelCloud, douyin: DouyinPlatform) -> None:
    douyin.issue(shop.notify_url("douyin", "issue"), "DY-1004", "1", 1, third_sku_id="day", start_time=in_days(3))
    (ticket,) = tickets_of(shop, "DY-1004")
    assert shop.gate_passage(ticket.id) is None
    refund = douyin.refund_apply(shop.notify_url("douyin", "refund_apply"), "DY-1004", "AS-1004", [ticket.code or ""])
    assert refund.data["error_code"] == 0 and refund.data["result"] == 2 and "used" in refund.data["reason"]
    assert tickets_of(shop, "DY-1004")[0].status == "valid" and revoked_on_feed(shop) == []


def test_a_refund_of_an_order_we_never_made_is_left_pending(shop: ChannelCloud, douyin: DouyinPlatform) -> None:
    before = counts(shop)
    refund = douyin.refund_apply(shop.notify_url("douyin", "refund_apply"), "DY-NEVER", "AS-9", [""])
    assert refund.data["error_code"] == 0 and "result" not in refund.data
    assert counts(shop) == before


def test_a_refund_douyin_made_itself_revokes_and_is_acknowledged(shop: ChannelCloud, douyin: DouyinPlatform) -> None:
    douyin.issue(shop.notify_url("douyin", "issue"), "DY-1005", "1", 1, third_sku_id="day")
    (ticket,) = tickets_of(shop, "DY-1005")
    notice = douyin.refund_notice(shop.notify_url("douyin", "refund_notice"), "DY-1005", "AS-1005", [ticket.code or ""])
    assert notice.data == {"error_code": 0, "description": "success"}
    assert tickets_of(shop, "DY-1005")[0].status == "refunded" and revoked_on_feed(shop) == [str(ticket.id)]
    status = douyin.status_query(shop.notify_url("douyin", "status_query"), "DY-1005")
    assert status.data["certificates"][0]["code"] == ticket.code and status.data["certificates"][0]["status"] != "valid"


def test_a_refund_we_denied_that_douyin_made_anyway_revokes_the_ticket(
    shop: ChannelCloud, douyin: DouyinPlatform
) -> None:
    product = make_product(shop.api, shop.site["id"], code="norefund", name="不可退票", refundable=False)
    config = {"client_key": CLIENT_KEY, "poi_id": POI_ID}
    shop.configure("douyin", base_url=douyin.base_url, skus={"nr": (product["id"], None)}, config=config)
    douyin.issue(shop.notify_url("douyin", "issue"), "DY-1006", "1", 1, third_sku_id="nr")
    (ticket,) = tickets_of(shop, "DY-1006")
    denied = douyin.refund_apply(shop.notify_url("douyin", "refund_apply"), "DY-1006", "AS-1006", [ticket.code or ""])
    assert denied.data["result"] == 2 and tickets_of(shop, "DY-1006")[0].status == "valid"

    # Douyin's customer service refunded the buyer anyway, and says so under the same after-sale id.
    notice = douyin.refund_notice(shop.notify_url("douyin", "refund_notice"), "DY-1006", "AS-1006", [ticket.code or ""])
    assert notice.data == {"error_code": 0, "description": "success"}
    assert tickets_of(shop, "DY-1006")[0].status == "refunded" and revoked_on_feed(shop) == [str(ticket.id)]


def test_a_gate_passage_sends_one_verify_call_with_the_right_fields(shop: ChannelCloud, douyin: DouyinPlatform) -> None:
    douyin.issue(shop.notify_url("douyin", "issue"), "DY-1006", "1", 1, third_sku_id="day", certificate_ids=["c-6"])
    (ticket,) = tickets_of(shop, "DY-1006")
    shop.gate_passage(ticket.id)
    assert shop.send_due_calls(now=datetime.now(UTC)) == 1
    (sent,) = douyin.verify_calls
    with shop.sessions() as s:
        row = s.scalars(select(ChannelCall)).one()
        assert (row.state, row.idempotency_key) == ("done", sent["verify_token"])
    assert (sent["poi_id"], sent["order_id"], sent["codes"]) == (POI_ID, "DY-1006", [ticket.code])
    assert douyin.problems == [] and douyin.verified[ticket.code or ""]["ids"]["certificate_id"] == "c-6"
    assert shop.send_due_calls(now=datetime.now(UTC)) == 0 and len(douyin.verify_calls) == 1


def test_platform_errors_are_retried_with_the_same_token_until_already_verified_is_done(
    shop: ChannelCloud, douyin: DouyinPlatform
) -> None:
    douyin.issue(shop.notify_url("douyin", "issue"), "DY-1007", "1", 1, third_sku_id="day")
    (ticket,) = tickets_of(shop, "DY-1007")
    shop.gate_passage(ticket.id)
    douyin.fail_first = 2
    later = datetime.now(UTC)
    for _ in range(3):
        shop.send_due_calls(now=later)
        later += timedelta(hours=1)
    assert len({c["verify_token"] for c in douyin.verify_calls}) == 1 and len(douyin.verify_calls) == 3
    with shop.sessions() as s:
        row = s.scalars(select(ChannelCall)).one()
        assert row.state == "done" and row.done_at is not None
        # the codes were verified by the first, failed, call: the third heard 1208 and took it as done
        assert douyin.answers == ["error", "error", 1208]
        assert douyin.verified[ticket.code or ""]["verify_token"] == row.idempotency_key
        assert row.reply["verify_ids"][ticket.code] == douyin.verified[ticket.code or ""]["ids"]["verify_id"]


def test_a_permanent_refusal_leaves_the_call_failing(shop: ChannelCloud, douyin: DouyinPlatform) -> None:
    douyin.issue(shop.notify_url("douyin", "issue"), "DY-1008", "1", 1, third_sku_id="day")
    (ticket,) = tickets_of(shop, "DY-1008")
    douyin.refuse[ticket.code or ""] = (1203, "券码已过期")
    shop.gate_passage(ticket.id)
    assert shop.send_due_calls(now=datetime.now(UTC)) == 1
    with shop.sessions() as s:
        row = s.scalars(select(ChannelCall)).one()
        assert row.state == "failing" and "1203" in (row.last_error or "")


def site_key(cloud: ChannelCloud) -> bytes:
    assert cloud.settings.voucher_key is not None
    return site_voucher_key(cloud.settings.voucher_key, cloud.site["code"])
