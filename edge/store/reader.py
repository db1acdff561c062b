"""`GateStoreReader`: a read-only view of a gate's store file, for tools, demo, bench and tests.

It opens the file read-only (``file:...?mode=ro``) for each read and never writes, so it can
watch a store while the gate daemon writes it (WAL). A store whose file or tables do not exist
yet reads as an empty, never-synced store, so a watcher may start before the gate does; a file
that is not a gate store raises `StoreError`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.store import faces, journal, outbox, technicians, tickets
from edge.store.feed import FEED_EPOCH, FEED_SEQ
from edge.store.journal import JournalEntry
from edge.store.schema import StoreError, get_meta
from edge.store.upload import REMOTE
from edge.web.port import TechActionView
from models import PassageEvent, Ticket, TicketStatus

T = TypeVar("T")

_OWN = {None: "", True: f"WHERE resolution IS NOT '{REMOTE}'", False: f"WHERE resolution IS '{REMOTE}'"}


class GateStoreReader:
    """Reads of one gate's store file that never hold up its writer."""

    def __init__(self, path: str | Path, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout)
        try:
            yield conn
        finally:
            conn.close()

    def _read(self, read: Callable[[sqlite3.Connection], T], empty: T) -> T:
        if not self.path.exists():
            return empty
        try:
            with self._connect() as conn:
                return read(conn)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc) or "unable to open" in str(exc):
                return empty  # the gate is creating its store right now
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read gate store {self.path}: {exc}") from exc

    # --- journal ---------------------------------------------------------------------------

    def entries(self, *, own: bool | None = None) -> list[JournalEntry]:
        """Journal entries in time order: all, this gate's own decisions (own=True) or other gates' passages."""
        return self._read(lambda c: journal.entries(c, f"{_OWN[own]} ORDER BY at"), [])

    def pending(self) -> list[JournalEntry]:
        """Admissions waiting to learn whether somebody passed."""
        return self._read(lambda c: journal.entries(c, "WHERE passed IS NULL ORDER BY at"), [])

    def journal_mark(self) -> int:
        """A mark of the journal's end now, for `decisions_since`."""
        return self._read(lambda c: int(c.execute("SELECT coalesce(max(rowid), 0) FROM passages").fetchone()[0]), 0)

    def decisions_since(self, mark: int) -> list[JournalEntry]:
        """This gate's own decisions journaled after `mark`, in the order they were written."""
        where = f"{_OWN[True]} AND rowid > ? ORDER BY rowid"
        return self._read(lambda c: journal.entries(c, where, (mark,)), [])

    def search(
        self, ticket: str | None = None, since: datetime | None = None, until: datetime | None = None, limit: int = 50
    ) -> list[JournalEntry]:
        """This gate's own decisions, newest first, at `since` <= at < `until` (either may be None).

        `ticket` is what a technician reads off the ticket in the skier's hand: its ticket id, or the
        code of a ticket in the cache (printed on a voucher); either finds the ticket's decisions.
        """

        def read(c: sqlite3.Connection) -> list[JournalEntry]:
            ids = None
            if ticket is not None:
                ids = [ticket]
                cached = c.execute("SELECT ticket_id FROM tickets WHERE code = ?", (ticket,)).fetchone()
                if cached is not None and cached[0] != ticket:
                    ids.append(str(cached[0]))
            return journal.search(c, ticket_ids=ids, since=since, until=until, limit=limit)

        return self._read(read, [])

    def actions(
        self, since: datetime | None = None, until: datetime | None = None, limit: int = 50
    ) -> list[TechActionView]:
        """Technicians' actions and logins at this gate, newest first, at `since` <= at < `until`."""
        return self._read(lambda c: technicians.actions(c, since=since, until=until, limit=limit), [])

    def technicians(self) -> dict[str, str]:
        """Login name -> argon2 hash of the cloud's technicians the gate holds."""
        return self._read(technicians.accounts, {})

    def has_technician_list(self) -> bool:
        return self._read(technicians.received, False)

    # --- outbox ----------------------------------------------------------------------------

    def outbox_depth(self) -> int:
        return self._read(outbox.depth, 0)

    def outbox_oldest_at(self) -> datetime | None:
        """The time of the oldest event waiting for the cloud (None: none waits)."""
        return self._read(outbox.oldest_at, None)

    def outbox(self, limit: int = 100) -> list[PassageEvent]:
        """The oldest events not yet confirmed by the cloud."""
        return self._read(lambda c: outbox.oldest(c, limit), [])

    def outbox_ids(self) -> list[uuid.UUID]:
        """Ids of every event waiting for the cloud, oldest first."""
        return self._read(
            lambda c: [uuid.UUID(r[0]) for r in c.execute("SELECT event_id FROM outbox ORDER BY seq")], []
        )

    # --- tickets, keys, feed ---------------------------------------------------------------

    def ticket_count(self) -> int:
        return self._read(tickets.count, 0)

    def ticket(self, ticket_id: str) -> Ticket | None:
        return self._read(lambda c: tickets.ticket(c, ticket_id), None)

    def has_ticket(self, ticket_id: str) -> bool:
        """Is this ticket in the cache (cheaper than reading it)?"""
        return self._read(lambda c: tickets.has(c, ticket_id), False)

    def status(self, ticket_id: str) -> TicketStatus | None:
        """A ticket's revocation or block (None: valid as far as the gate knows)."""
        return self._read(lambda c: tickets.status(c, ticket_id), None)

    def keys(self) -> dict[int, Ed25519PublicKey]:
        return self._read(tickets.keys, {})

    def ticket_checksum(self) -> str | None:
        """The checksum of the cached tickets with their effective status (None: no store yet)."""
        return self._read(lambda c: tickets.checksum(c), None)

    def face_templates(self) -> list[tuple[str, str, str]]:
        """(ticket id, holder id, sealed text) of every face template, in ticket-id order: still sealed."""
        return self._read(lambda c: list(faces.rows(c)), [])

    def meta(self, key: str) -> str | None:
        return self._read(lambda c: get_meta(c, key), None)

    def feed_seq(self) -> int:
        """The last feed sequence applied (0: never synced)."""
        value = self.meta(FEED_SEQ)
        return 0 if value is None else int(value)

    def has_feed_position(self) -> bool:
        """Has this store ever been synced (from a snapshot or the feed)?"""
        return self.meta(FEED_SEQ) is not None

    def feed_epoch(self) -> str | None:
        return self.meta(FEED_EPOCH)
