"""A handheld's verification reaches the gates: each accepted one, and each undo, goes down the site's feed as a
`usage` change in the same transaction; a refusal or a replay adds nothing; a snapshot counts it in the ticket
line. SQLite only: the locking is `tests/cloud/test_verify.py`'s (on both databases)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cloud.db import utcnow
from cloud.deps import Role
from cloud.sync.models import FeedChange, GatePassage
from harness.api import Api
from models import Ticket as WireTicket
from models.sync import SnapshotHeader, Usage
from tests.cloud.api import fresh_sqlite, make_product
from tests.cloud.test_verify import URL, gate_passage, ticket_of

SITE = "nanshan"


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    return fresh_sqlite(sqlite_template, tmp_path)


@pytest.fixture
def single(api: Api, site: dict[str, Any]) -> dict[str, Any]:
    return make_product(api, site["id"], code="single", kind="punch", entries=1)


def verify(api: Api, site_id: int, code: str, event_id: uuid.UUID | None = None) -> dict[str, Any]:
    body = {
        "code": code,
        "event_id": str(event_id or uuid.uuid4()),
        "at": utcnow().isoformat(),
        "device": "hh-07",
        "site_id": site_id,
    }
    r = api.as_(Role.VERIFIER).post(URL, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def usages(app: FastAPI) -> list[tuple[int, Usage]]:
    """The site feed's usage changes, (seq, change), in feed order."""
    with app.state.sessionmaker() as session:
        rows = session.execute(select(FeedChange.seq, FeedChange.body).where(FeedChange.kind == "usage"))
        return sorted((seq, Usage.model_validate(body)) for seq, body in rows)


def test_an_accepted_verification_goes_down_the_feed_once_with_the_tickets_count(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"])
    event_id = uuid.uuid4()

    done = verify(api, site["id"], ticket["token"], event_id)
    replayed = verify(api, site["id"], ticket["token"], event_id)  # the handheld's offline queue, again
    refused = verify(api, site["id"], ticket["token"])  # used up: nothing to tell the gates

    assert (done["accepted"], replayed["id"], refused["reason"]) == (True, done["id"], "used_up")
    [(_, usage)] = usages(app)
    assert (usage.ticket_id, usage.event_id, usage.site, usage.device) == (str(ticket["id"]), event_id, SITE, "hh-07")
    assert (usage.undone, usage.entries_used, usage.at) == (False, 1, usage.first_entry_at)
    assert usage.at.isoformat() == done["at"].replace("Z", "+00:00")
    assert len(usage.model_dump_json()) < 300, "one small message per verification"


def test_an_undo_goes_down_the_feed_after_the_verification_and_gives_the_entry_back(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"])
    done = verify(api, site["id"], ticket["token"])

    client = api.as_(Role.VERIFIER)
    for _ in range(2):  # undoing again answers the same and tells the gates nothing new
        r = client.post(f"{URL}/{done['id']}/undo", json={"reason": "scanned the wrong guest"})
        assert r.status_code == 200, r.text

    [(first_seq, first), (undo_seq, undo)] = usages(app)
    assert undo_seq > first_seq
    assert (undo.event_id, undo.at, undo.device) == (first.event_id, first.at, first.device)
    assert (undo.undone, undo.entries_used, undo.first_entry_at) == (True, 0, None)


def test_a_refused_code_tells_the_gates_nothing(app: FastAPI, api: Api, site: dict[str, Any]) -> None:
    r = verify(api, site["id"], "NOT-A-CODE-OF-OURS")
    assert r["accepted"] is False
    assert usages(app) == []


def test_a_gate_that_resyncs_after_a_verification_finds_it_counted_in_the_ticket_line(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    gate = api.as_(Role.ADMIN).post(f"/api/v1/sites/{site['id']}/gates", json={"code": "g1", "name": "G1"}).json()
    ticket = ticket_of(app, api, site["id"], single["id"])
    done = verify(api, site["id"], ticket["token"])

    snap = api.client.get(f"/api/v1/sync/sites/{SITE}/snapshot", auth=(gate["username"], gate["secret"]))
    assert snap.status_code == 200, snap.text
    head, *lines = snap.content.splitlines()
    header = SnapshotHeader.model_validate_json(head)
    tickets = {t.ticket_id: t for t in map(WireTicket.model_validate_json, lines[: header.tickets])}
    line = tickets[str(ticket["id"])]
    assert (line.entries_used, line.first_entry_at) == (1, usages(app)[0][1].first_entry_at)
    assert header.seq >= usages(app)[0][0], "the snapshot resumes the feed after the usage change"
    assert done["accepted"]


def test_a_verification_reusing_a_gate_passages_event_id_is_refused_and_nothing_goes_down(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    first = ticket_of(app, api, site["id"], single["id"])
    second = ticket_of(app, api, site["id"], single["id"])
    gate_passage(app, api, site["id"], first["id"])
    with app.state.sessionmaker() as session:
        taken = session.scalar(select(GatePassage.event_id))
    body = {"code": second["token"], "event_id": str(taken), "at": utcnow().isoformat(), "device": "hh-01"}
    r = api.as_(Role.VERIFIER).post(URL, json={**body, "site_id": site["id"]})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "event_id_taken")
    assert usages(app) == []
