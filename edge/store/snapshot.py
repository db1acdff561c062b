"""A snapshot of the site's tickets and face templates: staged beside the live tables off the event loop,
then swapped in at once.

`SnapshotStaging` fills tables of their own (`staged_*`) in the store's file from a worker thread, a
short transaction per batch, so a large snapshot never holds the store's write lock for long nor the
event loop while it downloads. `staged_tickets` is made exactly as `tickets`, keys included, so
`install_snapshot` need not copy a million rows on the event loop: in one transaction it drops the old
ticket table and renames the staged one in its place (a few pages), then replaces revocations, face
templates and the rest. A crash while staging leaves the live tables as they were and staged tables
that the next snapshot drops before it starts; a crash during the install rolls it back whole.
`read_checksum` sums the store from another thread.
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
from edge.store.feed import FEED_EPOCH, FEED_SEQ, FRESH_AT, SNAPSHOT_CHECKSUM, check_keys, put_cloud_rules, set_roster
from edge.store.gate_store import GateStore
from edge.store.schema import TICKETS_COLUMNS, iso, set_meta
from models import GateConfig
from models.ops import TechnicianAccount
from models.sync import SnapshotFace, SnapshotStatus, TicketSetChecksum
from sync.errors import SnapshotError

STAGED = ("staged_tickets", "staged_revocations", "staged_statuses", "staged_faces")
_VALID = "valid"
_ROWS = 100  # rows per INSERT statement: one statement per row costs more than the row


def read_checksum(db: Path) -> tuple[int, str] | None:
    """(feed seq, ticket-set checksum, faces included) of the store file at `db`, read together in one read transaction
    on a connection of its own, so a worker thread can sum a million tickets while the gate goes on
    writing (WAL). None: never synced."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        conn.execute("BEGIN")
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (FEED_SEQ,)).fetchone()
        return None if row is None else (int(row[0]), tickets.checksum(conn))


class SnapshotStaging:
    """A snapshot's tickets, statuses and face templates in the `staged_*` tables of the store file at `path`,
    filled by the caller's thread (its own connection; the store's owner goes on using the store).

    Tickets go straight into `staged_tickets`, keyed as `tickets` is: a snapshot that repeats a ticket
    id or code is refused here, before anything is installed. Tickets come in id order, so their
    checksum is summed as they come; it is the set's unless a status line changes a ticket's status,
    or tickets or face templates come out of order (then the staged set is read again). Face
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
        self._finished = False
        self._conn = sqlite3.connect(path, timeout=60.0)
        try:
            # The WAL stays consistent without a sync per batch; what is staged need not survive a crash.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA cache_size=-16384")  # 16 MB: the code index takes codes in any order
            self._conn.execute("PRAGMA secure_delete=FAST")  # as the store's own connection
            for table in STAGED:  # what a crash or a refused snapshot left
                self._conn.execute(f"DROP TABLE IF EXISTS {table}")
            self._conn.executescript(
                f"""
                CREATE TABLE staged_tickets ({TICKETS_COLUMNS});
                CREATE TABLE staged_revocations (ticket_id TEXT PRIMARY KEY, status TEXT NOT NULL);
                CREATE TABLE staged_statuses (ticket_id TEXT PRIMARY KEY, status TEXT NOT NULL);
                CREATE TABLE staged_faces (ticket_id TEXT NOT NULL, holder_id TEXT NOT NULL, sealed TEXT NOT NULL);
                """
            )
        except sqlite3.Error as exc:
            self._conn.close()
            raise SnapshotError(f"cannot stage the snapshot: {exc}") from exc

    def _insert(self, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert `rows` in one transaction, `_ROWS` to a statement."""
        width = columns.count(",") + 1
        flat = [value for row in rows for value in row]
        one = "(" + ",".join("?" * width) + ")"
        step = width * _ROWS
        full = len(flat) - len(flat) % step
        try:
            with self._conn:
                if full:
                    many = f"INSERT INTO {table} ({columns}) VALUES " + ",".join([one] * _ROWS)
                    for at in range(0, full, step):
                        self._conn.execute(many, flat[at : at + step])
                if full < len(flat):
                    rest = (len(flat) - full) // width
                    sql = f"INSERT INTO {table} ({columns}) VALUES " + ",".join([one] * rest)
                    self._conn.execute(sql, flat[full:])
        except sqlite3.IntegrityError as exc:
            what = {"staged_tickets.code": "ticket code", "staged_statuses.ticket_id": "ticket's status"}
            twice = next((name for key, name in what.items() if key in str(exc)), "ticket id")
            raise SnapshotError(f"snapshot lists a {twice} twice: {exc}") from exc
        except sqlite3.Error as exc:
            raise SnapshotError(f"cannot stage the snapshot: {exc}") from exc

    def add_tickets(self, rows: list[tuple[str, str | None, str, str]]) -> None:
        """Stage tickets: (ticket id, code, status, its JSON as received), each validated as a `Ticket`."""
        if not rows:
            return
        statuses = [row[2] for row in rows]
        if self._checksum is not None:
            try:
                self._checksum.add_many([row[0] for row in rows], statuses)
            except ValueError:  # out of order (or a duplicate, which the table refuses): sum them later
                self._checksum = None
        self.tickets += len(rows)
        self._insert("staged_tickets", "ticket_id, code, body", [(i, code, line) for i, code, _, line in rows])
        if statuses.count(_VALID) != len(statuses):
            not_valid = [(row[0], row[2]) for row in rows if row[2] != _VALID]
            self._insert("staged_revocations", "ticket_id, status", not_valid)

    def add_status(self, status: SnapshotStatus) -> None:
        self._statuses.append((status.ticket_id, status.status.value))
        self.statuses += 1
        if len(self._statuses) >= self.BATCH:
            self._insert("staged_statuses", "ticket_id, status", self._statuses)
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
            self._insert("staged_faces", "ticket_id, holder_id, sealed", self._faces)
            self._faces = []

    def finish(self) -> str:
        """Write what is pending, let status lines override ticket bodies; the set's checksum."""
        if self._statuses:
            self._insert("staged_statuses", "ticket_id, status", self._statuses)
            self._statuses = []
        if self._faces:
            self._insert("staged_faces", "ticket_id, holder_id, sealed", self._faces)
            self._faces = []
        conn = self._conn
        changed = 0
        if self.statuses:
            with conn:
                changed = conn.execute(
                    "UPDATE staged_tickets SET body = json_set(staged_tickets.body, '$.status', s.status) "
                    "FROM staged_statuses s WHERE s.ticket_id = staged_tickets.ticket_id "
                    "AND s.status IS NOT json_extract(staged_tickets.body, '$.status')"
                ).rowcount
                conn.execute("INSERT OR REPLACE INTO staged_revocations SELECT ticket_id, status FROM staged_statuses")
                conn.execute("DELETE FROM staged_revocations WHERE status = ?", (_VALID,))
        # Leave a short WAL behind: the next commit of the store's owner would otherwise copy it back, on its loop.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if self._checksum is not None and changed == 0:
            self._finished = True
            return self._checksum.hexdigest()
        try:
            checksum = tickets.stream_checksum(
                conn.execute("SELECT ticket_id, json_extract(body, '$.status') FROM staged_tickets ORDER BY ticket_id"),
                conn.execute("SELECT ticket_id, holder_id, sealed FROM staged_faces ORDER BY ticket_id"),
            )
        except ValueError as exc:  # sorted, so only a repeated face template id is out of order
            raise SnapshotError(f"snapshot lists a face template's ticket id twice: {exc}") from exc
        self._finished = True
        return checksum

    def close(self) -> None:
        """Close the connection (whatever happened): a finished staging stays for `install_snapshot`, any other
        is dropped (a refused snapshot is never installed)."""
        try:
            if not self._finished:
                with contextlib.suppress(sqlite3.Error):
                    for table in STAGED:
                        self._conn.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            self._conn.close()


def install_snapshot(
    store: GateStore,
    *,
    seq: int,
    keys: dict[int, str],
    checksum: str,
    fresh: datetime,
    epoch: str = "",
    gates: Sequence[str] | None = None,
    technicians: Sequence[TechnicianAccount] | None = None,
    gate_config: GateConfig | None = None,
) -> None:
    """Replace tickets, statuses, face templates, (non-empty) keys, (given) gate roster, (given)
    technician list and the cloud's rules for this gate by the snapshot staged in the store's file, in one
    transaction (a snapshot without face lines leaves no template: an older cloud's; one without a
    technician list keeps the gate's).

    `gate_config` is the header's (`SnapshotHeader.gate_config`): None means the cloud holds no rules for
    this gate, so any stored ones are cleared and the file's rules are in force again. They are written in
    the same transaction as the ticket swap and the feed position: a crash between the two would leave
    the old rules (say, a keep-open) at the new feed seq, and their withdrawal, older than that seq, would
    never come again.

    The staging must be finished and closed; a set that repeats a face template's ticket id raises
    `SnapshotError` and changes nothing. An empty key set keeps the current keys: a gate that
    trusts no key at all would turn every signed ticket away.
    """
    if keys:
        check_keys(keys)
    c = store.conn
    if c.in_transaction:
        raise RuntimeError("install_snapshot needs the store outside a transaction")
    try:
        with c:
            c.execute("BEGIN IMMEDIATE")  # the DDL below is part of the transaction, not autocommitted
            c.execute("DROP TABLE tickets")
            c.execute("ALTER TABLE staged_tickets RENAME TO tickets")  # its keys' indexes follow it
            c.execute("DELETE FROM revocations")
            c.execute("INSERT INTO revocations (ticket_id, status) SELECT ticket_id, status FROM staged_revocations")
            c.execute("DELETE FROM face_templates")
            # Handhelds' verifications are in the snapshot's counts (entries_used, first_entry_at); journaled as
            # well they would count twice, and one whose undo this gate missed would count for ever.
            c.execute("DELETE FROM passages WHERE resolution IS 'remote' AND gate_id LIKE 'handheld:%'")
            c.execute(
                "INSERT INTO face_templates (ticket_id, holder_id, sealed) SELECT ticket_id, holder_id, sealed "
                "FROM staged_faces"
            )
            for table in STAGED[1:]:
                c.execute(f"DROP TABLE {table}")
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
            put_cloud_rules(c, gate_config, fresh)
    except sqlite3.IntegrityError as exc:
        raise SnapshotError(f"snapshot lists a face template's ticket id twice: {exc}") from exc
    except sqlite3.OperationalError as exc:
        if "no such table: staged_" not in str(exc):
            raise
        raise SnapshotError("no snapshot is staged in this store") from exc
