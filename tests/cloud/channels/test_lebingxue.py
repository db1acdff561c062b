"""乐冰雪 (our documented contract) end to end: its stand-in signs notifications and sends them to a cloud served
on loopback; the answers, the orders, the tickets and the site's feed are read back."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from cloud.channels.models import ChannelOrder
from cloud.db import utcnow
from cloud.deps import Role
from cloud.orders.models import Order
from cloud.refunds.models import Refund
from cloud.sync.models import FeedChange
from cloud.tickets.models import Ticket
from harness.keys import VOUCHER_KEY
from models.voucher import looks_like_ours, site_voucher_key
from tests.cloud.api import make_product
from tests.cloud.channels.kit import ChannelCloud, post
from tests.cloud.channels.lebingxue_platform import Lebingxue, lebingxue

SKU = "LBX-DAY"


@pytest.fixture
def platform(channel_cloud: ChannelCloud, product: dict[str, Any]) -> Iterator[Lebingxue]:
    with lebingxue() as lbx:
        channel_cloud.configure("lebingxue", base_url=lbx.base_url, skus={SKU: (product["id"], 25000)})
        yield lbx


def _tomorrow(cloud: ChannelCloud) -> date:
    return utcnow().astimezone(ZoneInfo(cloud.site["timezone"])).date() + timedelta(days=2)


def _order(ref: str, visit: date, quantity: int = 2) -> dict[str, Any]:
    return {
        "order_id": ref,
        "paid": True,
        "items": [{"sku": SKU, "quantity": quantity, "unit_price_fen": 26800, "visit_date": visit.isoformat()}],
        "phone": "13800000000",
    }


def _counts(cloud: ChannelCloud) -> tuple[int, int, int, int]:
    """(orders, tickets, feed changes, refunds) in the cloud."""
    with cloud.sessions() as s:
        return (
            s.scalar(select(func.count(Order.id))) or 0,
            s.scalar(select(func.count(Ticket.id))) or 0,
            s.scalar(select(func.count(FeedChange.id))) or 0,
            s.scalar(select(func.count(Refund.id))) or 0,
        )


def _feed_tickets(cloud: ChannelCloud) -> dict[str, str]:
    """The site's feed: ticket id -> the last status it carries (ticket upserts and status changes)."""
    out: dict[str, str] = {}
    with cloud.sessions() as s:
        for change in s.scalars(
            select(FeedChange).where(FeedChange.site_id == cloud.site["id"]).order_by(FeedChange.seq)
        ):
            if change.kind == "ticket":
                out[change.body["ticket"]["ticket_id"]] = (
                    f"{change.body['ticket']['status']}:{change.body['ticket']['code']}"
                )
            elif change.kind == "status":
                out[change.body["ticket_id"]] = change.body["status"]
    return out


def test_order_notification_issues_tickets_with_our_codes_on_the_sites_feed(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    r = platform.notify(channel_cloud.url, "order", _order("LBX1001", _tomorrow(channel_cloud)))

    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["code"] == 0 and answer["data"]["status"] == "issued"
    codes = [v["code"] for v in answer["data"]["vouchers"]]
    assert len(codes) == 2 and all(looks_like_ours(c, site_voucher_key(VOUCHER_KEY, "nanshan")) for c in codes)
    with channel_cloud.sessions() as s:
        order = s.scalar(select(Order).where(Order.ota_order_ref == "LBX1001"))
        assert order is not None and order.channel == "ota" and order.ota_channel == "lebingxue"
        assert order.total_fen == 2 * 25000  # the channel's price, not what the buyer paid on the platform
        corder = s.scalar(select(ChannelOrder).where(ChannelOrder.order_id == order.id))
        assert corder is not None and corder.extra["_lines"][0]["paid_unit_price_fen"] == 26800
    feed = _feed_tickets(channel_cloud)
    assert sorted(v.split(":", 1)[1] for v in feed.values()) == sorted(codes)


def test_the_same_notification_resent_makes_one_order_with_the_same_codes(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    path, body, headers = platform.signed("order", _order("LBX1002", _tomorrow(channel_cloud)))
    answers = [post(channel_cloud.url + path, body, headers) for _ in range(5)]
    # A new message about the same order (the platform's own resend, fresh timestamp and nonce) too.
    again = platform.notify(channel_cloud.url, "order", _order("LBX1002", _tomorrow(channel_cloud)))

    assert {a.content for a in answers} == {answers[0].content}
    assert again.json()["data"]["vouchers"] == answers[0].json()["data"]["vouchers"]
    orders, tickets, _, _ = _counts(channel_cloud)
    assert (orders, tickets) == (1, 2)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param("bad_signature", id="bad-signature"),
        pytest.param("stale", id="stale-timestamp"),
        pytest.param("replay", id="nonce-reused-with-another-body"),
        pytest.param("disabled", id="channel-disabled"),
    ],
)
def test_a_refused_notification_changes_nothing(
    channel_cloud: ChannelCloud, platform: Lebingxue, product: dict[str, Any], tamper: str
) -> None:
    visit = _tomorrow(channel_cloud)
    first = platform.notify(channel_cloud.url, "order", _order("LBX2000", visit), nonce="n-2000")
    assert first.json()["code"] == 0
    before = _counts(channel_cloud)

    payload = _order("LBX2001", visit)
    if tamper == "bad_signature":
        r = platform.notify(channel_cloud.url, "order", payload, secret="not-the-secret")
    elif tamper == "stale":
        r = platform.notify(channel_cloud.url, "order", payload, now=utcnow() - timedelta(minutes=11))
    elif tamper == "replay":
        r = platform.notify(channel_cloud.url, "order", payload, nonce="n-2000")
    else:
        channel_cloud.configure("lebingxue", base_url=platform.base_url, skus={}, enabled=False)
        r = platform.notify(channel_cloud.url, "order", payload)

    assert r.status_code == (200 if tamper == "disabled" else 401)
    assert r.json()["code"] == {"bad_signature": 1001, "stale": 1002, "replay": 1003, "disabled": 1004}[tamper]
    assert _counts(channel_cloud) == before
    with channel_cloud.sessions() as s:
        assert s.scalar(select(Order.id).where(Order.ota_order_ref == "LBX2001")) is None


def test_an_unknown_sku_is_refused_in_the_platforms_form(channel_cloud: ChannelCloud, platform: Lebingxue) -> None:
    payload = _order("LBX3000", _tomorrow(channel_cloud))
    payload["items"][0]["sku"] = "NOT-MAPPED"

    r = platform.notify(channel_cloud.url, "order", payload)

    assert r.status_code == 200 and r.json()["code"] == 2001
    assert _counts(channel_cloud)[:2] == (0, 0)


def test_refund_of_an_unused_ticket_is_approved_and_revoked_on_the_feed(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    placed = platform.notify(channel_cloud.url, "order", _order("LBX4000", _tomorrow(channel_cloud))).json()
    code = placed["data"]["vouchers"][0]["code"]

    r = platform.notify(channel_cloud.url, "refund", {"order_id": "LBX4000", "refund_id": "RF1", "codes": [code]})

    assert r.status_code == 200, r.text
    assert r.json()["code"] == 0 and r.json()["data"]["approved"] is True
    with channel_cloud.sessions() as s:
        ticket = s.scalar(select(Ticket).where(Ticket.code == code))
        assert ticket is not None and ticket.status == "refunded"
        refund = s.scalar(select(Refund))
        assert refund is not None and (refund.status, refund.provider) == ("succeeded", "lebingxue")
    assert _feed_tickets(channel_cloud)[str(ticket.id)] == "revoked"


def test_refund_of_a_used_ticket_is_denied_and_a_resent_refund_gets_the_same_decision(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    placed = platform.notify(channel_cloud.url, "order", _order("LBX5000", _tomorrow(channel_cloud), 1)).json()
    voucher = placed["data"]["vouchers"][0]
    channel_cloud.gate_passage(int(_ticket_id(channel_cloud, voucher["code"])))

    refund = {"order_id": "LBX5000", "refund_id": "RF2", "codes": [voucher["code"]]}
    denied = platform.notify(channel_cloud.url, "refund", refund)
    again = platform.notify(channel_cloud.url, "refund", refund)

    assert denied.json()["code"] == 3001 and denied.json()["data"]["reason"] == "ticket_used"
    assert again.json() == denied.json()
    assert _counts(channel_cloud)[3] == 0


def test_an_approved_refund_resent_is_approved_once(channel_cloud: ChannelCloud, platform: Lebingxue) -> None:
    platform.notify(channel_cloud.url, "order", _order("LBX6000", _tomorrow(channel_cloud)))
    refund = {"order_id": "LBX6000", "refund_id": "RF3", "quantity": 1}

    answers = [platform.notify(channel_cloud.url, "refund", refund).json() for _ in range(3)]

    assert all(a == answers[0] for a in answers) and answers[0]["data"]["approved"] is True
    assert _counts(channel_cloud)[3] == 1


def test_a_refund_the_platform_already_made_keeps_a_used_ticket_and_is_audited(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    placed = platform.notify(channel_cloud.url, "order", _order("LBX7000", _tomorrow(channel_cloud))).json()
    used, unused = (v["code"] for v in placed["data"]["vouchers"])
    channel_cloud.gate_passage(_ticket_id(channel_cloud, used))

    refunded = {"order_id": "LBX7000", "refund_id": "RF4", "decided": True, "codes": [used, unused]}
    r = platform.notify(channel_cloud.url, "refund", refunded)

    assert r.json()["code"] == 0 and r.json()["data"]["reason"] == "used_mismatch"
    with channel_cloud.sessions() as s:
        states = {t.code: (t.status, t.entries_used) for t in s.scalars(select(Ticket))}
    assert states == {used: ("valid", 1), unused: ("refunded", 0)}  # a day ticket: entries unlimited that day
    audit = channel_cloud.api.as_(Role.ADMIN).get("/api/v1/audit").json()
    assert any(e["action"] == "channel.refund_mismatch" for e in audit)


def _block(cloud: ChannelCloud, ticket_id: int) -> None:
    r = cloud.api.as_(Role.CASHIER).post(f"/api/v1/tickets/{ticket_id}/block", json={"reason": "lost card"})
    assert r.status_code == 200, r.text


def test_a_refund_the_platform_already_made_revokes_a_blocked_ticket_so_no_unblock_revives_it(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    placed = platform.notify(channel_cloud.url, "order", _order("LBX7100", _tomorrow(channel_cloud), 1)).json()
    code = placed["data"]["vouchers"][0]["code"]
    ticket_id = _ticket_id(channel_cloud, code)
    _block(channel_cloud, ticket_id)  # the skier lost the card, then asked the platform for their money back

    refunded = {"order_id": "LBX7100", "refund_id": "RF5", "decided": True, "codes": [code]}
    r = platform.notify(channel_cloud.url, "refund", refunded)

    assert r.json()["code"] == 0, r.text
    with channel_cloud.sessions() as s:
        assert s.scalar(select(Ticket.status).where(Ticket.id == ticket_id)) == "refunded"
    assert _feed_tickets(channel_cloud)[str(ticket_id)] == "revoked"
    found = channel_cloud.api.as_(Role.CASHIER).post(f"/api/v1/tickets/{ticket_id}/unblock", json={"reason": "found"})
    assert found.status_code == 409 and found.json()["error"]["code"] == "ticket_revoked"


def test_the_platforms_refund_request_for_a_blocked_ticket_is_approved(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    placed = platform.notify(channel_cloud.url, "order", _order("LBX7200", _tomorrow(channel_cloud), 1)).json()
    ticket_id = _ticket_id(channel_cloud, placed["data"]["vouchers"][0]["code"])
    _block(channel_cloud, ticket_id)

    r = platform.notify(channel_cloud.url, "refund", {"order_id": "LBX7200", "refund_id": "RF6", "quantity": 1})

    assert r.json()["code"] == 0 and r.json()["data"]["approved"] is True, r.text
    with channel_cloud.sessions() as s:
        assert s.scalar(select(Ticket.status).where(Ticket.id == ticket_id)) == "refunded"
    assert _feed_tickets(channel_cloud)[str(ticket_id)] == "revoked"


def test_pre_order_then_pay_issues_and_cancel_gives_the_stock_back(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    held = {**_order("LBX8000", _tomorrow(channel_cloud)), "paid": False}
    pending = platform.notify(channel_cloud.url, "order", held).json()
    paid = platform.notify(channel_cloud.url, "pay", {"order_id": "LBX8000"}).json()
    platform.notify(channel_cloud.url, "order", {**held, "order_id": "LBX8001"})
    cancelled = platform.notify(channel_cloud.url, "cancel", {"order_id": "LBX8001"}).json()
    query = platform.notify(channel_cloud.url, "query", {"order_id": "LBX8000"}).json()

    assert (pending["data"]["status"], pending["data"]["vouchers"]) == ("pending", [])
    assert paid["data"]["status"] == "issued" and len(paid["data"]["vouchers"]) == 2
    assert cancelled["data"]["status"] == "cancelled"
    assert query["data"] == paid["data"]


def test_a_malformed_message_is_answered_invalid(channel_cloud: ChannelCloud, platform: Lebingxue) -> None:
    r = platform.notify(channel_cloud.url, "order", {}, raw=b"not json")

    assert r.status_code == 200 and r.json()["code"] == 1005


def _ticket_id(cloud: ChannelCloud, code: str) -> int:
    with cloud.sessions() as s:
        ticket_id = s.scalar(select(Ticket.id).where(Ticket.code == code))
    assert ticket_id is not None
    return ticket_id


def test_eight_simultaneous_resends_make_one_order_on_postgresql(pg_channel_cloud: ChannelCloud) -> None:
    cloud = pg_channel_cloud
    product = make_product(cloud.api, cloud.site["id"])
    with lebingxue() as platform:
        cloud.configure("lebingxue", base_url=platform.base_url, skus={SKU: (product["id"], None)})
        path, body, headers = platform.signed("order", _order("LBX9000", _tomorrow(cloud)))
        answers: list[Any] = [None] * 8
        start = threading.Barrier(8)

        def send(i: int) -> None:
            start.wait()
            answers[i] = post(cloud.url + path, body, headers)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert {a.status_code for a in answers} == {200}
    assert len({json.dumps(a.json()["data"]["vouchers"]) for a in answers}) == 1
    assert _counts(cloud)[:2] == (1, 2)


def test_retries_of_an_order_for_the_last_stock_at_once_are_all_answered_with_it_on_postgresql(
    pg_channel_cloud: ChannelCloud,
) -> None:
    cloud = pg_channel_cloud
    product = make_product(cloud.api, cloud.site["id"], daily_stock=2)
    with lebingxue() as platform:
        cloud.configure("lebingxue", base_url=platform.base_url, skus={SKU: (product["id"], None)})
        # Four copies of one order, each signed afresh (a platform retrying with a new timestamp and nonce): the
        # ones that waited for the stock's lock find it gone, and must still answer with the order that took it.
        copies = [platform.signed("order", _order("LBX9100", _tomorrow(cloud))) for _ in range(4)]
        answers: list[Any] = [None] * 4
        start = threading.Barrier(4)

        def send(i: int) -> None:
            path, body, headers = copies[i]
            start.wait()
            answers[i] = post(cloud.url + path, body, headers)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert [a.json()["code"] for a in answers] == [0, 0, 0, 0], [a.text for a in answers]
    assert len({json.dumps(a.json()["data"]["vouchers"]) for a in answers}) == 1
    assert _counts(cloud)[:2] == (1, 2)
