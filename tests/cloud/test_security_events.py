"""Forged passage events from one gate's login: what the cloud believes and what it quarantines.

A gate's broker login may publish only on its own events topic, so the topic is what the cloud
trusts. These events go through `inbound.parse` and `service.store` as the MQTT consumer's do,
with the cloud's clock passed in.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cloud.db import utcnow
from cloud.deps import Role
from cloud.sites.models import Gate
from cloud.sync import inbound, service
from cloud.sync.models import GatePassage, QuarantinedEvent
from cloud.tickets.models import Ticket
from harness.api import Api
from harness.tickets import counted_passage
from models import PassageEvent
from sync import topics
from tests.cloud.api import make_product, next_weekday
from tests.cloud.paid_orders import sell_paid

pytestmark = pytest.mark.security

SITE, OTHER = "nanshan", "beishan"


def add_gate(api: Api, site_id: int, code: str) -> None:
    r = api.as_(Role.ADMIN).post(f"/api/v1/sites/{site_id}/gates", json={"code": code, "name": code.upper()})
    assert r.status_code == 201, r.text


def single_entry_ticket(app: FastAPI, api: Api, site_id: int) -> tuple[int, int]:
    """(order id, ticket id) of a paid single-entry ticket for a day ahead (still refundable)."""
    product = make_product(api, site_id, code="single", name="单次票", entries=1)
    order = sell_paid(app, api, site_id, product["id"], next_weekday())
    (ticket,) = api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}/tickets").json()
    return order["id"], ticket["id"]


def passage(ticket_id: int | str, at: datetime, *, gate: str = "g1", site: str = SITE) -> PassageEvent:
    return counted_passage(str(ticket_id), at, gate=gate, site=site)


def send(app: FastAPI, event: PassageEvent, now: datetime, *, topic_gate: str = "g1") -> service.Stored:
    """What the MQTT consumer does with `event` published on `topic_gate`'s events topic."""
    parsed = inbound.parse(topics.events(SITE, topic_gate), event.model_dump_json().encode())
    with app.state.sessionmaker() as session:
        return service.store(session, parsed, now=now)


def quarantined(app: FastAPI) -> dict[uuid.UUID, str]:
    with app.state.sessionmaker() as session:
        return {q.event_id: q.reason for q in session.scalars(select(QuarantinedEvent))}


def stored(app: FastAPI) -> list[uuid.UUID]:
    with app.state.sessionmaker() as session:
        return list(session.scalars(select(GatePassage.event_id)))


def entries_used(app: FastAPI, ticket_id: int) -> int:
    with app.state.sessionmaker() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket.entries_used


@pytest.fixture
def other_site(api: Api) -> dict[str, Any]:
    r = api.as_(Role.ADMIN).post("/api/v1/sites", json={"code": OTHER, "name": "北山滑雪场"})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_another_sites_ticket_sent_by_a_gate_is_quarantined_uncounted_and_its_refund_still_works(
    app: FastAPI, api: Api, site: dict[str, Any], other_site: dict[str, Any]
) -> None:
    add_gate(api, site["id"], "g1")
    order_id, ticket = single_entry_ticket(app, api, other_site["id"])
    now = utcnow()
    forged = passage(ticket, now)  # nanshan's gate g1 claims beishan's ticket passed here

    out = send(app, forged, now)

    assert (out.new, out.quarantined, dict(out.acks)) == (0, 1, {(SITE, "g1"): [forged.event_id]})
    assert quarantined(app) == {forged.event_id: "unknown_ticket"}
    assert stored(app) == []
    assert entries_used(app, ticket) == 0
    r = api.as_(Role.CASHIER).post(f"/api/v1/orders/{order_id}/refunds", json={"ticket_ids": [ticket]})
    assert r.status_code == 201, r.text


def test_an_event_claiming_another_site_on_a_gates_own_topic_is_quarantined(
    app: FastAPI, api: Api, site: dict[str, Any], other_site: dict[str, Any]
) -> None:
    add_gate(api, site["id"], "g1")
    add_gate(api, other_site["id"], "g1")
    _, ticket = single_entry_ticket(app, api, other_site["id"])
    now = utcnow()
    forged = passage(ticket, now, site=OTHER)

    out = send(app, forged, now)

    assert (out.new, out.quarantined) == (0, 1)
    assert quarantined(app) == {forged.event_id: "wrong_site"}
    assert entries_used(app, ticket) == 0


@pytest.mark.parametrize(
    ("named_gate", "topic_gate", "reason"),
    [
        pytest.param("ghost", "g1", "gate_mismatch", id="made-up-gate-on-g1s-topic"),
        pytest.param("g2", "g1", "gate_mismatch", id="another-real-gate-on-g1s-topic"),
        pytest.param("ghost", "ghost", "unknown_gate", id="made-up-gate-on-its-own-topic"),
    ],
)
def test_an_event_naming_a_gate_that_did_not_send_it_or_does_not_exist_is_quarantined(
    app: FastAPI, api: Api, site: dict[str, Any], named_gate: str, topic_gate: str, reason: str
) -> None:
    for code in ("g1", "g2"):
        add_gate(api, site["id"], code)
    _, ticket = single_entry_ticket(app, api, site["id"])
    now = utcnow()
    forged = passage(ticket, now, gate=named_gate)

    out = send(app, forged, now, topic_gate=topic_gate)

    assert (out.new, out.quarantined, dict(out.acks)) == (0, 1, {(SITE, topic_gate): [forged.event_id]})
    assert quarantined(app) == {forged.event_id: reason}
    assert entries_used(app, ticket) == 0


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        pytest.param(lambda now, issued: datetime(2099, 1, 1, tzinfo=now.tzinfo), "future", id="dated-2099"),
        pytest.param(lambda now, issued: now + timedelta(minutes=6), "future", id="six-minutes-ahead"),
        pytest.param(lambda now, issued: now - timedelta(days=31), "too_old", id="a-month-old"),
        pytest.param(lambda now, issued: issued - timedelta(hours=1), "before_sale", id="before-the-sale"),
    ],
)
def test_an_event_dated_where_it_cannot_be_is_quarantined_and_counts_nothing(
    app: FastAPI, api: Api, site: dict[str, Any], when: Any, reason: str
) -> None:
    add_gate(api, site["id"], "g1")
    _, ticket = single_entry_ticket(app, api, site["id"])
    now = utcnow() + timedelta(minutes=1)
    with app.state.sessionmaker() as session:
        t = session.get(Ticket, ticket)
        assert t is not None
        issued = t.issued_at
    forged = passage(ticket, when(now, issued))

    out = send(app, forged, now)

    assert (out.new, out.quarantined) == (0, 1)
    assert quarantined(app) == {forged.event_id: reason}
    assert entries_used(app, ticket) == 0


def test_a_genuine_event_is_stored_and_counted_and_a_clock_a_little_fast_is_tolerated(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    add_gate(api, site["id"], "g1")
    order_id, ticket = single_entry_ticket(app, api, site["id"])
    now = utcnow()
    genuine = passage(ticket, now + timedelta(minutes=4))  # the gate's clock runs 4 minutes fast

    out = send(app, genuine, now)

    assert (out.new, out.quarantined, out.conflicts) == (1, 0, 0)
    assert stored(app) == [genuine.event_id]
    assert quarantined(app) == {}
    assert entries_used(app, ticket) == 1
    r = api.as_(Role.CASHIER).post(f"/api/v1/orders/{order_id}/refunds", json={"ticket_ids": [ticket]})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "ticket_used")


def test_a_quarantined_event_sent_again_is_a_no_op_acknowledged_and_listed_once_for_admins(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    add_gate(api, site["id"], "g1")
    _, ticket = single_entry_ticket(app, api, site["id"])
    now = utcnow()
    forged = passage(ticket, datetime(2099, 1, 1, tzinfo=now.tzinfo))

    first = send(app, forged, now)
    again = send(app, forged, now + timedelta(seconds=30))

    assert (first.quarantined, again.quarantined, again.duplicates) == (1, 0, 1)
    assert dict(again.acks) == {(SITE, "g1"): [forged.event_id]}  # the gate stops resending
    r = api.as_(Role.ADMIN).get(f"/api/v1/sync/sites/{site['id']}/quarantine")
    assert r.status_code == 200, r.text
    [listed] = r.json()
    assert (listed["event_id"], listed["reason"], listed["gate_code"], listed["topic"]) == (
        str(forged.event_id),
        "future",
        "g1",
        topics.events(SITE, "g1"),
    )
    assert PassageEvent.model_validate_json(listed["event"]) == forged
    assert api.as_(Role.GATE_TECH).get(f"/api/v1/sync/sites/{site['id']}/quarantine").status_code == 403


def test_a_forged_copy_of_a_genuine_event_does_not_keep_the_genuine_one_out(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    for code in ("g1", "g2"):
        add_gate(api, site["id"], code)
    _, ticket = single_entry_ticket(app, api, site["id"])
    now = utcnow()
    genuine = passage(ticket, now, gate="g2")

    send(app, genuine, now, topic_gate="g1")  # g1 heard g2's event on the site broker and sent it as its own
    out = send(app, genuine, now, topic_gate="g2")

    assert (out.new, out.quarantined) == (1, 0)
    assert stored(app) == [genuine.event_id]
    assert quarantined(app) == {genuine.event_id: "gate_mismatch"}
    assert entries_used(app, ticket) == 1


def test_the_quarantine_of_a_site_that_does_not_exist_is_not_found(app: FastAPI, api: Api) -> None:
    r = api.as_(Role.ADMIN).get("/api/v1/sync/sites/999/quarantine")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "site_not_found")


# --- an event id copied by another gate (a stolen gate reads its peers' events) ----------------------


def stolen_copy(genuine: PassageEvent, *, gate: str = "g3") -> PassageEvent:
    """What a stolen gate republishes on its own topic to hide `genuine`: the same id, under its own
    name, passed by nobody, and dated a second earlier so that it sorts first."""
    return genuine.model_copy(
        update={"gate_id": gate, "passed": False, "counted": False, "at": genuine.at - timedelta(seconds=1)}
    )


def send_batch(app: FastAPI, sent: list[tuple[str, PassageEvent]], now: datetime) -> service.Stored:
    """What the MQTT consumer does with one batch of messages, each (topic's gate, event)."""
    parsed = [m for gate, e in sent for m in inbound.parse(topics.events(SITE, gate), e.model_dump_json().encode())]
    with app.state.sessionmaker() as session:
        return service.store(session, parsed, now=now)


def passages_by_gate(app: FastAPI) -> dict[tuple[str, uuid.UUID], bool]:
    """(sending gate code, event id) -> does the stored passage count an entry."""
    with app.state.sessionmaker() as session:
        rows = session.execute(
            select(Gate.code, GatePassage.event_id, GatePassage.counted).join(Gate, Gate.id == GatePassage.gate_id)
        )
        return {(code, event_id): counted for code, event_id, counted in rows}


def quarantined_by_gate(app: FastAPI) -> dict[tuple[str, uuid.UUID], str]:
    with app.state.sessionmaker() as session:
        return {(q.gate_code, q.event_id): q.reason for q in session.scalars(select(QuarantinedEvent))}


def refund(api: Api, order_id: int, ticket: int) -> tuple[int, str]:
    r = api.as_(Role.CASHIER).post(f"/api/v1/orders/{order_id}/refunds", json={"ticket_ids": [ticket]})
    return r.status_code, r.json()["error"]["code"] if r.status_code >= 400 else ""


@pytest.mark.parametrize("copy_first", [True, False], ids=["copy-arrives-first", "genuine-arrives-first"])
def test_a_stolen_gates_copy_of_a_counted_passage_in_the_same_batch_does_not_hide_it_and_is_quarantined(
    app: FastAPI, api: Api, site: dict[str, Any], copy_first: bool
) -> None:
    for code in ("g1", "g2", "g3"):
        add_gate(api, site["id"], code)
    order_id, ticket = single_entry_ticket(app, api, site["id"])
    now = utcnow()
    genuine = passage(ticket, now, gate="g2")
    copy = stolen_copy(genuine)
    sent = [("g3", copy), ("g2", genuine)] if copy_first else [("g2", genuine), ("g3", copy)]

    out = send_batch(app, sent, now)

    assert (out.new, out.quarantined, out.duplicates) == (1, 1, 0)
    assert dict(out.acks) == {(SITE, "g2"): [genuine.event_id], (SITE, "g3"): [genuine.event_id]}
    assert passages_by_gate(app) == {("g2", genuine.event_id): True}
    assert quarantined_by_gate(app) == {("g3", genuine.event_id): "id_reused"}
    assert entries_used(app, ticket) == 1
    assert refund(api, order_id, ticket) == (409, "ticket_used")


def test_a_stolen_gates_copy_stored_before_the_genuine_passage_arrives_is_moved_to_the_quarantine(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    for code in ("g1", "g2", "g3"):
        add_gate(api, site["id"], code)
    order_id, ticket = single_entry_ticket(app, api, site["id"])
    now = utcnow()
    genuine = passage(ticket, now, gate="g2")
    copy = stolen_copy(genuine)

    first = send_batch(app, [("g3", copy)], now)  # g2's own publication is late: the copy is all there is
    assert (first.new, passages_by_gate(app)) == (1, {("g3", genuine.event_id): False})

    out = send_batch(app, [("g2", genuine)], now + timedelta(seconds=5))

    assert (out.new, out.quarantined, out.duplicates) == (1, 1, 0)
    assert dict(out.acks) == {(SITE, "g2"): [genuine.event_id]}
    assert passages_by_gate(app) == {("g2", genuine.event_id): True}
    assert quarantined_by_gate(app) == {("g3", genuine.event_id): "id_reused"}
    assert entries_used(app, ticket) == 1
    assert refund(api, order_id, ticket) == (409, "ticket_used")

    # Each gate sends its event again (its ack was lost): a no-op, acknowledged to each gate again.
    again = send_batch(app, [("g2", genuine), ("g3", copy)], now + timedelta(seconds=10))
    assert (again.new, again.quarantined, again.duplicates) == (0, 0, 2)
    assert dict(again.acks) == {(SITE, "g2"): [genuine.event_id], (SITE, "g3"): [genuine.event_id]}
    assert entries_used(app, ticket) == 1


def test_the_back_office_lists_a_copy_quarantined_for_its_reused_id(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    for code in ("g2", "g3"):
        add_gate(api, site["id"], code)
    _, ticket = single_entry_ticket(app, api, site["id"])
    now = utcnow()
    genuine = passage(ticket, now, gate="g2")
    send_batch(app, [("g3", stolen_copy(genuine))], now)
    send_batch(app, [("g2", genuine)], now + timedelta(seconds=5))

    r = api.as_(Role.ADMIN).get(f"/api/v1/sync/sites/{site['id']}/quarantine")

    assert r.status_code == 200, r.text
    assert [(q["event_id"], q["gate_code"], q["reason"]) for q in r.json()] == [
        (str(genuine.event_id), "g3", "id_reused")
    ]


def test_a_counted_copy_under_another_gate_counts_the_ticket_once_not_twice(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    for code in ("g1", "g2", "g3"):
        add_gate(api, site["id"], code)
    _, ticket = single_entry_ticket(app, api, site["id"])
    now = utcnow()
    genuine = passage(ticket, now, gate="g2")
    copy = genuine.model_copy(update={"gate_id": "g3"})  # counted too: it hides nothing

    send_batch(app, [("g2", genuine)], now)
    out = send_batch(app, [("g3", copy)], now + timedelta(seconds=5))

    assert (out.new, out.quarantined, out.conflicts) == (0, 1, 0)
    assert dict(out.acks) == {(SITE, "g3"): [genuine.event_id]}
    assert passages_by_gate(app) == {("g2", genuine.event_id): True}
    assert quarantined_by_gate(app) == {("g3", genuine.event_id): "id_reused"}
    assert entries_used(app, ticket) == 1
