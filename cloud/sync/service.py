"""What gates send up, stored: passage events once per sending gate and gate-made id, each gate's last status.

Messages are parsed first, without a database (`cloud.sync.inbound`), so a malformed one is refused
before any transaction; `store` then takes a batch in one transaction and commits it. The MQTT layer
acknowledges the broker's messages and publishes the EventAcks only after `store` returned.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud import metrics
from cloud.channels.calls import EntryUse, gate_source, on_entries_used
from cloud.db import utcnow
from cloud.deps import MAX_ID
from cloud.sites.models import Gate, Site
from cloud.sites.service import get_site
from cloud.sync import dead_letters
from cloud.sync.dead_letters import Refused
from cloud.sync.gate_status import store_status
from cloud.sync.inbound import EventIn, Inbound, StatusIn
from cloud.sync.models import GatePassage, QuarantinedEvent
from cloud.sync.rows import insert_rows, products_of
from cloud.sync.schemas import QuarantinedEventOut, QuarantineReason
from cloud.tickets.models import Ticket, TicketState
from models import PassageEvent
from models.sync import EVENT_CLOCK_SKEW, EventAck, RefusedEvent, implausible_time
from sync import topics

log = logging.getLogger("starfish.cloud.sync")

_REVOKED = (TicketState.REFUNDED.value, TicketState.REVOKED.value)
# A stored passage is the event as the gate sent it, its site and gate as the cloud's ids: one mapping both ways.
_EVENT_COLUMNS: set[str] = set(PassageEvent.model_fields) - {"schema_version", "site_id", "gate_id"}
QUARANTINE_EVENT_MAX = 4000  # characters of a quarantined event's JSON kept as evidence


@dataclass(slots=True)
class Stored:
    """What a batch did; `acks` lists, per (site, gate) code, the event ids now safely kept (stored,
    quarantined or known already), `refused` the dead letters' event ids to name as refused."""

    acks: dict[tuple[str, str], list[uuid.UUID]] = field(default_factory=lambda: defaultdict(list))
    refused: dict[tuple[str, str], list[RefusedEvent]] = field(default_factory=lambda: defaultdict(list))
    new: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0
    statuses: int = 0
    unknown_gates: int = 0
    dead_letters: int = 0

    def event_acks(self, chunk: int) -> list[tuple[tuple[str, str], EventAck]]:
        """The EventAcks to publish, per (site, gate) code, of at most `chunk` ids each. Confirmed and refused
        ids go in separate acks: a gate one release older, which does not know `refused`, still takes the
        confirmations (and only drops the refusals as unreadable)."""
        confirmed = [
            (key, EventAck(event_ids=ids[i : i + chunk]))
            for key, ids in self.acks.items()
            for i in range(0, len(ids), chunk)
        ]
        refused = [
            (key, EventAck(event_ids=[], refused=refused[i : i + chunk]))
            for key, refused in self.refused.items()
            for i in range(0, len(refused), chunk)
        ]
        return confirmed + refused


def store(session: Session, batch: Sequence[Inbound], *, now: datetime | None = None) -> Stored:
    """Store a batch of parsed messages in one transaction and commit.

    Each event is judged first (`_refusal`); one that cannot be true is quarantined: kept as
    evidence, applied to nothing, and acknowledged like a stored one so the gate stops sending it.
    An event is identified by the gate that sent it (its topic, which the broker authenticated) and
    its event id: the same again from that gate is a no-op acknowledged again, and one gate's events
    cannot make another's duplicates. An id sent by two gates is one gate copying the other's event;
    `_settle_reused_ids` says which passage stays and quarantines the others as `id_reused`.
    Dead letters (`Refused`, from `parse`) are kept in the same transaction (`dead_letters.store`).
    """
    now = now or utcnow()
    out = Stored()
    letters = [m for m in batch if isinstance(m, Refused)]
    out.refused.update(dead_letters.store(session, letters, now))
    out.dead_letters = len(letters)
    gates = _gates(session, {(m.site, m.gate) for m in batch if not isinstance(m, Refused)})
    _store_events(session, [m for m in batch if isinstance(m, EventIn)], gates, out, now)
    for m in batch:
        if not isinstance(m, StatusIn):
            continue
        if (m.site, m.gate) in gates:
            store_status(session, m, gates[(m.site, m.gate)], now)
            out.statuses += 1
        else:
            out.unknown_gates += 1
            log.warning("dropped a status from unregistered gate %s/%s", m.site, m.gate)
    session.commit()
    metrics.events(out)
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


@dataclass(slots=True)
class _Arriving:
    """A valid event of this batch, with its topic's (site id, gate id) and the ticket it would count."""

    m: EventIn
    where: tuple[int, int]
    ticket: Ticket | None
    lost: bool = False  # its id is kept under another gate: quarantined as `id_reused`

    @property
    def counts(self) -> bool:
        return _counts(self.m.event)


@dataclass(frozen=True, slots=True)
class _Kept:
    """A passage stored before this batch, with the codes of the site and gate that sent it."""

    row: GatePassage
    site: str
    gate: str

    @property
    def counts(self) -> bool:
        return _counts_entry(self.row.passed, self.row.counted, self.row.ticket_id)


def _store_events(
    session: Session,
    events: list[EventIn],
    gates: dict[tuple[str, str], tuple[int, int]],
    out: Stored,
    now: datetime,
) -> None:
    """Store, quarantine or recognise each event; see `store`.

    An event is (the gate that sent it, its event id): the same again from that gate is a duplicate,
    acknowledged again; from another gate it is not, and goes to `_settle_reused_ids`.
    """
    if not events:
        return
    ids = {m.event.event_id for m in events}
    kept: dict[uuid.UUID, list[_Kept]] = defaultdict(list)
    for row, site_code, gate_code in session.execute(
        select(GatePassage, Site.code, Gate.code)
        .join(Gate, Gate.id == GatePassage.gate_id)
        .join(Site, Site.id == GatePassage.site_id)
        .where(GatePassage.event_id.in_(ids))
        .order_by(GatePassage.id)
    ):
        kept[row.event_id].append(_Kept(row, site_code, gate_code))
    seen = {(k.row.gate_id, event_id) for event_id, rows in kept.items() for k in rows}
    held = {
        (event_id, site, gate)
        for event_id, site, gate in session.execute(
            select(QuarantinedEvent.event_id, QuarantinedEvent.site_code, QuarantinedEvent.gate_code).where(
                QuarantinedEvent.event_id.in_(ids)
            )
        )
    }
    fresh: list[EventIn] = []
    for m in events:
        out.acks[(m.site, m.gate)].append(m.event.event_id)
        where = gates.get((m.site, m.gate))
        if (where is not None and (where[1], m.event.event_id) in seen) or (m.event.event_id, m.site, m.gate) in held:
            out.duplicates += 1
        else:
            fresh.append(m)
    for key, acked in out.acks.items():
        out.acks[key] = list(dict.fromkeys(acked))  # one id once, however often it came
    # Earliest scan first: of two admissions of one single-use ticket, the later one is the conflict.
    fresh.sort(key=lambda m: m.event.at)
    tickets = _tickets_to_count(
        session, [(gates[(m.site, m.gate)][0], m.event) for m in fresh if (m.site, m.gate) in gates]
    )
    arriving: list[_Arriving] = []
    for m in fresh:
        e = m.event
        where = gates.get((m.site, m.gate))
        # Only a passage that used up an entry counts on (and is checked against) its ticket.
        ticket = tickets.get((where[0], e.ticket_id or "")) if where is not None and _counts(e) else None
        reason = _refusal(m, where, ticket, now)
        if reason is not None:
            _hold(session, m, where, reason, now, held, out)
            continue
        assert where is not None
        if (where[1], e.event_id) in seen:
            out.duplicates += 1  # the same event twice in this batch
            continue
        seen.add((where[1], e.event_id))
        arriving.append(_Arriving(m, where, ticket))
    _settle_reused_ids(session, arriving, kept, held, out, now)
    uncounted: dict[int, set[int]] = defaultdict(set)  # tickets named by passages that count nothing
    for a in arriving:
        if a.ticket is None and a.m.event.ticket_id is not None and _is_ticket_no(a.m.event.ticket_id):
            uncounted[a.where[0]].add(int(a.m.event.ticket_id))
    products = products_of(session, uncounted) if uncounted else {}
    rows = []
    counted: list[_Arriving] = []  # the arriving event of each row
    for a in arriving:
        e = a.m.event
        if a.lost:
            _hold(session, a.m, a.where, "id_reused", now, held, out)
            continue
        site_id, gate_id = a.where
        conflict = _count_entry(a.ticket, e.at) if a.ticket is not None else None
        if conflict is not None:
            out.conflicts += 1
            log.warning(
                "conflict %s: event %s of ticket %s at %s/%s", conflict, e.event_id, e.ticket_id, a.m.site, a.m.gate
            )
        rows.append(
            {name: getattr(e, name) for name in _EVENT_COLUMNS}  # `model_dump` (python mode), without its cost
            | {"site_id": site_id, "gate_id": gate_id, "received_at": now, "conflict": conflict}
            | {"product_id": a.ticket.product_id if a.ticket else products.get((site_id, e.ticket_id or ""))}
        )
        counted.append(a)
    if rows:
        insert_rows(session, rows)
        # Channel hook: an entry counted without conflict on an OTA ticket makes the platform's verify call.
        uses = [
            EntryUse(a.ticket.id, a.ticket.order_id, a.m.event.at, gate_source(a.m.site, a.m.gate, a.m.event.event_id))
            for a, row in zip(counted, rows, strict=True)
            if a.ticket is not None and row["conflict"] is None
        ]
        on_entries_used(session, uses, now)
    out.new += len(rows)


def _settle_reused_ids(
    session: Session,
    arriving: list[_Arriving],
    kept: dict[uuid.UUID, list[_Kept]],
    held: set[tuple[uuid.UUID, str, str]],
    out: Stored,
    now: datetime,
) -> None:
    """One event id, one passage: of the gates that sent an id, decide whose passage it stays.

    Gates make their event ids at random, so one id from two gates means one gate copied the other's
    event (every gate reads its peers' events on the site broker), and the events alone do not say
    which. So the passage kept is the one that does no harm if it is the copy: one that counts an entry
    wins over one that counts nothing (a gate's login can count any of its site's tickets under ids of
    its own anyway, so a counting copy gains the copier nothing; a copy that counts nothing could only
    hide a real entry); between equals the one stored first (in a batch, the earliest scan) stays. The
    others are quarantined as `id_reused`, as evidence of a copying gate: an arriving one instead of
    being stored, and a passage stored earlier that counts nothing is moved to the quarantine when a
    counting one of its id arrives (it never counted on a ticket, so nothing else changes). Each gate
    is acknowledged its own events all the same, so the honest one stops resending.
    """
    claims: dict[uuid.UUID, list[_Arriving]] = defaultdict(list)
    for a in arriving:
        claims[a.m.event.event_id].append(a)
    for event_id, new in claims.items():
        old = kept.get(event_id, [])
        if not old and len(new) == 1:
            continue
        everyone: list[_Kept | _Arriving] = [*old, *new]
        keeper = next((c for c in everyone if c.counts), everyone[0])
        senders = ", ".join(
            f"{c.site}/{c.gate}" if isinstance(c, _Kept) else f"{c.m.site}/{c.m.gate}" for c in everyone
        )
        log.warning("event id %s reused by more than one gate (%s): one of them copies the other", event_id, senders)
        for c in everyone:
            if c is keeper:
                continue
            if isinstance(c, _Arriving):
                c.lost = True
                continue
            session.delete(c.row)
            copy = EventIn(c.site, c.gate, _event_of(c.row, c.site, c.gate))
            _hold(session, copy, (c.row.site_id, c.row.gate_id), "id_reused", now, held, out)


def _event_of(row: GatePassage, site: str, gate: str) -> PassageEvent:
    """The event a stored passage was made from (its site and gate as their codes)."""
    stored = {c: getattr(row, c) for c in _EVENT_COLUMNS}
    return PassageEvent.model_validate(stored | {"gate_id": gate, "site_id": site})


def _hold(
    session: Session,
    m: EventIn,
    where: tuple[int, int] | None,
    reason: QuarantineReason,
    now: datetime,
    held: set[tuple[uuid.UUID, str, str]],
    out: Stored,
) -> None:
    """Quarantine the event, once per (event id, sending gate)."""
    key = (m.event.event_id, m.site, m.gate)
    if key in held:
        out.duplicates += 1  # the same event twice in this batch
        return
    held.add(key)
    _quarantine(session, m, where, reason, now)
    out.quarantined += 1


def _refusal(
    m: EventIn, where: tuple[int, int] | None, ticket: Ticket | None, now: datetime
) -> QuarantineReason | None:
    """Why an event cannot be true, or None. `where` is the topic's (site id, gate id), None when that
    gate is not registered; `ticket` the topic site's ticket the event would count, if any.

    The topic is what the broker authenticated (a gate's login may publish only on its own events
    topic), so the event must name the topic's site and gate; a passage that counts must be of one
    of that site's tickets (another site's ticket is unknown here), scanned no earlier than the
    ticket was issued; and no event may be dated out of `models.sync.implausible_time`'s bounds.
    """
    e = m.event
    if where is None:
        return "unknown_gate"
    if e.site_id != m.site:
        return "wrong_site"
    if e.gate_id != m.gate:
        return "gate_mismatch"
    if (bad_time := implausible_time(e.at, now)) is not None:
        return bad_time
    if _counts(e):
        if ticket is None:
            return "unknown_ticket"
        if e.at < ticket.issued_at - EVENT_CLOCK_SKEW:
            return "before_sale"
    return None


def _quarantine(
    session: Session, m: EventIn, where: tuple[int, int] | None, reason: QuarantineReason, now: datetime
) -> None:
    e = m.event
    site_id = where[0] if where is not None else session.scalar(select(Site.id).where(Site.code == m.site))
    session.add(
        QuarantinedEvent(
            event_id=e.event_id,
            site_id=site_id,
            site_code=m.site,
            gate_code=m.gate,
            topic=topics.events(m.site, m.gate),
            received_at=now,
            reason=reason,
            event=e.model_dump_json()[:QUARANTINE_EVENT_MAX],
        )
    )
    log.warning(
        "quarantined event %s from %s/%s (%s): it says site %.40r gate %.40r ticket %.40r at %s",
        e.event_id,
        m.site,
        m.gate,
        reason,
        e.site_id,
        e.gate_id,
        e.ticket_id,
        e.at.isoformat(),
    )


def _counts(e: PassageEvent) -> bool:
    """Would this passage count an entry on one of the cloud's tickets?"""
    return _counts_entry(e.passed, e.counted, e.ticket_id)


def _counts_entry(passed: bool, counted: bool, ticket_id: str | None) -> bool:
    return passed and counted and ticket_id is not None and _is_ticket_no(ticket_id)


def _tickets_to_count(session: Session, events: list[tuple[int, PassageEvent]]) -> dict[tuple[int, str], Ticket]:
    """The tickets these (site id, event)s would count, by (site id, ticket id): only the site's own."""
    wanted: dict[int, set[int]] = defaultdict(set)
    for site_id, e in events:
        if _counts(e):
            wanted[site_id].add(int(e.ticket_id or 0))
    found: dict[tuple[int, str], Ticket] = {}
    for site_id, ids in wanted.items():
        # Locked: a refund racing with this sees the entry and refuses (its guard wants entries_used == 0). In id
        # order, so two cloud processes storing batches that share tickets never lock them crosswise.
        query = select(Ticket).where(Ticket.site_id == site_id, Ticket.id.in_(ids))
        rows = session.scalars(query.order_by(Ticket.id).with_for_update())
        found.update({(site_id, str(t.id)): t for t in rows})
    return found


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


def quarantined_events(session: Session, site_id: int, *, limit: int = 100) -> list[QuarantinedEventOut]:
    """The site's quarantined events, newest first."""
    get_site(session, site_id)
    rows = session.scalars(
        select(QuarantinedEvent)
        .where(QuarantinedEvent.site_id == site_id)
        .order_by(QuarantinedEvent.id.desc())
        .limit(limit)
    )
    return [QuarantinedEventOut.model_validate(row, from_attributes=True) for row in rows]
