"""The gate's local store (SQLite through sqlite-utils, WAL, synchronous=FULL).

Tables: tickets (cache), revocations, keys (trusted public keys), passages (the journal, this
gate's decisions and, later, other gates' passages), outbox (events waiting for upload), meta.

Journal rule: a decision is committed before the barrier moves. An admission is written as
*pending* (``passed`` NULL); it becomes a counted entry only when `resolve` records the
passage as completed, and only then does its event enter the outbox. `recover` resolves
what a crash left pending: see its docstring.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.decision import History, Passage, PriorScan
from models import CredentialKind, Direction, Outcome, PassageEvent, Ticket, TicketStatus
from models.credential import load_public_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    ticket_id TEXT PRIMARY KEY,
    code TEXT UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS revocations (
    ticket_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS keys (
    key_id INTEGER PRIMARY KEY,
    public_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    event_id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    gate_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    ticket_id TEXT,
    credential TEXT NOT NULL,
    outcome TEXT NOT NULL,
    code TEXT NOT NULL,
    passed INTEGER,
    counted INTEGER NOT NULL DEFAULT 0,
    resolution TEXT
);
CREATE INDEX IF NOT EXISTS passages_ticket ON passages (ticket_id, at);
CREATE INDEX IF NOT EXISTS passages_pending ON passages (passed) WHERE passed IS NULL;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


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


def _iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        raise ValueError("journal times must be timezone-aware")
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


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


class StoreError(Exception):
    """The store file cannot be opened or is not a Starfish gate store."""


class GateStore:
    """All durable state of one gate. Not thread-safe: one owner (the gate service) uses it."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            conn = sqlite3.connect(self.path, timeout=5.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open gate store {self.path}: {exc}") from exc
        self.db = sqlite_utils.Database(conn)
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.conn:
            yield self.conn

    # --- tickets, revocations, keys -------------------------------------------------------

    def upsert_tickets(self, tickets: Iterable[Ticket]) -> int:
        """Insert or replace tickets in the cache; returns how many."""
        rows = [{"ticket_id": t.ticket_id, "code": t.code, "body": t.model_dump_json()} for t in tickets]
        with self._tx():
            self.db.table("tickets").upsert_all(rows, pk="ticket_id")
        return len(rows)

    def ticket(self, ticket_id: str) -> Ticket | None:
        row = self.conn.execute("SELECT body FROM tickets WHERE ticket_id = ?", (ticket_id,)).fetchone()
        return None if row is None else Ticket.model_validate_json(row[0])

    def ticket_by_code(self, code: str) -> Ticket | None:
        row = self.conn.execute("SELECT body FROM tickets WHERE code = ?", (code,)).fetchone()
        return None if row is None else Ticket.model_validate_json(row[0])

    def ticket_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM tickets").fetchone()[0])

    def set_status(self, ticket_id: str, status: TicketStatus, reason: str = "") -> None:
        """Revoke or block a ticket (even one not in the cache); VALID lifts a block."""
        with self._tx() as c:
            if status is TicketStatus.VALID:
                c.execute("DELETE FROM revocations WHERE ticket_id = ?", (ticket_id,))
            else:
                c.execute(
                    "INSERT OR REPLACE INTO revocations (ticket_id, status, reason) VALUES (?, ?, ?)",
                    (ticket_id, status.value, reason),
                )

    def status(self, ticket_id: str) -> TicketStatus | None:
        row = self.conn.execute("SELECT status FROM revocations WHERE ticket_id = ?", (ticket_id,)).fetchone()
        return None if row is None else TicketStatus(row[0])

    def set_keys(self, keys: dict[int, str]) -> None:
        """Replace the trusted public keys (key id -> base64 raw Ed25519 key)."""
        for b64 in keys.values():
            load_public_key(b64)
        with self._tx() as c:
            c.execute("DELETE FROM keys")
            c.executemany("INSERT INTO keys (key_id, public_key) VALUES (?, ?)", sorted(keys.items()))

    def keys(self) -> dict[int, Ed25519PublicKey]:
        return {int(k): load_public_key(v) for k, v in self.conn.execute("SELECT key_id, public_key FROM keys")}

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- journal ---------------------------------------------------------------------------

    def history(self, ticket_id: str, gate_id: str) -> History:
        """Completed passages of a ticket, and this gate's last answer for it."""
        rows = self.conn.execute(
            "SELECT at, gate_id, direction, counted FROM passages WHERE ticket_id = ? AND passed = 1",
            (ticket_id,),
        ).fetchall()
        passages = [
            Passage(at=datetime.fromisoformat(at), gate_id=g, direction=Direction(d), counted=bool(c))
            for at, g, d, c in rows
        ]
        last = self.conn.execute(
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

    def record(self, entry: JournalEntry) -> None:
        """Commit a decision. A resolved entry (deny, or passed known) enters the outbox too."""
        row = {
            "event_id": str(entry.event_id),
            "at": _iso(entry.at),
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
        with self._tx() as c:
            c.execute(
                f"INSERT INTO passages ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
            if entry.passed is not None:
                self._enqueue(c, entry)

    def resolve(
        self,
        event_id: uuid.UUID,
        *,
        passed: bool,
        counted: bool,
        resolution: str,
        code: str | None = None,
        outcome: Outcome | None = None,
    ) -> JournalEntry:
        """Record how a pending admission ended, and queue its event; idempotent."""
        with self._tx() as c:
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
            self._enqueue(c, done)
        return done

    def pending(self) -> list[JournalEntry]:
        return self._entries("WHERE passed IS NULL ORDER BY at")

    def entries(self) -> list[JournalEntry]:
        return self._entries("ORDER BY at")

    def _entries(self, where: str) -> list[JournalEntry]:
        cur = self.conn.execute(f"SELECT * FROM passages {where}")
        columns = [d[0] for d in cur.description]
        return [_entry(dict(zip(columns, r, strict=True))) for r in cur.fetchall()]

    def recover(self) -> list[JournalEntry]:
        """Resolve admissions a crash left pending; returns them as resolved.

        The rule: a pending admission is one whose passage was never confirmed (the daemon
        died between the journal write and the sensor, or before the barrier command
        completed). We cannot prove anybody passed, so it resolves as *not passed, not
        counted*, with resolution ``unconfirmed_after_restart``; its event is still uploaded
        so the cloud sees it. The skier is not charged an entry the gate cannot prove.
        """
        return [
            self.resolve(e.event_id, passed=False, counted=False, resolution="unconfirmed_after_restart")
            for e in self.pending()
        ]

    # --- outbox ----------------------------------------------------------------------------

    def _enqueue(self, c: sqlite3.Connection, entry: JournalEntry) -> None:
        c.execute(
            "INSERT OR IGNORE INTO outbox (event_id, body) VALUES (?, ?)",
            (str(entry.event_id), entry.to_event().model_dump_json()),
        )

    def outbox(self, limit: int = 100) -> list[PassageEvent]:
        """The oldest events not yet confirmed by the cloud."""
        rows = self.conn.execute("SELECT body FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [PassageEvent.model_validate_json(r[0]) for r in rows]

    def outbox_depth(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def acknowledge(self, event_ids: Iterable[uuid.UUID]) -> None:
        """Remove events the cloud confirmed it stored."""
        with self._tx() as c:
            c.executemany("DELETE FROM outbox WHERE event_id = ?", [(str(e),) for e in event_ids])
