"""The journal: every decision of this gate and the completed passages other gates reported.

Journal rule: a decision is committed before the barrier moves. An admission is written as
*pending* (``passed`` NULL); it becomes a counted entry only when `resolve` records the
passage as completed, and only then does its event enter the outbox.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime

from pydantic import field_validator

from edge.decision import History, Passage, PriorScan
from edge.store.outbox import enqueue
from edge.store.schema import iso, time_window
from models import Direction, Outcome, PassageEvent, PassageRecord

REMOTE = "remote"  # resolution of a passage learnt from another gate of the site
OWN = f"resolution IS NOT '{REMOTE}'"  # this gate's own decisions (`passages_own_at` repeats it)

# The journal's columns: a passage record's fields, then what only the journal knows.
COLUMNS = (*(f for f in PassageRecord.model_fields if f != "schema_version"), "resolution")


class JournalEntry(PassageRecord):
    """One decision as the journal holds it: a passage record and how it was resolved.

    ``counted`` is final once ``passed`` is known; on a pending admission it says whether the
    passage will count when it completes (the stored row says 0 until then).
    """

    resolution: str | None = None

    @field_validator("at", mode="before")
    @classmethod
    def _aware(cls, at: object) -> object:
        if isinstance(at, datetime) and at.tzinfo is None:
            raise ValueError("journal times must be timezone-aware")
        return at

    def to_event(self) -> PassageEvent:
        """The event this entry sends (a pending admission as not passed)."""
        return PassageEvent.model_validate(self.model_dump(exclude={"resolution"}) | {"passed": bool(self.passed)})


def _row(entry: JournalEntry) -> tuple[object, ...]:
    """The entry as a journal row, in `COLUMNS` order."""
    values = entry.model_dump(mode="json", exclude={"schema_version"})
    values["at"] = iso(entry.at)
    values["passed"] = None if entry.passed is None else int(entry.passed)
    values["counted"] = int(entry.counted and bool(entry.passed))
    return tuple(values.get(c) for c in COLUMNS)  # an unset face_distance is left out of the dump


def _insert(c: sqlite3.Connection, entries: list[JournalEntry], verb: str = "INSERT") -> None:
    c.executemany(
        f"{verb} INTO passages ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        [_row(e) for e in entries],
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
    _insert(c, [entry])
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
    found = entries(c, "WHERE event_id = ?", (str(event_id),))
    if not found:
        raise KeyError(f"no journal entry {event_id}")
    current = found[0]
    if current.passed is not None:
        return current
    done = current.model_copy(
        update={
            "passed": passed,
            "counted": counted and passed,
            "resolution": resolution,
            "code": code or current.code,
            "outcome": outcome or current.outcome,
        }
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
    return [JournalEntry.model_validate(dict(zip(columns, r, strict=True))) for r in cur.fetchall()]


def record_remote(c: sqlite3.Connection, passages: list[PassageEvent], resolution: str) -> None:
    """Journal other gates' completed passages in the caller's transaction (a known one is kept once)."""
    _insert(
        c, [JournalEntry.model_validate(dict(e) | {"resolution": resolution}) for e in passages], "INSERT OR IGNORE"
    )


def forget_remote(c: sqlite3.Connection, event_id: uuid.UUID) -> None:
    """Remove, in the caller's transaction, a handheld's verification undone (a remote passage of a `handheld:`
    device); this gate's own decisions and other gates' passages are never removed."""
    c.execute(
        f"DELETE FROM passages WHERE event_id = ? AND resolution IS '{REMOTE}' AND gate_id LIKE 'handheld:%'",
        (str(event_id),),
    )


def search(
    conn: sqlite3.Connection,
    *,
    ticket_ids: list[str] | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[JournalEntry]:
    """This gate's own decisions, newest first: of these tickets (None: any), at `since` <= at < `until`.

    Each shape of the query has its index: by ticket `passages_ticket` (ticket, at), by time only the
    partial index `passages_own_at`, whose condition the query repeats word for word so SQLite takes it.
    """
    where = [OWN]
    params: list[object] = []
    if ticket_ids is not None:
        if not ticket_ids:
            return []
        where.append(f"ticket_id IN ({', '.join('?' * len(ticket_ids))})")
        params += ticket_ids
    time_window(where, params, since, until)
    params.append(limit)
    return entries(conn, f"WHERE {' AND '.join(where)} ORDER BY at DESC LIMIT ?", tuple(params))
