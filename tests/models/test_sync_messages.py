"""Passage events on the wire: one alone, a backlog in batches; readers take both the same way."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from harness.tickets import NOW
from models import Direction, Outcome, PassageEvent
from models.sync import EVENT_BATCH_MAX, EventAck, EventBatch, GateStatus, RefusedEvent, event_batch_json, parse_events


def event(code: str = "ok", **kw: object) -> PassageEvent:
    fields: dict[str, object] = {
        "gate_id": "g1",
        "site_id": "nanshan",
        "at": NOW,
        "direction": Direction.IN,
        "outcome": Outcome.ADMIT,
        "code": code,
        "ticket_id": "1001",
        "passed": True,
        "counted": True,
        "credential": "signed",
    }
    return PassageEvent.model_validate(fields | kw)


def test_one_event_goes_as_itself_and_a_backlog_as_one_batch_read_back_in_order() -> None:
    backlog = [event(ticket_id=str(1000 + i)) for i in range(3)]

    alone = event_batch_json([backlog[0].model_dump_json()])
    batch = event_batch_json([e.model_dump_json() for e in backlog])

    assert PassageEvent.model_validate_json(alone) == backlog[0], "a single event stays a plain PassageEvent"
    assert EventBatch.model_validate_json(batch).events == backlog
    assert parse_events(alone) == backlog[:1]
    assert parse_events(batch.encode()) == backlog


def test_an_event_whose_code_is_the_word_events_is_still_one_event() -> None:
    odd = event(code="events", ticket_id='"events"')
    assert parse_events(odd.model_dump_json()) == [odd]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"schema_version":1,"events":[]}', id="empty-batch"),
        pytest.param(
            b'{"schema_version":1,"events":['
            + b",".join([event().model_dump_json().encode()] * (EVENT_BATCH_MAX + 1))
            + b"]}",
            id="too-many",
        ),
        pytest.param(b"[]", id="a-list"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
def test_a_message_that_is_neither_a_batch_nor_an_event_is_refused(payload: bytes) -> None:
    with pytest.raises(ValidationError):
        parse_events(payload)


def test_batched_events_keep_their_own_ids() -> None:
    ids = [uuid.uuid4() for _ in range(4)]
    batch = event_batch_json([event(event_id=i).model_dump_json() for i in ids])
    assert [e.event_id for e in parse_events(batch)] == ids


def test_a_bad_event_in_a_batch_is_left_out_and_named_and_the_others_go_through() -> None:
    good = [event(ticket_id="1001"), event(ticket_id="1002")]
    bodies = [good[0].model_dump_json(), '{"event_id": "x"}', good[1].model_dump_json().replace('"in"', '"up"')]
    bodies.append(good[1].model_dump_json())
    refused: list[str] = []

    assert parse_events(event_batch_json(bodies), refused) == good
    assert [why.split(":")[0] for why in refused] == ["event 2 of 4", "event 3 of 4"]
    assert "direction" in refused[1]


class _EventAckOfTheLastRelease(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    event_ids: list[uuid.UUID]


class _GateStatusOfTheLastRelease(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    site: str
    gate: str
    state: str
    feed_seq: int = 0
    outbox_depth: int = 0
    at: datetime | None = None
    checksum: str | None = None
    checksum_seq: int | None = None


def test_a_peer_one_release_older_reads_acks_and_statuses_that_need_no_new_field() -> None:
    ack = EventAck(event_ids=[uuid.uuid4()])
    status = GateStatus(site="nanshan", gate="g1", state="online", feed_seq=3, at=NOW)

    assert _EventAckOfTheLastRelease.model_validate_json(ack.model_dump_json()).event_ids == ack.event_ids
    assert _GateStatusOfTheLastRelease.model_validate_json(status.model_dump_json()).feed_seq == 3
    assert EventAck.model_validate_json(ack.model_dump_json()) == ack  # and this release reads itself
    assert GateStatus.model_validate_json(status.model_dump_json()) == status


def test_new_fields_travel_when_they_say_something() -> None:
    refused = EventAck(event_ids=[], refused=[RefusedEvent(event_id=uuid.uuid4(), reason="malformed")])
    status = GateStatus(site="nanshan", gate="g1", state="online", problem="not on the roster")

    assert EventAck.model_validate_json(refused.model_dump_json()) == refused
    assert GateStatus.model_validate_json(status.model_dump_json()).problem == "not on the roster"
