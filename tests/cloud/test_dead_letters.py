"""Dead letters: what a gate sends that the cloud refuses unread is kept, raw, and named in its ack.

Messages go through `inbound.parse` and `service.store` as the MQTT consumer's do, with the cloud's
clock passed in.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from cloud.db import utcnow
from cloud.deps import Role
from cloud.sync import dead_letters, inbound, service
from cloud.sync.dead_letters import DEAD_LETTERS_PER_GATE, RAW_MAX, Refused
from cloud.sync.models import DeadLetter, GatePassage
from harness.api import Api
from harness.processes import wait_until
from models import Direction, Outcome, PassageEvent
from models.sync import GateStatus, RefusedEvent, event_batch_json
from sync import topics

SITE = "nanshan"


def denial(**changes: Any) -> PassageEvent:
    """A gate's event for a denied scan: counts on no ticket, so no sale is needed."""
    event = PassageEvent(
        gate_id="g1",
        site_id=SITE,
        at=utcnow(),
        direction=Direction.IN,
        outcome=Outcome.DENY,
        code="expired",
        ticket_id="1001",
        passed=False,
        counted=False,
        credential="signed",
    )
    return event.model_copy(update=changes)


@pytest.fixture
def gate(api: Api, site: dict[str, Any]) -> str:
    r = api.as_(Role.ADMIN).post(f"/api/v1/sites/{site['id']}/gates", json={"code": "g1", "name": "G1"})
    assert r.status_code == 201, r.text
    return "g1"


def send(app: FastAPI, topic: str, payload: str | bytes, *, seconds: float = 0) -> service.Stored:
    """What the MQTT consumer does with one message: parse it, then store its items and dead letters."""
    refused: list[Refused] = []
    raw = payload.encode() if isinstance(payload, str) else payload
    parsed = inbound.parse(topic, raw, refused)
    with app.state.sessionmaker() as session:
        return service.store(session, [*parsed, *refused], now=utcnow() + timedelta(seconds=seconds))


def letters(app: FastAPI) -> list[DeadLetter]:
    with app.state.sessionmaker() as session:
        return list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))


def stored(app: FastAPI) -> set[uuid.UUID]:
    with app.state.sessionmaker() as session:
        return set(session.scalars(select(GatePassage.event_id)))


def test_a_malformed_event_in_a_batch_is_a_dead_letter_the_good_ones_are_stored_and_the_ack_names_both(
    app: FastAPI, gate: str
) -> None:
    good, bad = [denial(), denial()], denial()
    bodies = [good[0].model_dump_json(), bad.model_dump_json().replace('"in"', '"up"'), good[1].model_dump_json()]

    out = send(app, topics.events(SITE, gate), event_batch_json(bodies))

    assert (out.new, out.dead_letters) == (2, 1)
    assert dict(out.acks) == {(SITE, gate): [good[0].event_id, good[1].event_id]}
    assert dict(out.refused) == {(SITE, gate): [RefusedEvent(event_id=bad.event_id, reason="malformed")]}
    assert stored(app) == {e.event_id for e in good}
    [letter] = letters(app)
    assert (letter.event_id, letter.reason, letter.gate_code, letter.times) == (bad.event_id, "malformed", gate, 1)
    assert letter.detail.startswith("event 2 of 3: direction")
    assert '"up"' in letter.raw


def test_the_same_refused_event_sent_again_is_one_row_counted_and_refused_again(app: FastAPI, gate: str) -> None:
    bad = denial(code="x" * 40)  # over the code's bound

    first = send(app, topics.events(SITE, gate), bad.model_dump_json())
    again = send(app, topics.events(SITE, gate), bad.model_dump_json(), seconds=30)

    [letter] = letters(app)
    assert (letter.event_id, letter.reason, letter.times) == (bad.event_id, "too_long", 2)
    assert letter.last_received_at > letter.received_at
    named = {(SITE, gate): [RefusedEvent(event_id=bad.event_id, reason="too_long")]}
    assert dict(first.refused) == dict(again.refused) == named
    assert dict(again.acks) == {}


@pytest.mark.parametrize(
    ("leaf", "payload", "reason"),
    [
        pytest.param("events", b"\xff\x00not json", "malformed", id="not-json-with-a-nul"),
        pytest.param("events", b'{"schema_version": 1, "events": []}', "malformed", id="empty-batch"),
        pytest.param(
            "status",
            GateStatus(site=SITE, gate="g2", state="online").model_dump_json(),
            "wrong_gate",
            id="another-gates-status",
        ),
        pytest.param(
            "status",
            GateStatus(site=SITE, gate="g1", state="online", outbox_depth=2**40).model_dump_json(),
            "out_of_range",
            id="status-huge-outbox",
        ),
        pytest.param("acks", b'{"event_ids": []}', "wrong_topic", id="on-the-ack-topic"),
    ],
)
def test_a_refused_message_without_an_event_id_is_kept_raw_and_names_nothing(
    app: FastAPI, gate: str, leaf: str, payload: str | bytes, reason: str
) -> None:
    out = send(app, f"{topics.ROOT}/{SITE}/gate/{gate}/{leaf}", payload)

    [letter] = letters(app)
    assert (letter.reason, letter.event_id, letter.gate_code) == (reason, None, gate)
    assert "\x00" not in letter.raw
    assert dict(out.refused) == {}


def test_a_long_message_is_kept_cut_and_a_gate_not_registered_still_gets_its_dead_letter(
    app: FastAPI, site: dict[str, Any]
) -> None:
    bad = denial(gate_id="ghost", code="x" * 10_000)

    out = send(app, topics.events(SITE, "ghost"), bad.model_dump_json())

    [letter] = letters(app)
    assert (letter.site_id, letter.gate_code, letter.event_id, len(letter.raw)) == (
        site["id"],
        "ghost",
        bad.event_id,
        RAW_MAX,
    )
    assert dict(out.refused) == {(SITE, "ghost"): [RefusedEvent(event_id=bad.event_id, reason="too_long")]}


def test_the_back_office_lists_dead_letters_apart_from_the_quarantine(
    app: FastAPI, api: Api, site: dict[str, Any], gate: str
) -> None:
    bad = denial()
    send(app, topics.events(SITE, gate), bad.model_dump_json().replace('"in"', '"up"'))

    r = api.as_(Role.ADMIN).get(f"/api/v1/sync/sites/{site['id']}/dead-letters")
    assert r.status_code == 200, r.text
    [listed] = r.json()
    assert (listed["event_id"], listed["reason"], listed["gate_code"], listed["times"]) == (
        str(bad.event_id),
        "malformed",
        gate,
        1,
    )
    assert api.as_(Role.ADMIN).get(f"/api/v1/sync/sites/{site['id']}/quarantine").json() == []
    assert api.as_(Role.GATE_TECH).get(f"/api/v1/sync/sites/{site['id']}/dead-letters").status_code == 403
    r = api.as_(Role.ADMIN).get("/api/v1/sync/sites/999/dead-letters")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "site_not_found")


def test_a_nul_the_validation_error_repeats_is_escaped_in_the_detail_too(app: FastAPI, gate: str) -> None:
    good = denial()
    batch = '{"schema_version": 1, "events": [' + good.model_dump_json() + ', {"event_id": "\\u0000"}]}'

    out = send(app, topics.events(SITE, gate), batch)

    assert (out.new, out.dead_letters) == (1, 1)
    [letter] = letters(app)
    assert letter.reason == "malformed"
    assert "\x00" not in letter.detail + letter.raw
    assert "found `\\x00`" in letter.detail


def wait_for_a_lock_or(app: FastAPI, done: Callable[[], bool]) -> None:
    """PostgreSQL: until a session waits for a lock (or `done`). SQLite queues writers on its one write
    lock, which nothing here can watch: there the race cannot happen and this returns at once."""
    if app.state.engine.dialect.name != "postgresql":
        return
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )

    def waiting_or_done() -> bool:
        with app.state.engine.connect() as c:
            return bool(c.scalar(waiting)) or done()

    wait_until(waiting_or_done, "the second consumer waited for the first or finished", 60.0, interval=0.05)


def test_two_consumers_storing_one_dead_letter_at_once_make_one_row_counted_twice(app: FastAPI, gate: str) -> None:
    """A redelivery, or `cloud serve --workers 2`: the second inserts while the first has not committed."""
    bad = denial(code="x" * 40)
    topic, payload = topics.events(SITE, gate), bad.model_dump_json()
    first_letters: list[Refused] = []
    inbound.parse(topic, payload.encode(), first_letters)
    with app.state.sessionmaker() as first, ThreadPoolExecutor(1) as pool:
        dead_letters.store(first, first_letters, utcnow())
        first.flush()
        second = pool.submit(send, app, topic, payload)
        wait_for_a_lock_or(app, second.done)
        first.commit()
        out = second.result()

    [letter] = letters(app)
    assert (letter.event_id, letter.times) == (bad.event_id, 2)
    assert dict(out.refused) == {(SITE, gate): [RefusedEvent(event_id=bad.event_id, reason="too_long")]}


@pytest.mark.parametrize(
    ("leaf", "payload"),
    [
        pytest.param("events", b"[" * 100_000, id="nested-list"),
        pytest.param("events", b'{"schema_version": 1, "events": ' + b"[" * 100_000, id="nested-batch"),
        pytest.param("status", b'{"site": ' + b'{"a": ' * 50_000, id="nested-status"),
    ],
)
def test_a_message_nested_too_deep_for_a_json_parser_is_one_dead_letter(
    app: FastAPI, gate: str, leaf: str, payload: bytes
) -> None:
    out = send(app, f"{topics.ROOT}/{SITE}/gate/{gate}/{leaf}", payload)

    assert out.dead_letters == 1
    [letter] = letters(app)
    assert (letter.reason, letter.event_id, letter.times) == ("malformed", None, 1)
    assert "too deeply nested" in letter.detail
    assert len(letter.raw) == RAW_MAX


def junk_batch(numbers: range) -> str:
    """A batch of distinct malformed events (no event id): each one a dead letter of its own."""
    return json.dumps({"schema_version": 1, "events": [{"junk": n} for n in numbers]})


def test_a_gate_keeps_at_most_its_bound_of_distinct_dead_letters_and_counts_the_rest_on_one_overflow_row(
    app: FastAPI, gate: str
) -> None:
    assert DEAD_LETTERS_PER_GATE == 1000
    send(app, topics.events(SITE, gate), junk_batch(range(0, 500)))
    send(app, topics.events(SITE, gate), junk_batch(range(500, 1000)))
    send(app, topics.events(SITE, gate), junk_batch(range(995, 1010)))  # 5 kept again, 10 new
    send(app, topics.events(SITE, gate), junk_batch(range(1010, 1015)), seconds=30)
    send(app, topics.events(SITE, "g2"), junk_batch(range(0, 1)))  # another gate has its own bound

    mine = [letter for letter in letters(app) if letter.gate_code == gate]
    assert len(mine) == DEAD_LETTERS_PER_GATE + 1
    [overflow] = [letter for letter in mine if letter.reason == "overflow"]
    assert (overflow.times, overflow.event_id) == (15, None)
    assert overflow.detail.startswith("15 dead letters not kept")
    assert overflow.last_received_at > overflow.received_at
    assert sorted(letter.times for letter in mine if letter.reason != "overflow")[-6:] == [1, 2, 2, 2, 2, 2]
    assert [letter.gate_code for letter in letters(app)].count("g2") == 1


def test_the_back_office_pages_through_dead_letters_newest_first(
    app: FastAPI, api: Api, site: dict[str, Any], gate: str
) -> None:
    for n in range(5):
        send(app, topics.events(SITE, gate), junk_batch(range(n, n + 1)), seconds=n)
    url = f"/api/v1/sync/sites/{site['id']}/dead-letters"

    pages = [api.as_(Role.ADMIN).get(url, params={"limit": 2, "offset": offset}) for offset in (0, 2, 4, 6)]

    assert [r.status_code for r in pages] == [200] * 4
    assert [[json.loads(d["raw"])["junk"] for d in r.json()] for r in pages] == [[4, 3], [2, 1], [0], []]
    assert api.as_(Role.ADMIN).get(url, params={"offset": -1}).status_code == 422
    assert api.as_(Role.ADMIN).get(url, params={"limit": 1001}).status_code == 422


def test_a_long_chinese_message_is_cut_at_a_character_and_a_batch_item_is_kept_as_written(
    app: FastAPI, gate: str
) -> None:
    long = denial(code="南山" * 3000)
    send(app, topics.events(SITE, gate), long.model_dump_json())
    send(app, topics.events(SITE, gate), '{"schema_version": 1, "events": [{"code": "东门"}]}')

    cut, item = letters(app)
    assert cut.raw == long.model_dump_json()[:RAW_MAX]  # characters, none broken
    assert item.raw == '{"code": "东门"}'
