"""What gates send up, parsed without a database: their passage events (one, or an `EventBatch`) and status.

A malformed message is refused here (logged, and handed back as a dead letter, `cloud.sync.dead_letters`)
before any transaction; `cloud.sync.service.store` takes the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from cloud.deps import MAX_ID
from cloud.sync import dead_letters
from cloud.sync.dead_letters import Refused
from models import PassageEvent
from models.sync import GateStatus, parse_events
from sync.topics import parse_gate_topic

log = logging.getLogger("starfish.cloud.sync")


@dataclass(frozen=True, slots=True)
class EventIn:
    site: str
    gate: str
    event: PassageEvent


@dataclass(frozen=True, slots=True)
class StatusIn:
    site: str
    gate: str
    state: Literal["online", "offline"]
    status: GateStatus | None  # None: a bare "offline" Last Will, with no figures


Inbound = EventIn | StatusIn | Refused


def parse(topic: str, payload: bytes, refused: list[Refused] | None = None) -> list[EventIn | StatusIn]:
    """What a gate sent on `topic`: its events (one, or an `EventBatch`) or its status. Malformed
    messages, and malformed events of a batch, are left out here (logged) and go into `refused` as
    dead letters when the topic names a gate. Well-formed events that are not the gate's to send are
    kept for `cloud.sync.service.store`, which quarantines them."""
    where = parse_gate_topic(topic)
    if where is None:
        log.warning("dropped a message on %r: not a gate's events or status topic", topic)
        return []
    site, gate, leaf = where
    dead = refused if refused is not None else []
    if leaf == "acks":
        log.warning("dropped a message on %r: not a gate's events or status topic", topic)
        dead.append(dead_letters.refused(site, gate, "wrong_topic", f"a message on {topic}", payload))
        return []
    try:
        if leaf == "events":
            why_not: list[str] = []
            events = parse_events(payload, why_not)
            for why in why_not:
                log.warning("dropped a malformed event on %s: %s", topic, why)
            if why_not:
                dead.extend(dead_letters.batch_items(site, gate, payload))
            return [EventIn(site, gate, event) for event in events]  # the model bounds every field's length
        if payload.strip() in (b"offline", b'"offline"'):
            return [StatusIn(site, gate, "offline", None)]
        if not payload:
            return []  # a retained status being cleared
        return [_status(site, gate, GateStatus.model_validate_json(payload))]
    except ValidationError as exc:
        log.warning("dropped a malformed message on %s: %s", topic, dead_letters.short(exc))
        dead.append(dead_letters.refused(site, gate, dead_letters.reason_of(exc), dead_letters.short(exc), payload))
        return []
    except _Refused as exc:
        log.warning("dropped a message on %s: %s", topic, exc)
        dead.append(dead_letters.refused(site, gate, exc.reason, str(exc), payload))
        return []


def parse_message(topic: str, payload: bytes) -> list[Inbound]:
    """A message's events or status, and its dead letters (stored with them, `cloud.sync.dead_letters`)."""
    refused: list[Refused] = []
    try:
        return [*parse(topic, payload, refused), *refused]
    except Exception:
        log.exception("dropped a message on %s that could not be parsed", topic)
        return []


class _Refused(Exception):
    def __init__(self, reason: dead_letters.Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _status(site: str, gate: str, status: GateStatus) -> StatusIn:
    if (status.site, status.gate) != (site, gate):
        raise _Refused("wrong_gate", f"status says site {status.site!r} gate {status.gate!r}")
    figures = (status.feed_seq, status.outbox_depth, status.checksum_seq or 0)
    if not all(0 <= n <= MAX_ID for n in figures):
        raise _Refused("out_of_range", "status figures out of range")
    return StatusIn(site, gate, status.state, status)
