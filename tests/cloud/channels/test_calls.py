"""The verify calls: a gate's passage of an OTA ticket reaching the cloud makes one persisted call, sent to the
platform's stand-in over a real socket, retried with back-off (time driven by `now=`), surviving a restart,
failing visibly in the back office and retried from there."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from cloud.app import create_app
from cloud.channels.calls import MAX_ATTEMPTS, send_due
from cloud.channels.models import ChannelCall
from cloud.db import utcnow
from cloud.deps import Role
from cloud.tickets.models import Ticket
from models.api import API_PREFIX
from tests.cloud.channels.kit import ChannelCloud
from tests.cloud.channels.lebingxue_platform import Lebingxue, lebingxue

SKU = "LBX-DAY"


@pytest.fixture
def platform(channel_cloud: ChannelCloud, product: dict[str, Any]) -> Iterator[Lebingxue]:
    with lebingxue() as lbx:
        channel_cloud.configure("lebingxue", base_url=lbx.base_url, skus={SKU: (product["id"], None)})
        yield lbx


def _visit(cloud: ChannelCloud) -> date:
    return utcnow().astimezone(ZoneInfo(cloud.site["timezone"])).date() + timedelta(days=1)


def _ota_ticket(cloud: ChannelCloud, platform: Lebingxue, ref: str = "LBX-C1") -> tuple[int, str]:
    """An order from 乐冰雪 with one ticket: (ticket id, its voucher code)."""
    item = {"sku": SKU, "quantity": 1, "visit_date": _visit(cloud).isoformat(), "item_id": "L1"}
    r = platform.notify(cloud.url, "order", {"order_id": ref, "items": [item]})
    code = r.json()["data"]["vouchers"][0]["code"]
    with cloud.sessions() as s:
        ticket_id = s.scalar(select(Ticket.id).where(Ticket.code == code))
    assert ticket_id is not None
    return ticket_id, code


def _calls(cloud: ChannelCloud) -> list[ChannelCall]:
    with cloud.sessions() as s:
        return list(s.scalars(select(ChannelCall).order_by(ChannelCall.id)))


def test_a_gate_passage_of_an_ota_ticket_sends_one_verify_call(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    ticket_id, code = _ota_ticket(channel_cloud, platform)
    used_at = utcnow() - timedelta(minutes=3)  # an offline gate's passage arriving later

    assert channel_cloud.gate_passage(ticket_id, at=used_at) is None
    assert channel_cloud.send_due_calls() == 1
    assert channel_cloud.send_due_calls() == 0

    [call] = _calls(channel_cloud)
    [got] = platform.redemptions
    assert got.headers["idempotency-key"] == call.idempotency_key
    body = got.json()
    assert body["order_id"] == "LBX-C1" and body["used_total"] == 1 and body["quantity_total"] == 1
    assert body["redemptions"] == [{"code": code, "item_id": "L1", "used_at": used_at.isoformat()}]
    assert (call.state, call.attempts, call.reply) == ("done", 0, {"redemption_id": "R1"})
    assert platform.bad_signatures == 0


def test_a_platform_failing_three_times_gets_the_call_with_back_off_until_done(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    ticket_id, _ = _ota_ticket(channel_cloud, platform)
    platform.fail_first = 3
    t0 = utcnow()
    channel_cloud.gate_passage(ticket_id, at=t0)

    tried_at: list[datetime] = []
    now = t0 + timedelta(seconds=1)
    while now < t0 + timedelta(seconds=80):
        if channel_cloud.send_due_calls(now):
            tried_at.append(now)
        now += timedelta(seconds=1)

    # 10, 20 and 40 s after each failure: 5 s x 2^attempts.
    offsets = [round((t - tried_at[0]).total_seconds()) for t in tried_at]
    assert offsets == [0, 10, 30, 70]
    assert len({r.headers["idempotency-key"] for r in platform.redemptions}) == 1
    assert len({r.body for r in platform.redemptions}) == 1  # a resend, not a second use
    [call] = _calls(channel_cloud)
    assert (call.state, call.attempts) == ("done", 3)


def test_a_pending_call_survives_a_cloud_restart(channel_cloud: ChannelCloud, platform: Lebingxue) -> None:
    ticket_id, _ = _ota_ticket(channel_cloud, platform)
    platform.fail_first = 1
    t0 = utcnow()
    channel_cloud.gate_passage(ticket_id, at=t0)
    assert channel_cloud.send_due_calls(t0 + timedelta(seconds=1)) == 1  # failed: pending, due again later

    restarted = create_app(channel_cloud.settings, expiry_every_s=0)  # a new process: new engine, new sessions
    try:
        with restarted.state.sessionmaker() as s:
            assert send_due(s, channel_cloud.settings, now=t0 + timedelta(minutes=1)) == 1
    finally:
        restarted.state.engine.dispose()

    [call] = _calls(channel_cloud)
    assert call.state == "done" and len(platform.redemptions) == 2
    assert {r.headers["idempotency-key"] for r in platform.redemptions} == {call.idempotency_key}


def test_a_call_refused_for_good_is_failing_in_the_back_office_and_retry_sends_it_again(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    ticket_id, _ = _ota_ticket(channel_cloud, platform)
    platform.refuse = True
    channel_cloud.gate_passage(ticket_id)
    channel_cloud.send_due_calls()
    finance = channel_cloud.api.as_(Role.FINANCE)

    failing = finance.get(f"{API_PREFIX}/channels/calls", params={"state": "failing"}).json()
    assert [(c["ticket_id"], c["attempts"]) for c in failing] == [(ticket_id, 1)]
    assert "HTTP 400" in failing[0]["last_error"]

    platform.refuse = False
    r = finance.post(f"{API_PREFIX}/channels/calls/{failing[0]['id']}/retry")
    assert r.status_code == 200 and r.json()["state"] == "pending"
    assert finance.post(f"{API_PREFIX}/channels/calls/{failing[0]['id']}/retry").status_code == 409
    assert channel_cloud.send_due_calls() == 1

    assert finance.get(f"{API_PREFIX}/channels/calls", params={"state": "failing"}).json() == []
    assert [c.state for c in _calls(channel_cloud)] == ["done"]
    assert len(platform.redemptions) == 2
    audit = channel_cloud.api.as_(Role.ADMIN).get(f"{API_PREFIX}/audit").json()
    assert any(e["action"] == "channel.call_retry" and e["actor"].startswith("finance:") for e in audit)


def test_a_call_that_keeps_failing_gives_up_after_the_last_attempt(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    ticket_id, _ = _ota_ticket(channel_cloud, platform)
    platform.fail_first = 1000
    t0 = utcnow()
    channel_cloud.gate_passage(ticket_id, at=t0)

    for _ in range(MAX_ATTEMPTS + 2):  # each time the call is due again, however far apart (30 min at most)
        [pending] = _calls(channel_cloud)
        channel_cloud.send_due_calls(max(pending.next_at, t0))
        assert pending.next_at - t0 <= timedelta(hours=12)

    [call] = _calls(channel_cloud)
    assert (call.state, call.attempts) == ("failing", MAX_ATTEMPTS)
    assert len(platform.redemptions) == MAX_ATTEMPTS


def test_a_second_entry_is_sent_after_the_first_with_the_cumulative_count(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    item = {"sku": SKU, "quantity": 2, "visit_date": _visit(channel_cloud).isoformat()}
    platform.notify(channel_cloud.url, "order", {"order_id": "LBX-C2", "items": [item]})
    with channel_cloud.sessions() as s:
        first, second = s.scalars(select(Ticket.id).order_by(Ticket.id))
    platform.fail_first = 1
    t0 = utcnow()
    channel_cloud.gate_passage(first, at=t0)
    channel_cloud.gate_passage(second, at=t0)

    assert channel_cloud.send_due_calls(t0 + timedelta(seconds=1)) == 1  # the first failed; the second waits
    assert channel_cloud.send_due_calls(t0 + timedelta(seconds=2)) == 0
    assert channel_cloud.send_due_calls(t0 + timedelta(seconds=12)) == 2

    assert [r.json()["used_total"] for r in platform.redemptions] == [1, 1, 2]


def test_a_passage_of_a_ticket_not_sold_through_a_platform_makes_no_call(
    channel_cloud: ChannelCloud, platform: Lebingxue, product: dict[str, Any]
) -> None:
    cashier = channel_cloud.api.as_(Role.CASHIER)
    item = {"product_id": product["id"], "visit_date": _visit(channel_cloud).isoformat(), "quantity": 1}
    order = cashier.post(
        f"{API_PREFIX}/orders", json={"site_id": channel_cloud.site["id"], "channel": "counter", "items": [item]}
    ).json()
    paid = cashier.post(
        f"{API_PREFIX}/orders/{order['id']}/payments/counter", json={"method": "cash", "amount_fen": order["total_fen"]}
    )
    assert paid.status_code == 201, paid.text
    [ticket] = cashier.get(f"{API_PREFIX}/orders/{order['id']}/tickets").json()

    assert channel_cloud.gate_passage(ticket["id"]) is None
    assert channel_cloud.send_due_calls() == 0
    assert _calls(channel_cloud) == [] and platform.redemptions == []
