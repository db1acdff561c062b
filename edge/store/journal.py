"""The journal: every decision of this gate and the completed passages other gates reported.

Journal rule: a decision is committed before the barrier moves. An admission is written as
*pending* (``passed`` NULL); it becomes a counted entry only when `resolve` records the
passage as completed, and only then does its event enter the outbox.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import cast

from edge.decision import History, Passage, PriorScan
from edge.store.outbox import enqueue
from edge.store.schema import iso
from models import CredentialKind, Direction, Outcome, PassageEvent


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One decision as the journal holds it.

    ``counted`` is final once ``passed`` is known; on a pending admission it says whether the
    passage will count when it completes (the stored row says 0 until then).
    """

    event_id: uuid.UUID
    at: datetime
    gate_id: str
    site_id: str
    direction: Direction
    ticket_id: str | None
    credential: CredentialKind
    outcome: Outcome
    code: str
    passed: bool | None
    counted: bool
    resolution: str | None = None

    def to_event(self) -> PassageEvent:
        return PassageEvent(
            event_id=self.event_id,
            gate_id=self.gate_id,
            site_id=self.site_id,
            at=self.at,
            direction=self.direction,
            outcome=self.outcome,
            code=self.code,
            ticket_id=self.ticket_id,
            passed=bool(self.passed),
            counted=self.counted,
            credential=self.credential,
        )


def _entry(row: dict[str, object]) -> JournalEntry:
    passed = row["passed"]
    return JournalEntry(
        event_id=uuid.UUID(str(row["event_id"])),
        at=datetime.fromisoformat(str(row["at"])),
        gate_id=str(row["gate_id"]),
        site_id=str(row["site_id"]),
        direction=Direction(str(row["direction"])),
        ticket_id=None if row["ticket_id"] is None else str(row["ticket_id"]),
        credential=cast(CredentialKind, str(row["credential"])),
        outcome=Outcome(str(row["outcome"])),
        code=str(row["code"]),
        passed=None if passed is None else bool(passed),
        counted=bool(row["counted"]),
        resolution=None if row["resolution"] is None else str(row["resolution"]),
    )


def history(conn: sqlite3.Connection, ticket_id: str, gate_id: str) -> History:
    """Completed passages of a ticket, and this gate's last answer for it."""
    rows = conn.execute(
        "SELECT at, gate_id, direction, counted FROM passages WHERE ticket_id = ? AND passed = 1",
        (ticket_id,),
    ).fetchall()
    passages = [
        Passage(at=datetime.fromisoformat(at), gate_id=g, direction=Direction(d), counted=bool(c))
        for at, g, d, c in rows
    ]
    last = conn.execute(
        "SELECT at, outcome, code, passed FROM passages WHERE ticket_id = ? AND gate_id = ? "
        "AND resolution IS NOT 'repeat' ORDER BY at DESC LIMIT 1",
        (ticket_id, gate_id),
    ).fetchone()
    prior = None
    if last is not None:
        at, outcome, code, passed = last
        prior = PriorScan(
            at=datetime.fromisoformat(at),
            admit=outcome == Outcome.ADMIT.value,
            code=code,
            passed=None if passed is None else bool(passed),
        )
    return History(passages=passages, prior_scan=prior)


def record(c: sqlite3.Connection, entry: JournalEntry) -> None:
    """Write a decision in the caller's transaction. A resolved entry (deny, or passed known) enters the outbox too."""
    row = {
        "event_id": str(entry.event_id),
        "at": iso(entry.at),
        "gate_id": entry.gate_id,
        "site_id": entry.site_id,
        "direction": entry.direction.value,
        "ticket_id": entry.ticket_id,
        "credential": entry.credential,
        "outcome": entry.outcome.value,
        "code": entry.code,
        "passed": None if entry.passed is None else int(entry.passed),
        "counted": int(entry.counted and bool(entry.passed)),
        "resolution": entry.resolution,
    }
    c.execute(
        f"INSERT INTO passages ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        tuple(row.values()),
    )
    if entry.passed is not None:
        enqueue(c, entry.to_event())


def resolve(
    c: sqlite3.Connection,
    event_id: uuid.UUID,
    *,
    passed: bool,
    counted: bool,
    resolution: str,
    code: str | None = None,
    outcome: Outcome | None = None,
) -> JournalEntry:
    """Record, in the caller's transaction, how a pending admission ended, and queue its event; idempotent."""
    cur = c.execute("SELECT * FROM passages WHERE event_id = ?", (str(event_id),))
    row = cur.fetchone()
    if row is None:
        raise KeyError(f"no journal entry {event_id}")
    current = _entry(dict(zip([d[0] for d in cur.description], row, strict=True)))
    if current.passed is not None:
        return current
    done = replace(
        current,
        passed=passed,
        counted=counted and passed,
        resolution=resolution,
        code=code or current.code,
        outcome=outcome or current.outcome,
    )
    c.execute(
        "UPDATE passages SET passed = ?, counted = ?, resolution = ?, code = ?, outcome = ? WHERE event_id = ?",
        (int(passed), int(done.counted), done.resolution, done.code, done.outcome.value, str(event_id)),
    )
    enqueue(c, done.to_event())
    return done


def entries(
    conn: sqlite3.Connection, where: str = "ORDER BY at", params: tuple[object, ...] = ()
) -> list[JournalEntry]:
    """Journal entries selected by a fixed clause of this package (never by outside text)."""
    cur = conn.execute(f"SELECT * FROM passages {where}", params)
    columns = [d[0] for d in cur.description]
    return [_entry(dict(zip(columns, r, strict=True))) for r in cur.fetchall()]


def record_remote(c: sqlite3.Connection, passages: list[PassageEvent], resolution: str) -> None:
    """Journal other gates' completed passages in the caller's transaction (a known one is kept once)."""
    rows = [
        (
            str(e.event_id),
            iso(e.at),
            e.gate_id,
            e.site_id,
            e.direction.value,
            e.ticket_id,
            e.credential,
            e.outcome.value,
            e.code,
            int(e.counted),
            resolution,
        )
        for e in passages
    ]
    c.executemany(
        "INSERT OR IGNORE INTO passages (event_id, at, gate_id, site_id, direction, ticket_id, credential, "
        "outcome, code, passed, counted, resolution) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
        rows,
    )
