"""携程 supplier direct connection: the adapter's cipher and signature (the research's test vector), its reading and
answers of messages that crossed a real socket from the Ctrip stand-in, its OrderConsumedNotice calls to the
stand-in (done / retry / give_up), and the whole flow through a cloud served on loopback (SQLite)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

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
from cloud.channels.ctrip import CtripAdapter, decrypt, encrypt, sequence_id, sign
from cloud.channels.models import ChannelCall
from cloud.tickets.models import Ticket
from tests.cloud.channels.ctrip_platform import (
    ACCOUNT_ID,
    SECRETS,
    CtripPlatform,
    Sent,
    aes_decrypt,
    aes_encrypt,
    beijing_now,
    ctrip_sign,
)
from tests.cloud.channels.kit import ChannelCloud, StandIn

ADAPTER = CtripAdapter()
DAY = (date.today() + timedelta(days=3)).isoformat()  # refundable under our rules until then


def account(base_url: str = "http://127.0.0.1:9", **config: str) -> ChannelAccount:
    return ChannelAccount("ctrip", base_url, 600, {"account_id": ACCOUNT_ID, **config}, SECRETS)


def inbound(sent: Sent, inbox: StandIn) -> InboundRequest:
    got = inbox.received[-1]
    assert got.body == sent.raw
    return InboundRequest("", got.method, got.path, got.query, got.headers, got.body)


def authentic(sent: Sent, inbox: StandIn) -> tuple[Authentic, InboundRequest]:
    request = inbound(sent, inbox)
    message = ADAPTER.authenticate(request, account(), datetime.now(UTC))
    assert isinstance(message, Authentic), message
    return message, request


def header(answer: bytes) -> dict[str, str]:
    return dict(json.loads(answer)["header"])


def opened(answer: bytes) -> dict[str, Any]:
    return dict(json.loads(aes_decrypt(json.loads(answer)["body"])))


@pytest.fixture(scope="module")
def inbox() -> Iterator[StandIn]:
    """Where the stand-in's messages land for the adapter-only tests."""
    server = StandIn(lambda got: (200, {}, b'{"header":{"resultCode":"0000","resultMessage":"ok"}}')).start()
    yield server
    server.stop()


@pytest.fixture
def spi(inbox: StandIn) -> CtripPlatform:
    return CtripPlatform(notify_url=inbox.base_url + "/notify")


@pytest.fixture
def ctrip() -> Iterator[CtripPlatform]:
    """Ctrip's notice endpoint on loopback."""
    platform = CtripPlatform().start()
    yield platform
    platform.stop()


# ---- the published cipher and signature ----

VECTOR_BODY = '{"sequenceId":"2024010100000000000000000000000000000000","otaOrderId":"123456"}'
VECTOR_CIPHER = (
    "ndcdnidkeiblebbgndalfgjolacliplkedehdkehaeahiecpkciepappfonlipfdknhcjadolninpkhimpcafknikboneiibcnhohepklkjge"
    "lkdfjpmlpnpjmdhamlifocfelcddhmllakkpnjdpmpldcpnejfe"
)


def test_our_cipher_and_signature_reproduce_the_research_vector() -> None:
    keys = {"aes_key": "0123456789abcdef", "aes_iv": "fedcba9876543210"}
    assert (
        encrypt(VECTOR_BODY, keys)
        == VECTOR_CIPHER
        == aes_encrypt(VECTOR_BODY, **{"key": keys["aes_key"], "iv": keys["aes_iv"]})
    )
    assert decrypt(VECTOR_CIPHER, keys) == VECTOR_BODY
    signed = sign("acct001", "CancelPreOrder", "2024-01-01 10:00:00", VECTOR_CIPHER, "signkey001")
    assert signed == "13ec270248d2131e02df5700818773c6"
    assert ctrip_sign("acct001", "CancelPreOrder", "2024-01-01 10:00:00", VECTOR_CIPHER, "1.0", "signkey001") == signed


# ---- reading what Ctrip sends (over a real socket to an inbox) ----


def test_a_pre_order_is_an_unpaid_order_of_the_plu_and_its_resend_is_the_same_message(
    spi: CtripPlatform, inbox: StandIn
) -> None:
    sent = spi.create_pre_order("CT-1", "PLU-DAY", DAY, quantity=2, price=199.9)
    message, request = authentic(sent, inbox)
    intent = ADAPTER.parse(message, request)
    assert isinstance(intent, PlaceOrder) and not intent.paid and intent.order_ref == "CT-1"
    (line,) = intent.lines
    assert (line.sku, line.quantity, line.unit_price_fen, line.visit_date, line.ref) == (
        "PLU-DAY",
        2,
        19990,
        date.fromisoformat(DAY),
        "PLU-DAY",
    )
    assert intent.phone == "13800138000" and intent.name == "张三"
    spi.resend(sent)
    assert ADAPTER.authenticate(inbound(sent, inbox), account(), datetime.now(UTC)) == message
    spaced = json.dumps(json.loads(sent.raw), indent=2).encode()  # the envelope re-spaced: the signed text is the same
    again = ADAPTER.authenticate(InboundRequest("", "POST", "/notify", {}, {}, spaced), account(), datetime.now(UTC))
    assert isinstance(again, Authentic) and again.fingerprint == message.fingerprint
    retried = spi.retry(sent, offset_s=2)  # Ctrip's resend with a fresh requestTime: another message, same order
    other, _ = authentic(retried, inbox)
    assert other.fingerprint != message.fingerprint and other.payload["body"] == message.payload["body"]


def test_pay_cancel_refund_and_query_are_read(spi: CtripPlatform, inbox: StandIn) -> None:
    pay, request = authentic(spi.pay_pre_order("CT-2", "SF1", "PLU-DAY", "ITEM-9"), inbox)
    assert ADAPTER.parse(pay, request) == PayOrder("CT-2", extra={"ctrip_items": {"PLU-DAY": "ITEM-9"}})
    cancel, request = authentic(spi.cancel_pre_order("CT-2"), inbox)
    assert ADAPTER.parse(cancel, request) == CancelOrder("CT-2")
    sent = spi.cancel_order("CT-2", "SF1", "PLU-DAY", "ITEM-9", 2)
    refund, request = authentic(sent, inbox)
    assert ADAPTER.parse(refund, request) == RefundRequest(
        "CT-2", sent.body["sequenceId"], quantity=2, decided=False, reason="携程取消"
    )
    notified, request = authentic(spi.cancel_order("CT-2", "SF1", "PLU-DAY", "ITEM-9", 1, confirm_type=1), inbox)
    assert isinstance(made := ADAPTER.parse(notified, request), RefundRequest) and made.decided
    query, request = authentic(spi.query_order("CT-2"), inbox)
    assert ADAPTER.parse(query, request) == QueryOrder("CT-2")


@pytest.mark.parametrize(
    ("case", "kind", "code"),
    [
        ("bad_signature", "bad_signature", "0002"),
        ("guessed_key", "bad_signature", "0002"),
        ("stale", "stale", "0001"),
        ("future", "stale", "0001"),
        ("other_account", "unknown_account", "0003"),
        ("body_reserialised", "bad_signature", "0002"),
        ("not_json", "malformed", "0001"),
        ("not_our_hex", "malformed", "0001"),
    ],
)
def test_forged_stale_or_unreadable_messages_are_refused_in_ctrips_form(
    spi: CtripPlatform, inbox: StandIn, case: str, kind: str, code: str
) -> None:
    body = {"sequenceId": "20240101" + "a" * 32, "otaOrderId": "CT-3"}
    if case == "bad_signature":
        sent = spi.send("QueryOrder", body, sign="0" * 32)
    elif case == "guessed_key":
        spi.sign_key = "f" * 32
        sent = spi.send("QueryOrder", body)
    elif case in ("stale", "future"):
        sent = spi.send("QueryOrder", body, request_time=beijing_now(-700 if case == "stale" else 700))  # to the second
    elif case == "other_account":
        spi.account_id = "someone-else"
        sent = spi.send("QueryOrder", body)
    else:
        signed = json.loads(spi.envelope("QueryOrder", body))
        if case == "body_reserialised":  # the same data, written with other spacing and encrypted again
            signed["body"] = aes_encrypt(json.dumps(body, indent=1))
        elif case == "not_our_hex":
            signed["body"] = "ZZ" + signed["body"]
            signed["header"]["sign"] = ctrip_sign(ACCOUNT_ID, "QueryOrder", signed["header"]["requestTime"],
                                                  signed["body"], "1.0", SECRETS["sign_key"])  # fmt: skip
        raw = b"{not json" if case == "not_json" else json.dumps(signed).encode()
        sent = spi.send_raw("QueryOrder", body, raw)
    verdict = ADAPTER.authenticate(inbound(sent, inbox), account(), datetime.now(UTC))
    assert isinstance(verdict, Rejected) and verdict.kind == kind
    answer = ADAPTER.answer(None, verdict, account())
    assert answer.status == 200 and header(answer.body)["resultCode"] == code
    assert "body" not in json.loads(answer.body)


def test_an_unknown_service_or_a_missing_field_is_malformed(spi: CtripPlatform, inbox: StandIn) -> None:
    message, request = authentic(spi.send("SendVoucher", {"sequenceId": "x", "otaOrderId": "CT-4"}), inbox)
    with pytest.raises(Malformed, match="SendVoucher"):
        ADAPTER.parse(message, request)
    message, request = authentic(spi.send("CreatePreOrder", {"sequenceId": "x", "otaOrderId": "CT-4"}), inbox)
    with pytest.raises(Malformed, match="items"):
        ADAPTER.parse(message, request)
    answer = ADAPTER.answer(message, Failure("invalid", "items is missing"), account())
    assert header(answer.body) == {"resultCode": "1006", "resultMessage": "items is missing"}


def test_answers_in_ctrips_form(spi: CtripPlatform, inbox: StandIn) -> None:
    day = date.fromisoformat(DAY)
    v1 = Voucher(11, "XCNA0000011ABCDEF", "PLU-DAY", day, "valid", 0, "PLU-DAY")
    v2 = Voucher(12, "XCNA0000012ABCDEF", "PLU-DAY", day, "used", 1, "PLU-DAY")
    lines = {"ctrip_lines": [{"PLU": "PLU-DAY", "quantity": 2, "useStartDate": DAY, "useEndDate": DAY}]}
    create, _ = authentic(spi.create_pre_order("CT-5", "PLU-DAY", DAY, quantity=2), inbox)
    held = OrderOutcome("CT-5", "SF5", "pending", (), extra=lines)
    assert opened(ADAPTER.answer(create, held, account()).body) == {
        "otaOrderId": "CT-5", "supplierOrderId": "SF5",
        "items": [{"PLU": "PLU-DAY", "inventorys": [{"useDate": DAY, "quantity": 2}]}],
    }  # fmt: skip
    pay, _ = authentic(spi.pay_pre_order("CT-5", "SF5", "PLU-DAY", "ITEM-5"), inbox)
    issued = OrderOutcome("CT-5", "SF5", "issued", (v1, v2), extra=lines | {"ctrip_items": {"PLU-DAY": "ITEM-5"}})
    answer = ADAPTER.answer(pay, issued, account())
    assert header(answer.body)["resultCode"] == "0000"
    assert opened(answer.body) == {
        "otaOrderId": "CT-5", "supplierOrderId": "SF5", "supplierConfirmType": 1, "voucherSender": 1,
        "vouchers": [
            {"itemId": "ITEM-5", "voucherId": v1.code, "voucherType": 2, "voucherCode": v1.code},
            {"itemId": "ITEM-5", "voucherId": v2.code, "voucherType": 2, "voucherCode": v2.code},
        ],
        "items": [{"itemId": "ITEM-5", "isCredentialVouchers": 0}],
    }  # fmt: skip
    query, _ = authentic(spi.query_order("CT-5"), inbox)
    (item,) = opened(ADAPTER.answer(query, issued, account()).body)["items"]
    assert (item["itemId"], item["orderStatus"], item["quantity"], item["useQuantity"]) == ("ITEM-5", 7, 2, 1)
    assert item["vouchers"] == [{"voucherId": v1.code, "voucherStatus": 0}, {"voucherId": v2.code, "voucherStatus": 1}]
    cancel, _ = authentic(spi.cancel_order("CT-5", "SF5", "PLU-DAY", "ITEM-5", 1), inbox)
    approved = RefundOutcome("CT-5", "r", True, "approved", "ok", (v1,))
    assert opened(ADAPTER.answer(cancel, approved, account()).body) == {
        "supplierConfirmType": 1, "items": [{"itemId": "ITEM-5", "vouchers": [{"voucherId": v1.code}]}]
    }  # fmt: skip
    denials = {"ticket_used": "2002", "past_cutoff": "2003", "wrong_quantity": "2004", "not_refundable": "2005"}
    for denial, code in (denials | {"unknown_order": "2001", "already_refunded": "2100"}).items():
        answer = ADAPTER.answer(cancel, RefundOutcome("CT-5", "r", False, denial, "why", ()), account())
        assert header(answer.body) == {"resultCode": code, "resultMessage": "why"} and "body" not in json.loads(
            answer.body
        )
    assert header(ADAPTER.answer(create, Failure("unknown_sku", "no"), account()).body)["resultCode"] == "1001"
    assert header(ADAPTER.answer(create, Failure("sold_out", "no"), account()).body)["resultCode"] == "1003"
    assert header(ADAPTER.answer(query, Failure("unknown_order", "no"), account()).body)["resultCode"] == "4001"
    assert header(ADAPTER.answer(cancel, Failure("unknown_order", "no"), account()).body)["resultCode"] == "2001"


# ---- the verify call (OrderConsumedNotice) against the stand-in ----


def call(key: str = "0f" * 16, used_total: int = 1, quantity: int = 2) -> VerifyCall:
    at = datetime(2026, 1, 10, 17, 30, tzinfo=UTC)  # 01:30 on the 11th in Beijing
    extra = {
        "ctrip_items": {"PLU-DAY": "ITEM-7"},
        "ctrip_lines": [
            {"PLU": "PLU-DAY", "quantity": quantity, "useStartDate": "2026-01-11", "useEndDate": "2026-01-11"}
        ],
    }
    entry = UsedEntry(71, "XCNA0000071ABCDEF", "PLU-DAY", at)
    return VerifyCall(7, key, at, "CT-7", "SF7", extra, (entry,), used_total, quantity)


def test_the_notice_carries_our_sequence_id_cumulative_use_and_the_voucher(ctrip: CtripPlatform) -> None:
    with httpx.Client(timeout=5) as http:
        result = ADAPTER.send(call(used_total=2), account(ctrip.base_url), http, datetime.now(UTC))
    assert result.verdict == "done" and ctrip.problems == []
    (notice,) = ctrip.notices
    assert notice == {
        "sequenceId": "20260111" + "0f" * 16, "otaOrderId": "CT-7", "supplierOrderId": "SF7",
        "items": [{"itemId": "ITEM-7", "useStartDate": "2026-01-11", "useEndDate": "2026-01-11", "quantity": 2,
                   "useQuantity": 2, "vouchers": [{"voucherId": "XCNA0000071ABCDEF"}]}],
    }  # fmt: skip
    assert json.loads(ctrip.raw_notices[0])["header"]["requestTime"] == "2026-01-11 01:30:00"
    assert sequence_id(call(key="not-hex-at-all")).startswith("20260111") and len(sequence_id(call(key="x"))) == 40


def test_platform_errors_are_retried_with_the_same_bytes_and_already_taken_is_done(ctrip: CtripPlatform) -> None:
    ctrip.fail_first = 2
    with httpx.Client(timeout=5) as http:
        verdicts = [ADAPTER.send(call(), account(ctrip.base_url), http, datetime.now(UTC)) for _ in range(3)]
    assert [r.verdict for r in verdicts] == ["retry", "retry", "done"]
    assert "0005" in verdicts[0].detail and "0008" in verdicts[2].detail
    assert len(set(ctrip.raw_notices)) == 1 and len(ctrip.raw_notices) == 3


@pytest.mark.parametrize(("fail_with", "verdict"), [("0007", "retry"), ("http500", "retry"), ("0006", "give_up")])
def test_what_ctrip_says_decides_retry_or_give_up(ctrip: CtripPlatform, fail_with: str, verdict: str) -> None:
    ctrip.fail_first, ctrip.fail_with, ctrip.taken_anyway = 1, fail_with, False
    with httpx.Client(timeout=5) as http:
        assert ADAPTER.send(call(), account(ctrip.base_url), http, datetime.now(UTC)).verdict == verdict
        assert ADAPTER.send(call(), account(ctrip.base_url), http, datetime.now(UTC)).verdict == "done"


def test_a_refusal_for_good_is_given_up_and_an_unreachable_ctrip_retried(ctrip: CtripPlatform) -> None:
    ctrip.refuse = "5001"
    with httpx.Client(timeout=5) as http:
        refused = ADAPTER.send(call(), account(ctrip.base_url), http, datetime.now(UTC))
        assert refused.verdict == "give_up" and "5001" in refused.detail
        wrong_key = ChannelAccount(
            "ctrip", ctrip.base_url, 600, {"account_id": ACCOUNT_ID}, SECRETS | {"sign_key": "x"}
        )
        assert ADAPTER.send(call(), wrong_key, http, datetime.now(UTC)).verdict == "give_up"
        down = StandIn(lambda got: (200, {}, b"")).start()
        base = down.base_url
        down.stop()
        assert ADAPTER.send(call(), account(base), http, datetime.now(UTC)).verdict == "retry"
    assert ctrip.problems == ["notice: bad sign"]


# ---- end to end: the stand-in, the cloud over a real socket, SQLite ----


@pytest.fixture
def shop(channel_cloud: ChannelCloud, product: dict[str, Any], ctrip: CtripPlatform) -> ChannelCloud:
    """Ctrip configured: PLU "PLU-DAY" is our day ticket; its notices go to the stand-in; it posts to our URL."""
    channel_cloud.configure(
        "ctrip", base_url=ctrip.base_url, skus={"PLU-DAY": (product["id"], 18000)}, config={"account_id": ACCOUNT_ID}
    )
    ctrip.notify_url = channel_cloud.notify_url("ctrip")
    return channel_cloud


def counts(cloud: ChannelCloud) -> tuple[int, int, int]:
    return cloud.counts()


def tickets_of(cloud: ChannelCloud, order_ref: str) -> list[Ticket]:
    return cloud.tickets_of("ctrip", order_ref)


def feed(cloud: ChannelCloud) -> list[dict[str, Any]]:
    return cloud.feed()


def bought(ctrip: CtripPlatform, order_ref: str, quantity: int = 1) -> tuple[str, list[str]]:
    """Pre-order and pay on Ctrip: (our order number, the voucher codes Ctrip was given)."""
    created = ctrip.create_pre_order(order_ref, "PLU-DAY", DAY, quantity=quantity)
    assert created.code == "0000", created.message
    supplier_order = created.data["supplierOrderId"]
    paid = ctrip.pay_pre_order(order_ref, supplier_order, "PLU-DAY", f"I-{order_ref}")
    assert paid.code == "0000", paid.message
    return supplier_order, [v["voucherCode"] for v in paid.data["vouchers"]]


def test_an_order_becomes_tickets_with_our_codes_in_the_answer_and_on_the_feed_once(
    shop: ChannelCloud, ctrip: CtripPlatform
) -> None:
    created = ctrip.create_pre_order("CT-101", "PLU-DAY", DAY, quantity=2)
    assert created.code == "0000" and created.data["items"] == [
        {"PLU": "PLU-DAY", "inventorys": [{"useDate": DAY, "quantity": 2}]}
    ]
    assert ctrip.resend(created).response.content == created.response.content
    assert ctrip.retry(created).data["supplierOrderId"] == created.data["supplierOrderId"]
    assert counts(shop)[:2] == (1, 0)  # held, not issued: nothing for the gates yet
    paid = ctrip.pay_pre_order("CT-101", created.data["supplierOrderId"], "PLU-DAY", "I-101")
    tickets = tickets_of(shop, "CT-101")
    codes = [t.code for t in tickets]
    assert len(tickets) == 2 and all(c and c.startswith("XC") for c in codes)
    assert paid.data["vouchers"] == [
        {"itemId": "I-101", "voucherId": c, "voucherType": 2, "voucherCode": c} for c in codes
    ]
    on_feed = [json.dumps(change) for change in feed(shop) if change["kind"] == "ticket"]
    assert all(any(code in change for change in on_feed) for code in codes if code)
    before = counts(shop)
    assert ctrip.resend(paid).response.content == paid.response.content
    assert ctrip.retry(paid).data["vouchers"] == paid.data["vouchers"]
    assert ctrip.retry(created).data["supplierOrderId"] == created.data["supplierOrderId"]
    assert counts(shop) == before
    query = ctrip.query_order("CT-101")
    assert query.data["items"][0]["orderStatus"] == 2 and query.data["items"][0]["quantity"] == 2


@pytest.mark.parametrize("case", ["bad_signature", "stale", "body_reserialised", "other_account"])
def test_forged_stale_or_reserialised_orders_change_nothing(
    shop: ChannelCloud, ctrip: CtripPlatform, case: str
) -> None:
    before = counts(shop)
    item = {"PLU": "PLU-DAY", "useStartDate": DAY, "useEndDate": DAY, "price": 180, "quantity": 1}
    body = {"sequenceId": "20260101" + "b" * 32, "otaOrderId": "CT-102", "items": [item]}
    if case == "bad_signature":
        sent = ctrip.send("CreatePreOrder", body, sign="1" * 32)
    elif case == "stale":
        sent = ctrip.send("CreatePreOrder", body, request_time=beijing_now(-3600))
    elif case == "other_account":
        ctrip.account_id = "another-supplier"
        sent = ctrip.send("CreatePreOrder", body)
    else:
        signed = json.loads(ctrip.envelope("CreatePreOrder", body))
        signed["body"] = aes_encrypt(json.dumps(body, indent=1))
        sent = ctrip.send_raw("CreatePreOrder", body, json.dumps(signed).encode())
    expected = {"bad_signature": "0002", "stale": "0001", "body_reserialised": "0002", "other_account": "0003"}[case]
    assert sent.response.status_code == 200 and sent.code == expected and sent.data == {}
    assert counts(shop) == before


def test_an_unpaid_pre_order_cancelled_gives_its_stock_back(shop: ChannelCloud, ctrip: CtripPlatform) -> None:
    created = ctrip.create_pre_order("CT-103", "PLU-DAY", DAY)
    cancelled = ctrip.cancel_pre_order("CT-103")
    assert cancelled.code == "0000" and tickets_of(shop, "CT-103") == []
    paid = ctrip.pay_pre_order("CT-103", created.data["supplierOrderId"], "PLU-DAY", "I-103")
    assert paid.code.startswith("11") and paid.data == {}  # our own 1100-1199 code with the reason
    assert ctrip.query_order("CT-103").data["items"][0]["orderStatus"] == 14


def test_refund_of_an_unused_ticket_is_approved_and_revokes_it_on_the_feed(
    shop: ChannelCloud, ctrip: CtripPlatform
) -> None:
    supplier_order, codes = bought(ctrip, "CT-104", quantity=2)
    refund = ctrip.cancel_order("CT-104", supplier_order, "PLU-DAY", "I-CT-104", 1)
    assert refund.code == "0000", refund.message
    first, second = tickets_of(shop, "CT-104")
    assert refund.data == {
        "supplierConfirmType": 1,
        "items": [{"itemId": "I-CT-104", "vouchers": [{"voucherId": codes[0]}]}],
    }
    assert first.status != "valid" and second.status == "valid"
    revoked = [c for c in feed(shop) if c["kind"] == "status" and c["ticket_id"] == str(first.id)]
    assert [c["status"] for c in revoked] == ["revoked"], feed(shop)[-2:]
    assert ctrip.resend(refund).response.content == refund.response.content
    assert tickets_of(shop, "CT-104")[1].status == "valid"


def test_refund_of_a_used_ticket_is_denied(shop: ChannelCloud, ctrip: CtripPlatform) -> None:
    supplier_order, _ = bought(ctrip, "CT-105")
    (ticket,) = tickets_of(shop, "CT-105")
    assert shop.gate_passage(ticket.id) is None
    refund = ctrip.cancel_order("CT-105", supplier_order, "PLU-DAY", "I-CT-105", 1)
    assert refund.code == "2004" and refund.data == {}  # the refundable quantity (0) is not the one asked for
    assert tickets_of(shop, "CT-105")[0].status == "valid"


def test_a_gate_passage_sends_one_notice_with_the_right_fields(shop: ChannelCloud, ctrip: CtripPlatform) -> None:
    supplier_order, codes = bought(ctrip, "CT-106", quantity=2)
    first, _ = tickets_of(shop, "CT-106")
    shop.gate_passage(first.id)
    assert shop.send_due_calls() == 1
    (notice,) = ctrip.notices
    with shop.sessions() as s:
        row = s.scalars(select(ChannelCall)).one()
        assert row.state == "done" and notice["sequenceId"].endswith(row.idempotency_key)
    assert (notice["otaOrderId"], notice["supplierOrderId"]) == ("CT-106", supplier_order)
    (item,) = notice["items"]
    assert (item["itemId"], item["quantity"], item["useQuantity"]) == ("I-CT-106", 2, 1)
    assert item["vouchers"] == [{"voucherId": codes[0]}] and ctrip.problems == []
    assert shop.send_due_calls() == 0 and len(ctrip.notices) == 1


def test_platform_errors_are_retried_with_the_same_sequence_until_already_taken_is_done(
    shop: ChannelCloud, ctrip: CtripPlatform
) -> None:
    bought(ctrip, "CT-107")
    (ticket,) = tickets_of(shop, "CT-107")
    shop.gate_passage(ticket.id)
    ctrip.fail_first = 2
    later = datetime.now(UTC)
    for _ in range(3):
        shop.send_due_calls(now=later)
        later += timedelta(hours=1)
    assert len(ctrip.raw_notices) == 3 and len(set(ctrip.raw_notices)) == 1
    with shop.sessions() as s:
        row = s.scalars(select(ChannelCall)).one()
        assert (row.state, row.attempts) == ("done", 2) and row.reply == {"resultCode": "0008"}


def test_a_permanent_refusal_leaves_the_call_failing(shop: ChannelCloud, ctrip: CtripPlatform) -> None:
    bought(ctrip, "CT-108")
    (ticket,) = tickets_of(shop, "CT-108")
    ctrip.refuse = "5001"
    shop.gate_passage(ticket.id)
    assert shop.send_due_calls() == 1
    with shop.sessions() as s:
        row = s.scalars(select(ChannelCall)).one()
        assert row.state == "failing" and "5001" in (row.last_error or "")
