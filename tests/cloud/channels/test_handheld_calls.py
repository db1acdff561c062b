"""A handheld's verification (核销) of an OTA ticket tells the platform as a gate's passage does: one persisted
call; an undo before the call went out calls it off, an undo after it stays told (audited either way)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from cloud.audit.models import AuditEntry
from cloud.channels.models import ChannelCall
from cloud.db import utcnow
from cloud.deps import Role
from cloud.tickets.models import Ticket
from tests.cloud.channels.kit import ChannelCloud
from tests.cloud.channels.lebingxue_platform import Lebingxue, lebingxue

SKU = "LBX-DAY"


@pytest.fixture
def platform(channel_cloud: ChannelCloud, product: dict[str, Any]) -> Iterator[Lebingxue]:
    with lebingxue() as lbx:
        channel_cloud.configure("lebingxue", base_url=lbx.base_url, skus={SKU: (product["id"], None)})
        yield lbx


def _ota_ticket_for_today(cloud: ChannelCloud, platform: Lebingxue, ref: str) -> tuple[int, str]:
    today = utcnow().astimezone(ZoneInfo(cloud.site["timezone"])).date()
    item = {"sku": SKU, "quantity": 1, "visit_date": today.isoformat(), "item_id": "L1"}
    code = platform.notify(cloud.url, "order", {"order_id": ref, "items": [item]}).json()["data"]["vouchers"][0]["code"]
    with cloud.sessions() as s:
        ticket_id = s.scalar(select(Ticket.id).where(Ticket.code == code))
    assert ticket_id is not None
    return ticket_id, code


def _verify(cloud: ChannelCloud, code: str) -> dict[str, Any]:
    body = {"code": code, "event_id": str(uuid.uuid4()), "at": utcnow().isoformat(), "device": "hh-01"}
    r = cloud.api.as_(Role.VERIFIER).post("/api/v1/verify", json={**body, "site_id": cloud.site["id"]})
    assert r.status_code == 200 and r.json()["accepted"], r.text
    return dict(r.json())


def _undo(cloud: ChannelCloud, verification_id: int) -> None:
    r = cloud.api.as_(Role.VERIFIER).post(f"/api/v1/verify/{verification_id}/undo", json={"reason": "扫错了"})
    assert r.status_code == 200, r.text


def _states(cloud: ChannelCloud) -> list[tuple[str, str]]:
    with cloud.sessions() as s:
        return [(c.source.split(":")[0], c.state) for c in s.scalars(select(ChannelCall).order_by(ChannelCall.id))]


def _undo_audit(cloud: ChannelCloud) -> dict[str, Any]:
    with cloud.sessions() as s:
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "verify.undo"))
        assert entry is not None
        return dict(entry.detail)


def test_a_handheld_verification_of_an_ota_ticket_sends_the_platform_one_call(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    _, code = _ota_ticket_for_today(channel_cloud, platform, "LBX-H1")
    _verify(channel_cloud, code)

    assert channel_cloud.send_due_calls() == 1
    assert _states(channel_cloud) == [("handheld", "done")]
    [got] = platform.redemptions
    assert [r["code"] for r in got.json()["redemptions"]] == [code]


def test_an_undo_before_the_call_went_out_calls_it_off(channel_cloud: ChannelCloud, platform: Lebingxue) -> None:
    _, code = _ota_ticket_for_today(channel_cloud, platform, "LBX-H2")
    verification = _verify(channel_cloud, code)
    _undo(channel_cloud, verification["id"])

    assert channel_cloud.send_due_calls() == 0
    assert _states(channel_cloud) == [("handheld", "cancelled")]
    assert platform.redemptions == []
    assert _undo_audit(channel_cloud)["platform_call_cancelled"] is True

    _verify(channel_cloud, code)  # the entry came back: verified again, told once
    assert channel_cloud.send_due_calls() == 1
    assert [r.json()["used_total"] for r in platform.redemptions] == [1]


def test_an_undo_after_the_call_went_out_leaves_the_platform_told(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    _, code = _ota_ticket_for_today(channel_cloud, platform, "LBX-H3")
    verification = _verify(channel_cloud, code)
    assert channel_cloud.send_due_calls(utcnow() + timedelta(seconds=1)) == 1
    _undo(channel_cloud, verification["id"])

    assert _states(channel_cloud) == [("handheld", "done")]
    assert _undo_audit(channel_cloud)["platform_call_cancelled"] is False
