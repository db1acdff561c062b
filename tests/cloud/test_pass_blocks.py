"""A season pass blocked from the cloud (a lost card) and unblocked: stored with its history, audited, and on its
site's feed for every gate; refused at handhelds; carried by snapshots; still refundable."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from cloud.db import utcnow
from cloud.deps import Role
from cloud.sync.models import FeedChange
from cloud.tickets.models import Ticket
from harness.api import Api
from models import TicketStatus
from models.sync import SnapshotHeader, SnapshotStatus, StatusChange
from tests.cloud.api import make_product, next_weekday
from tests.cloud.paid_orders import add_holder, sell_paid


def today() -> Any:
    return datetime.now(ZoneInfo("Asia/Shanghai")).date()


@pytest.fixture
def season_pass(app: FastAPI, api: Api, site: dict[str, Any]) -> dict[str, Any]:
    """A season pass of this season, bought online by its holder."""
    day = today()
    season = make_product(
        api,
        site["id"],
        code="season",
        kind="season",
        season_start=(day - timedelta(days=30)).isoformat(),
        season_end=(day + timedelta(days=90)).isoformat(),
    )
    api.as_(Role.CUSTOMER)
    assert api.customer_id is not None
    holder = add_holder(app, api.customer_id, "李雪")
    order = sell_paid(app, api, site["id"], season["id"], day, role=Role.CUSTOMER, holder_id=holder)
    [ticket] = api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}/tickets").json()
    return dict(ticket)


def status_changes(app: FastAPI, site_id: int) -> list[StatusChange]:
    with app.state.sessionmaker() as session:
        bodies = session.scalars(
            select(FeedChange.body)
            .where(FeedChange.site_id == site_id, FeedChange.kind == "status")
            .order_by(FeedChange.seq)
        )
        return [StatusChange.model_validate(b) for b in bodies]


def block(api: Api, ticket_id: int, reason: str = "lost card, reported by phone", role: Role = Role.CASHIER) -> Any:
    return api.as_(role).post(f"/api/v1/tickets/{ticket_id}/block", json={"reason": reason})


def unblock(api: Api, ticket_id: int, reason: str = "card found", role: Role = Role.CASHIER) -> Any:
    return api.as_(role).post(f"/api/v1/tickets/{ticket_id}/unblock", json={"reason": reason})


def test_a_blocked_season_pass_goes_down_its_sites_feed_blocked_and_comes_back_valid_when_unblocked(
    app: FastAPI, api: Api, site: dict[str, Any], season_pass: dict[str, Any]
) -> None:
    tid = season_pass["id"]
    r = block(api, tid)
    assert r.status_code == 200, r.text
    assert (r.json()["reason"], r.json()["blocked_by"], r.json()["lifted_at"]) == (
        "lost card, reported by phone",
        "cashier:cashier-user",
        None,
    )
    assert api.as_(Role.ADMIN).get(f"/api/v1/tickets/{tid}").json()["status"] == "blocked"
    assert status_changes(app, site["id"]) == [
        StatusChange(ticket_id=str(tid), status=TicketStatus.BLOCKED, reason="lost card, reported by phone")
    ]

    r = unblock(api, tid, role=Role.ADMIN)
    assert r.status_code == 200, r.text
    assert (r.json()["lift_reason"], r.json()["lifted_by"]) == ("card found", "admin:admin-user")
    assert api.as_(Role.ADMIN).get(f"/api/v1/tickets/{tid}").json()["status"] == "valid"
    assert status_changes(app, site["id"])[-1] == StatusChange(
        ticket_id=str(tid), status=TicketStatus.VALID, reason="card found"
    )

    block(api, tid, reason="misuse: lent to a friend")
    history = api.as_(Role.CASHIER).get(f"/api/v1/tickets/{tid}/blocks").json()
    assert [(b["reason"], b["lift_reason"]) for b in history] == [
        ("misuse: lent to a friend", None),
        ("lost card, reported by phone", "card found"),
    ]
    audit = api.as_(Role.ADMIN).get("/api/v1/audit", params={"entity": "ticket"}).json()
    actions = [(a["action"], a["entity_id"], a["detail"]["reason"]) for a in audit if a["entity_id"] == str(tid)]
    assert actions == [
        ("ticket.block", str(tid), "misuse: lent to a friend"),
        ("ticket.unblock", str(tid), "card found"),
        ("ticket.block", str(tid), "lost card, reported by phone"),
    ]


@pytest.mark.parametrize(
    ("steps", "code"),
    [
        pytest.param(["block"], "already_blocked", id="blocked-twice"),
        pytest.param([], "not_blocked", id="unblock-a-valid-ticket"),
        pytest.param(["block", "unblock"], "not_blocked", id="unblocked-twice"),
    ],
)
def test_blocking_twice_or_unblocking_an_unblocked_ticket_is_refused_and_changes_nothing(
    app: FastAPI, api: Api, site: dict[str, Any], season_pass: dict[str, Any], steps: list[str], code: str
) -> None:
    tid = season_pass["id"]
    for step in steps:
        assert (block if step == "block" else unblock)(api, tid).status_code == 200
    before = status_changes(app, site["id"])
    again = block(api, tid) if code == "already_blocked" else unblock(api, tid)
    assert again.status_code == 409 and again.json()["error"]["code"] == code, again.text
    assert again.json()["error"]["message_zh"]
    assert status_changes(app, site["id"]) == before


def test_a_refunded_ticket_cannot_be_blocked_and_an_unknown_one_is_not_found(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    [ticket] = api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}/tickets").json()
    r = api.as_(Role.CASHIER).post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [ticket["id"]]})
    assert r.status_code == 201, r.text
    refused = block(api, ticket["id"])
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "ticket_revoked"
    assert block(api, 999_999).status_code == 404
    assert unblock(api, 999_999).status_code == 404


def test_a_blocked_ticket_is_still_refundable_and_then_can_no_longer_be_unblocked(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    [ticket] = api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}/tickets").json()
    assert block(api, ticket["id"]).status_code == 200
    r = api.as_(Role.CASHIER).post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [ticket["id"]]})
    assert r.status_code == 201, r.text
    assert [c.status for c in status_changes(app, site["id"])] == [TicketStatus.BLOCKED, TicketStatus.REVOKED]
    refused = unblock(api, ticket["id"])
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "ticket_revoked"
    [kept] = api.as_(Role.ADMIN).get(f"/api/v1/tickets/{ticket['id']}/blocks").json()
    assert kept["lifted_at"] is None, "the block stays in the history as it was"


def test_the_points_of_a_blocked_ticket_stay_held_until_it_can_no_longer_be_refunded(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    """A lost card is blocked, not ended: it can still be refunded, so the points it earned cannot be spent and
    then taken back by the refund."""
    me = api.as_(Role.CUSTOMER)
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), role=Role.CUSTOMER)
    [ticket] = api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}/tickets").json()
    assert block(api, ticket["id"]).status_code == 200
    mine = me.get("/api/v1/points").json()
    assert (mine["balance"], mine["spendable"]) == (280, 0)
    spend = me.post("/api/v1/points/spend", json={"points": 280, "ref": "coupon:blocked"})
    assert spend.status_code == 409 and spend.json()["error"]["code"] == "insufficient_points"
    r = me.post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [ticket["id"]]})
    assert r.status_code == 201, r.text
    final = me.get("/api/v1/points").json()
    assert (final["balance"], final["spendable"]) == (0, 0)
    assert all(e["shortfall"] == 0 for e in final["entries"])


def test_an_unblocked_ticket_whose_entries_are_used_up_is_used_again_not_valid(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    single = make_product(api, site["id"], code="single", entries=1)
    order = sell_paid(app, api, site["id"], single["id"], next_weekday())
    [ticket] = api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}/tickets").json()
    assert block(api, ticket["id"]).status_code == 200
    with app.state.sessionmaker() as session:  # an offline gate's passage from before the block comes up
        session.execute(update(Ticket).where(Ticket.id == ticket["id"]).values(entries_used=1))
        session.commit()
    assert unblock(api, ticket["id"]).status_code == 200
    assert api.as_(Role.ADMIN).get(f"/api/v1/tickets/{ticket['id']}").json()["status"] == "used"
    assert status_changes(app, site["id"])[-1].status is TicketStatus.VALID, "gates decide from the counts"


def test_a_handheld_refuses_a_blocked_ticket_and_counts_nothing(
    app: FastAPI, api: Api, site: dict[str, Any], season_pass: dict[str, Any]
) -> None:
    assert block(api, season_pass["id"]).status_code == 200
    body = {
        "code": season_pass["token"],
        "event_id": str(uuid.uuid4()),
        "at": utcnow().isoformat(),
        "device": "hh-01",
        "site_id": site["id"],
    }
    r = api.as_(Role.VERIFIER).post("/api/v1/verify", json=body)
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["reason"]) == (False, "blocked")
    assert api.as_(Role.ADMIN).get(f"/api/v1/tickets/{season_pass['id']}").json()["entries_used"] == 0


def test_a_snapshot_carries_the_block_and_its_checksum_counts_it(
    app: FastAPI, api: Api, site: dict[str, Any], season_pass: dict[str, Any]
) -> None:
    r = api.as_(Role.ADMIN).post(f"/api/v1/sites/{site['id']}/gates", json={"code": "g1", "name": "G1"})
    gate = r.json()
    assert block(api, season_pass["id"]).status_code == 200

    snap = api.client.get(f"/api/v1/sync/sites/{site['code']}/snapshot", auth=(gate["username"], gate["secret"]))
    assert snap.status_code == 200, snap.text
    lines = snap.text.splitlines()
    header = SnapshotHeader.model_validate_json(lines[0])
    assert json.loads(lines[1])["status"] == "blocked"
    assert SnapshotStatus.model_validate_json(lines[2]) == SnapshotStatus(
        ticket_id=str(season_pass["id"]), status=TicketStatus.BLOCKED
    )
    assert header.tickets == 1 and header.gate_config is None


def test_only_admins_and_cashiers_block_and_unblock(api: Api, season_pass: dict[str, Any]) -> None:
    for role in (Role.FINANCE, Role.GATE_TECH, Role.VERIFIER, Role.CUSTOMER):
        assert block(api, season_pass["id"], role=role).status_code == 403, role
    assert api.as_(None).post(f"/api/v1/tickets/{season_pass['id']}/block", json={"reason": "x"}).status_code == 401
