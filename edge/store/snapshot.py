"""A snapshot of the site's tickets and face templates: staged in a scratch file off the event loop,
then installed at once.

`SnapshotStaging` fills a separate SQLite file from a worker thread so a large snapshot never holds
the store's write lock or the event loop while it downloads; `install_snapshot` swaps it in, in one
transaction, on the store owner's thread. `read_checksum` sums the store from another thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.store import technicians as tech_accounts
from edge.store import tickets
from edge.store.feed import FEED_EPOCH, FEED_SEQ, FRESH_AT, SNAPSHOT_CHECKSUM, check_keys, set_roster
from edge.store.gate_store import GateStore
from edge.store.schema import iso, set_meta
from models.ops import TechnicianAccount
from models.sync import SnapshotFace, SnapshotStatus, TicketSetChecksum
from sync.errors import SnapshotError


def read_checksum(db: Path) -> tuple[int, str] | None:
    """(feed seq, ticket-set checksum, faces included) of the store file at `db`, read together in one read transaction
    on a connection of its own, so a worker thread can sum a million tickets while the gate goes on
    writing (WAL). None: never synced."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        conn.execute("BEGIN")
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (FEED_SEQ,)).fetchone()
        return None if row is None else (int(row[0]), tickets.checksum(conn))


class SnapshotStaging:
    """A snapshot's tickets, statuses and face templates in a scratch SQLite file, filled by the caller's thread.

    The file has no journal and is never synced: it is thrown away unless its checksum holds.
    Its tickets have no key either: ids and codes are unique in the store, which refuses a
    staged set that repeats one when it is installed. Tickets come in id order, so their
    checksum is summed as they come; it is the set's unless a status line changes a ticket's
    status, or face templates come out of order (then the staged set is read again). Face
    templates stay sealed as received.
    """

    BATCH = 5000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tickets = 0
        self.statuses = 0
        self.faces = 0
        self._checksum: TicketSetChecksum | None = TicketSetChecksum()
        self._statuses: list[tuple[str, str]] = []
        self._faces: list[tuple[str, str, str]] = []
        self._conn = sqlite3.connect(path)
        try:
            self._conn.executescript(
                """
                PRAGMA page_size=65536;
                PRAGMA journal_mode=OFF;
                PRAGMA synchronous=OFF;
                CREATE TABLE tickets (ticket_id TEXT NOT NULL, code TEXT, status TEXT NOT NULL, body TEXT NOT NULL);
                CREATE TABLE statuses (ticket_id TEXT PRIMARY KEY, status TEXT NOT NULL);
                CREATE TABLE faces (ticket_id TEXT NOT NULL, holder_id TEXT NOT NULL, sealed TEXT NOT NULL);
                """
            )
        except sqlite3.Error as exc:
            self._conn.close()
            raise SnapshotError(f"cannot stage the snapshot: {exc}") from exc

    def _insert(self, table: str, rows: list[Any]) -> None:
        try:
            with self._conn:
                self._conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        except sqlite3.IntegrityError as exc:
            raise SnapshotError(f"snapshot lists a ticket's status twice: {exc}") from exc
        except sqlite3.Error as exc:
            raise SnapshotError(f"cannot stage the snapshot: {exc}") from exc

    def add_tickets(self, rows: list[tuple[str, str | None, str, str]]) -> None:
        """Stage tickets: (ticket id, code, status, its JSON as received), each validated as a `Ticket`."""
        if self._checksum is not None:
            add = self._checksum.add
            try:
                for ticket_id, _, status, _ in rows:
                    add(ticket_id, status)
            except ValueError:  # out of order (or a duplicate, which the install refuses): sum them later
                self._checksum = None
        self.tickets += len(rows)
        if rows:
            self._insert("tickets", rows)

    def add_status(self, status: SnapshotStatus) -> None:
        self._statuses.append((status.ticket_id, status.status.value))
        self.statuses += 1
        if len(self._statuses) >= self.BATCH:
            self._insert("statuses", self._statuses)
            self._statuses = []

    def add_face(self, face: SnapshotFace) -> None:
        if self._checksum is not None:
            try:
                self._checksum.add_face(face.ticket_id, face.holder_id, face.sealed)
            except ValueError:  # out of order (or repeated, which the install refuses): sum them later
                self._checksum = None
        self._faces.append((face.ticket_id, face.holder_id, face.sealed))
        self.faces += 1
        if len(self._faces) >= self.BATCH:
            self._insert("faces", self._faces)
            self._faces = []

    def finish(self) -> str:
        """Write what is pending, let status lines override ticket bodies; the set's checksum."""
        if self._statuses:
            self._insert("statuses", self._statuses)
            self._statuses = []
        if self._faces:
            self._insert("faces", self._faces)
            self._faces = []
        conn = self._conn
        changed = 0
        if self.statuses:
            with conn:
                changed = conn.execute(
                    "UPDATE tickets SET status = s.status, body = json_set(tickets.body, '$.status', s.status) "
                    "FROM statuses s WHERE s.ticket_id = tickets.ticket_id AND s.status != tickets.status"
                ).rowcount
        if self._checksum is not None and changed == 0:
            return self._checksum.hexdigest()
        try:
            return tickets.stream_checksum(
                conn.execute("SELECT ticket_id, status FROM tickets ORDER BY ticket_id"),
                conn.execute("SELECT ticket_id, holder_id, sealed FROM faces ORDER BY ticket_id"),
            )
        except ValueError as exc:  # sorted, so only a repeated id is out of order
            raise SnapshotError(f"snapshot lists a ticket id twice: {exc}") from exc

    def close(self) -> None:
        """Close the file (whatever happened); it stays for `install_snapshot`."""
        self._conn.close()


def install_snapshot(
    store: GateStore,
    staging: Path,
    *,
    seq: int,
    keys: dict[int, str],
    checksum: str,
    fresh: datetime,
    epoch: str = "",
    gates: Sequence[str] | None = None,
    technicians: Sequence[TechnicianAccount] | None = None,
) -> None:
    """Replace tickets, statuses, face templates, (non-empty) keys, (given) gate roster and (given)
    technician list by a staged snapshot, in one transaction (a snapshot without face lines leaves no
    template: an older cloud's; one without a technician list keeps the gate's).

    The staging file must be finished and closed; a set that repeats a ticket id or code raises
    `SnapshotError` and changes nothing. An empty key set keeps the current keys: a gate that
    trusts no key at all would turn every signed ticket away.
    """
    if keys:
        check_keys(keys)
    c = store.conn
    if c.in_transaction:
        raise RuntimeError("install_snapshot needs the store outside a transaction")
    c.execute("ATTACH DATABASE ? AS snap", (str(staging),))
    try:
        with c:
            c.execute("DELETE FROM tickets")
            c.execute("DELETE FROM revocations")
            c.execute("DELETE FROM face_templates")
            # Handhelds' verifications are in the snapshot's counts (entries_used, first_entry_at); journaled as
            # well they would count twice, and one whose undo this gate missed would count for ever.
            c.execute("DELETE FROM passages WHERE resolution IS 'remote' AND gate_id LIKE 'handheld:%'")
            c.execute("INSERT INTO tickets (ticket_id, code, body) SELECT ticket_id, code, body FROM snap.tickets")
            c.execute(
                "INSERT INTO revocations (ticket_id, status) SELECT ticket_id, status FROM snap.tickets "
                "WHERE status != 'valid'"
            )
            c.execute(
                "INSERT OR IGNORE INTO revocations (ticket_id, status) SELECT ticket_id, status FROM snap.statuses "
                "WHERE status != 'valid'"
            )
            c.execute(
                "INSERT INTO face_templates (ticket_id, holder_id, sealed) SELECT ticket_id, holder_id, sealed "
                "FROM snap.faces"
            )
            if keys:
                tickets.replace_keys(c, keys)
            set_meta(c, FEED_SEQ, str(seq))
            set_meta(c, FEED_EPOCH, epoch)
            set_meta(c, FRESH_AT, iso(fresh))
            set_meta(c, SNAPSHOT_CHECKSUM, checksum)
            if gates is not None:
                set_roster(c, gates)
            if technicians is not None:
                tech_accounts.replace(c, technicians)
    except sqlite3.IntegrityError as exc:  # the staged tickets have no keys of their own
        what = "a face template's ticket id" if "face_templates" in str(exc) else "a ticket id or code"
        raise SnapshotError(f"snapshot lists {what} twice: {exc}") from exc
    finally:
        c.execute("DETACH DATABASE snap")
