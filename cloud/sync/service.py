"""What gates send up: passage events stored once by their gate-made id, and each gate's last status.

Messages are parsed here, without a database, so a malformed one is dropped (and logged) before any
transaction; `store` then takes a batch in one transaction and commits it. The MQTT layer acknowledges
the broker's messages and publishes the EventAcks only after `store` returned.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from cloud.db import utcnow
from cloud.deps import MAX_ID
from cloud.sites.models import Gate, Site
from cloud.sites.service import get_site
from cloud.sync import snapshot
from cloud.sync.feed import head_seq
from cloud.sync.models import GatePassage, GateStatusRecord
from cloud.sync.schemas import GateSyncOut, SiteSyncOut
from cloud.tickets.models import Ticket, TicketState
from models import PassageEvent
from models.sync import GateStatus, parse_events
from sync.topics import parse_gate_topic

log = logging.getLogger("starfish.cloud.sync")

_REVOKED = (TicketState.REFUNDED.value, TicketState.REVOKED.value)
_PASSAGES = GatePassage.metadata.tables[GatePassage.__tablename__]


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


Inbound = EventIn | StatusIn


def parse(topic: str, payload: bytes) -> list[Inbound]:
    """What a gate sent on `topic`: its events (one, or an `EventBatch`) or its status. Malformed
    messages, and events that are not the gate's to send, are dropped here (logged): [] or fewer."""
    where = parse_gate_topic(topic)
    if where is None or where[2] == "acks":
        log.warning("dropped a message on %r: not a gate's events or status topic", topic)
        return []
    site, gate, leaf = where
    try:
        if leaf == "events":
            refused: list[str] = []
            events = parse_events(payload, refused)
            for why in refused:
                log.warning("dropped a malformed event on %s: %s", topic, why)
            return [e for e in (_event(site, gate, event, topic) for event in events) if e is not None]
        if payload.strip() in (b"offline", b'"offline"'):
            return [StatusIn(site, gate, "offline", None)]
        if not payload:
            return []  # a retained status being cleared
        return [_status(site, gate, GateStatus.model_validate_json(payload))]
    except ValidationError as exc:
        log.warning("dropped a malformed message on %s: %s", topic, _short(exc))
        return []
    except _Refused as exc:
        log.warning("dropped a message on %s: %s", topic, exc)
        return []


class _Refused(Exception):
    pass


def _event(site: str, gate: str, event: PassageEvent, topic: str) -> EventIn | None:
    """The event, or None (logged) when it is not this gate's to send: only that one is dropped."""
    if (event.site_id, event.gate_id) != (site, gate):
        why = f"event {event.event_id} says site {event.site_id!r} gate {event.gate_id!r}"
    elif len(event.code) > 32 or (event.ticket_id is not None and len(event.ticket_id) > 64):
        why = f"event {event.event_id} has an over-long code or ticket id"
    else:
        return EventIn(site, gate, event)
    log.warning("dropped a message on %s: %s", topic, why)
    return None


def _status(site: str, gate: str, status: GateStatus) -> StatusIn:
    if (status.site, status.gate) != (site, gate):
        raise _Refused(f"status says site {status.site!r} gate {status.gate!r}")
    figures = (status.feed_seq, status.outbox_depth, status.checksum_seq or 0)
    if not all(0 <= n <= MAX_ID for n in figures):
        raise _Refused("status figures out of range")
    return StatusIn(site, gate, status.state, status)


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()[:3])


@dataclass(slots=True)
class Stored:
    """What a batch did; `acks` lists, per (site, gate) code, the event ids now safely stored (new or not)."""

    acks: dict[tuple[str, str], list[uuid.UUID]] = field(default_factory=lambda: defaultdict(list))
    new: int = 0
    duplicates: int = 0
    conflicts: int = 0
    statuses: int = 0
    unknown_gates: int = 0


def store(session: Session, batch: Sequence[Inbound], *, now: datetime | None = None) -> Stored:
    """Store a batch of parsed messages in one transaction and commit."""
    now = now or utcnow()
    out = Stored()
    gates = _gates(session, {(m.site, m.gate) for m in batch})
    known: list[Inbound] = []
    for m in batch:
        if (m.site, m.gate) in gates:
            known.append(m)
        else:
            out.unknown_gates += 1
            log.warning("dropped a message from unregistered gate %s/%s", m.site, m.gate)
    _store_events(session, [m for m in known if isinstance(m, EventIn)], gates, out, now)
    for m in known:
        if isinstance(m, StatusIn):
            _store_status(session, m, gates[(m.site, m.gate)], now)
            out.statuses += 1
    session.commit()
    return out


def _gates(session: Session, codes: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(site code, gate code) -> (site id, gate id) for the registered ones."""
    if not codes:
        return {}
    rows = session.execute(
        select(Site.code, Gate.code, Site.id, Gate.id)
        .join(Gate, Gate.site_id == Site.id)
        .where(Site.code.in_({s for s, _ in codes}), Gate.code.in_({g for _, g in codes}))
    )
    return {(s, g): (site_id, gate_id) for s, g, site_id, gate_id in rows if (s, g) in codes}


def _store_events(
    session: Session,
    events: list[EventIn],
    gates: dict[tuple[str, str], tuple[int, int]],
    out: Stored,
    now: datetime,
) -> None:
    if not events:
        return
    ids = {m.event.event_id for m in events}
    seen = set(session.scalars(select(GatePassage.event_id).where(GatePassage.event_id.in_(ids))))
    fresh: list[EventIn] = []
    for m in events:
        out.acks[(m.site, m.gate)].append(m.event.event_id)
        if m.event.event_id in seen:
            out.duplicates += 1
        else:
            seen.add(m.event.event_id)
            fresh.append(m)
    for key, acked in out.acks.items():
        out.acks[key] = list(dict.fromkeys(acked))  # one id once, however often it came
    # Earliest scan first: of two admissions of one single-use ticket, the later one is the conflict.
    fresh.sort(key=lambda m: m.event.at)
    tickets = _tickets_to_count(session, [m.event for m in fresh])
    rows = []
    for m in fresh:
        e = m.event
        site_id, gate_id = gates[(m.site, m.gate)]
        ticket = tickets.get(e.ticket_id or "") if e.passed and e.counted else None
        conflict = _count_entry(ticket, e.at) if ticket is not None else None
        if conflict is not None:
            out.conflicts += 1
            log.warning(
                "conflict %s: event %s of ticket %s at %s/%s", conflict, e.event_id, e.ticket_id, m.site, m.gate
            )
        rows.append(
            {
                "event_id": e.event_id,
                "site_id": site_id,
                "gate_id": gate_id,
                "at": e.at,
                "received_at": now,
                "direction": e.direction.value,
                "outcome": e.outcome.value,
                "code": e.code,
                "ticket_id": e.ticket_id,
                "passed": e.passed,
                "counted": e.counted,
                "credential": e.credential,
                "conflict": conflict,
            }
        )
    if rows:
        session.execute(insert(_PASSAGES), rows)  # Core: one executemany, no ORM bookkeeping per event
    out.new += len(rows)


def _tickets_to_count(session: Session, events: list[PassageEvent]) -> dict[str, Ticket]:
    ids = {int(e.ticket_id) for e in events if e.passed and e.counted and e.ticket_id and _is_ticket_no(e.ticket_id)}
    if not ids:
        return {}
    # Locked: a refund racing with this sees the entry and refuses (its guard wants entries_used == 0).
    rows = session.scalars(select(Ticket).where(Ticket.id.in_(ids)).with_for_update())
    return {str(t.id): t for t in rows}


def _is_ticket_no(ticket_id: str) -> bool:
    # Cloud tickets are numbered; a plain code's or another system's id is stored but counts nothing here.
    return ticket_id.isascii() and ticket_id.isdigit() and 0 < int(ticket_id) <= MAX_ID


def _count_entry(ticket: Ticket, at: datetime) -> str | None:
    """Count one passage on the ticket; the conflict it reveals, if any."""
    conflict = None
    if ticket.entries is not None and ticket.entries_used >= ticket.entries:
        conflict = "over_use"
    elif ticket.status in _REVOKED:
        conflict = "after_revocation"
    ticket.entries_used += 1
    if ticket.first_entry_at is None or at < ticket.first_entry_at:
        ticket.first_entry_at = at
    if ticket.status == TicketState.VALID and ticket.entries is not None and ticket.entries_used >= ticket.entries:
        ticket.status = TicketState.USED.value
    return conflict


def _store_status(session: Session, m: StatusIn, ids: tuple[int, int], now: datetime) -> None:
    site_id, gate_id = ids
    row = session.get(GateStatusRecord, gate_id)
    if row is None:
        row = GateStatusRecord(gate_id=gate_id, site_id=site_id, feed_seq=0, outbox_depth=0)
        session.add(row)
    row.state = m.state
    row.updated_at = now
    # A Last Will is composed when the gate connects, so its figures are older than the last online
    # status's: an offline status brings figures only when it is newer (a clean shutdown's).
    status = m.status
    if status is None:
        return
    newer = status.at is not None and (row.reported_at is None or status.at > row.reported_at)
    if m.state == "online" or newer:
        row.feed_seq = status.feed_seq
        row.outbox_depth = status.outbox_depth
        row.reported_at = status.at or row.reported_at
        if status.checksum is not None and status.checksum_seq is not None:
            row.checksum, row.checksum_seq = status.checksum, status.checksum_seq


def site_sync_status(session: Session, site_id: int, *, verify: bool = False) -> SiteSyncOut:
    """Each gate of the site with its last reported status, against the site's feed head.

    `verify` also sums the cloud's ticket set (one pass over the site's tickets) and says, of each
    gate whose checksum was taken at the feed head, whether its ticket set equals the cloud's.
    """
    site = get_site(session, site_id)
    cloud_checksum = None
    if verify:
        summed = snapshot.site_checksum(session, site.id)
        head, cloud_checksum = summed.seq, summed.checksum
    else:
        head = head_seq(session, site.id)
    rows = session.execute(
        select(Gate, GateStatusRecord)
        .outerjoin(GateStatusRecord, GateStatusRecord.gate_id == Gate.id)
        .where(Gate.site_id == site_id)
        .order_by(Gate.id)
    )
    gates = []
    for gate, status in rows:
        reported: dict[str, Any] = {
            "state": "unknown",
            "feed_seq": None,
            "outbox_depth": None,
            "last_seen": None,
            "reported_at": None,
        }
        if status is not None:
            compared = cloud_checksum is not None and status.checksum is not None and status.checksum_seq == head
            reported = {
                "state": status.state,
                "feed_seq": status.feed_seq,
                "outbox_depth": status.outbox_depth,
                "last_seen": status.updated_at,
                "reported_at": status.reported_at,
                "checksum": status.checksum,
                "checksum_seq": status.checksum_seq,
                "in_step": status.checksum == cloud_checksum if compared else None,
            }
        gates.append(GateSyncOut(gate_id=gate.id, code=gate.code, name=gate.name, **reported))
    return SiteSyncOut(site_id=site.id, site_code=site.code, feed_seq=head, checksum=cloud_checksum, gates=gates)
