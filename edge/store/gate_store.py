"""`GateStore`: all durable state of one gate, owned by the gate service (SQLite, WAL, synchronous=FULL).

Tables: tickets (cache), revocations, keys (trusted public keys), passages (the journal, this
gate's decisions and other gates' passages), outbox (events waiting for upload), technicians (the
cloud's gate technicians) and tech_actions (what they did here), meta. The SQL
lives in this package's modules; `GateStore` holds the connection and the transactions.
`recover` resolves what a crash left pending: see its docstring.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.decision import History
from edge.store import journal, outbox, schema, technicians, tickets
from edge.store.journal import JournalEntry
from models import Outcome, PassageEvent, Ticket, TicketStatus
from models.credential import load_public_key
from models.ops import TechnicianAccount


class GateStore:
    """All durable state of one gate. Not thread-safe: one owner (the gate service) uses it."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        conn = schema.open_store(self.path)
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
        return tickets.ticket(self.conn, ticket_id)

    def ticket_by_code(self, code: str) -> Ticket | None:
        return tickets.ticket_by_code(self.conn, code)

    def ticket_count(self) -> int:
        return tickets.count(self.conn)

    def set_status(self, ticket_id: str, status: TicketStatus, reason: str = "") -> None:
        """Revoke or block a ticket (even one not in the cache); VALID lifts a block."""
        with self._tx() as c:
            tickets.set_status(c, ticket_id, status, reason)

    def status(self, ticket_id: str) -> TicketStatus | None:
        return tickets.status(self.conn, ticket_id)

    def set_keys(self, keys: dict[int, str]) -> None:
        """Replace the trusted public keys (key id -> base64 raw Ed25519 key)."""
        for b64 in keys.values():
            load_public_key(b64)
        with self._tx() as c:
            tickets.replace_keys(c, keys)

    def keys(self) -> dict[int, Ed25519PublicKey]:
        return tickets.keys(self.conn)

    def get_meta(self, key: str) -> str | None:
        return schema.get_meta(self.conn, key)

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            schema.set_meta(c, key, value)

    # --- journal ---------------------------------------------------------------------------

    def history(self, ticket_id: str, gate_id: str) -> History:
        """Completed passages of a ticket, and this gate's last answer for it."""
        return journal.history(self.conn, ticket_id, gate_id)

    def record(self, entry: JournalEntry) -> None:
        """Commit a decision. A resolved entry (deny, or passed known) enters the outbox too."""
        with self._tx() as c:
            journal.record(c, entry)

    def record_all(self, entries: Iterable[JournalEntry]) -> None:
        """Commit many decisions in one transaction (imports, benchmarks); each as `record` would."""
        with self._tx() as c:
            for entry in entries:
                journal.record(c, entry)

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
            return journal.resolve(
                c, event_id, passed=passed, counted=counted, resolution=resolution, code=code, outcome=outcome
            )

    def pending(self) -> list[JournalEntry]:
        return journal.entries(self.conn, "WHERE passed IS NULL ORDER BY at")

    def entries(self) -> list[JournalEntry]:
        return journal.entries(self.conn)

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

    def outbox(self, limit: int = 100) -> list[PassageEvent]:
        """The oldest events not yet confirmed by the cloud."""
        return outbox.oldest(self.conn, limit)

    def outbox_depth(self) -> int:
        return outbox.depth(self.conn)

    def acknowledge(self, event_ids: Iterable[uuid.UUID]) -> None:
        """Remove events the cloud confirmed it stored."""
        with self._tx() as c:
            outbox.acknowledge(c, event_ids)

    def outbox_oldest_at(self) -> datetime | None:
        """When the oldest event waiting for the cloud happened (its scan time); None: the outbox is empty."""
        return outbox.oldest_at(self.conn)

    # --- technicians -------------------------------------------------------------------------

    def technicians(self) -> dict[str, str]:
        """Login name -> argon2 hash of the cloud's technicians this gate holds."""
        return technicians.accounts(self.conn)

    def has_technician_list(self) -> bool:
        """Has the cloud's technician list ever arrived (then the break-glass account is off)?"""
        return technicians.received(self.conn)

    def set_technicians(self, accounts: Sequence[TechnicianAccount]) -> None:
        """Replace the technician list (the feed does this in its own transaction: `edge.store.feed`)."""
        with self._tx() as c:
            technicians.replace(c, accounts)

    def record_action(self, username: str, action: str, justification: str, ok: bool, detail: str, at: datetime) -> int:
        """Journal one technician action (or login event), committed; its id."""
        with self._tx() as c:
            return technicians.record_action(c, username, action, justification, ok, detail, at)
