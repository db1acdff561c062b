"""What sync needs from the gate store: the feed position, applying changes, snapshots, peers.

Functions over a `GateStore`, called only by the store's owner (the daemon's event loop),
except `SnapshotStaging`, which fills a separate SQLite file from a worker thread so a large
snapshot never holds the store's write lock or the event loop while it downloads.

Each function that changes the store commits exactly once, so the caller can acknowledge the
MQTT message that carried the change right after it returns (acknowledge after commit).

Ticket status has one truth at the gate: a ticket's cached body carries the status the cloud
last sent, and `revocations` holds every ticket that is not valid (cached or not: a signed
ticket needs no cache entry to be revoked). The effective status the checksum covers is the
revocation's status if there is one, else the body's.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.store import GateStore
from models import PassageEvent, TicketStatus
from models.credential import load_public_key
from models.sync import (
    EVENT_CLOCK_SKEW,
    Change,
    GateConfigChange,
    GateRoster,
    KeySet,
    SnapshotStatus,
    StatusChange,
    TicketSetChecksum,
    TicketUpsert,
    implausible_time,
)

FEED_SEQ = "sync.feed_seq"
FEED_EPOCH = "sync.feed_epoch"
FRESH_AT = "sync.fresh_at"
GATE_CONFIG = "sync.gate_config"
GATE_ROSTER = "sync.gate_roster"
SNAPSHOT_CHECKSUM = "sync.snapshot_checksum"
REMOTE = "remote"  # resolution of a passage learnt from another gate of the site


class KeySetError(ValueError):
    """A key set that cannot be trusted (a key does not load)."""


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def feed_seq(store: GateStore) -> int:
    """The last feed sequence applied (0: never synced)."""
    value = store.get_meta(FEED_SEQ)
    return 0 if value is None else int(value)


def feed_epoch(store: GateStore) -> str | None:
    """The run of the cloud's feed this store follows (None: not known, e.g. synced before epochs)."""
    return store.get_meta(FEED_EPOCH)


def has_feed_position(store: GateStore) -> bool:
    """Has this store ever been synced (from a snapshot or the feed)?"""
    return store.get_meta(FEED_SEQ) is not None


def fresh_at(store: GateStore) -> datetime | None:
    """When the feed was last confirmed fresh, as persisted."""
    value = store.get_meta(FRESH_AT)
    return None if value is None else datetime.fromisoformat(value)


def gate_roster(store: GateStore) -> frozenset[str] | None:
    """The codes of the site's gates as the cloud last named them (None: never named, an older store)."""
    value = store.get_meta(GATE_ROSTER)
    return None if value is None else frozenset(json.loads(value))


def _set_roster(c: sqlite3.Connection, gates: Sequence[str]) -> None:
    _set_meta(c, GATE_ROSTER, json.dumps(sorted(gates)))


def save_fresh_at(store: GateStore, at: datetime) -> None:
    store.set_meta(FRESH_AT, _iso(at))


def _set_meta(c: sqlite3.Connection, key: str, value: str) -> None:
    c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def check_keys(keys: dict[int, str]) -> None:
    """Raise `KeySetError` unless every key loads (and there is at least one)."""
    if not keys:
        raise KeySetError("an empty key set would make every signed ticket unknown")
    for key_id, b64 in keys.items():
        try:
            load_public_key(b64)
        except ValueError as exc:
            raise KeySetError(f"key {key_id}: {exc}") from exc


def _replace_keys(c: sqlite3.Connection, keys: dict[int, str]) -> None:
    c.execute("DELETE FROM keys")
    c.executemany("INSERT INTO keys (key_id, public_key) VALUES (?, ?)", sorted(keys.items()))


def _set_status(c: sqlite3.Connection, ticket_id: str, status: TicketStatus, reason: str | None) -> None:
    if status is TicketStatus.VALID:
        c.execute("DELETE FROM revocations WHERE ticket_id = ?", (ticket_id,))
    elif reason is None:
        c.execute(
            "INSERT INTO revocations (ticket_id, status) VALUES (?, ?) "
            "ON CONFLICT (ticket_id) DO UPDATE SET status = excluded.status",
            (ticket_id, status.value),
        )
    else:
        c.execute(
            "INSERT OR REPLACE INTO revocations (ticket_id, status, reason) VALUES (?, ?, ?)",
            (ticket_id, status.value, reason),
        )


def apply_change(store: GateStore, change: Change, seq: int, *, gate: str, fresh: datetime) -> None:
    """Apply one feed change and record `seq` as applied, in one transaction.

    A key set whose keys do not load raises `KeySetError` before anything is written.
    `gate` names this gate: only its own gate config is kept.
    """
    if isinstance(change, KeySet):
        check_keys(change.keys)
    with store.conn as c:
        if isinstance(change, TicketUpsert):
            t = change.ticket
            # OR REPLACE: a plain code that moved to another ticket leaves the stale holder.
            c.execute(
                "INSERT OR REPLACE INTO tickets (ticket_id, code, body) VALUES (?, ?, ?)",
                (t.ticket_id, t.code, t.model_dump_json()),
            )
            _set_status(c, t.ticket_id, t.status, None)
        elif isinstance(change, StatusChange):
            _set_status(c, change.ticket_id, change.status, change.reason)
            c.execute(
                "UPDATE tickets SET body = json_set(body, '$.status', ?) WHERE ticket_id = ?",
                (change.status.value, change.ticket_id),
            )
        elif isinstance(change, KeySet):
            _replace_keys(c, change.keys)
        elif isinstance(change, GateConfigChange) and change.gate_id == gate:
            _set_meta(c, GATE_CONFIG, change.config.model_dump_json())
        elif isinstance(change, GateRoster):
            _set_roster(c, change.gates)
        _set_meta(c, FEED_SEQ, str(seq))
        _set_meta(c, FRESH_AT, _iso(fresh))


def skip_change(store: GateStore, seq: int, *, fresh: datetime) -> None:
    """Record `seq` as applied without applying its change (one that cannot be applied)."""
    with store.conn as c:
        _set_meta(c, FEED_SEQ, str(seq))
        _set_meta(c, FRESH_AT, _iso(fresh))


def _stream_checksum(rows: Iterable[tuple[str, str]]) -> str:
    # Rows come sorted by ticket id: SQLite's BINARY order on UTF-8 text is Python's code-point order.
    checksum = TicketSetChecksum()
    for ticket_id, status in rows:
        checksum.add(ticket_id, status)
    return checksum.hexdigest()


def ticket_checksum(store: GateStore) -> str:
    """`models.sync.ticket_set_checksum` of the cached tickets with their effective status."""
    return _checksum_of(store.conn)


def _checksum_of(conn: sqlite3.Connection) -> str:
    rows: Iterator[tuple[str, str]] = conn.execute(
        "SELECT t.ticket_id, COALESCE(r.status, json_extract(t.body, '$.status'), 'valid') "
        "FROM tickets t LEFT JOIN revocations r ON r.ticket_id = t.ticket_id ORDER BY t.ticket_id"
    )
    return _stream_checksum(rows)


def read_checksum(db: Path) -> tuple[int, str] | None:
    """(feed seq, ticket checksum) of the store file at `db`, read together in one read transaction
    on a connection of its own, so a worker thread can sum a million tickets while the gate goes on
    writing (WAL). None: never synced."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        conn.execute("BEGIN")
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (FEED_SEQ,)).fetchone()
        return None if row is None else (int(row[0]), _checksum_of(conn))


class SnapshotError(Exception):
    """A snapshot that cannot be used: malformed, inconsistent with its header, or not received."""


class SnapshotStaging:
    """A snapshot's tickets and statuses in a scratch SQLite file, filled by the caller's thread.

    The file has no journal and is never synced: it is thrown away unless its checksum holds.
    Its tickets have no key either: ids and codes are unique in the store, which refuses a
    staged set that repeats one when it is installed. Tickets come in id order, so their
    checksum is summed as they come; it is the set's unless a status line changes a ticket's
    status (then the staged set is read again).
    """

    BATCH = 5000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tickets = 0
        self.statuses = 0
        self._checksum: TicketSetChecksum | None = TicketSetChecksum()
        self._statuses: list[tuple[str, str]] = []
        self._conn = sqlite3.connect(path)
        try:
            self._conn.executescript(
                """
                PRAGMA page_size=65536;
                PRAGMA journal_mode=OFF;
                PRAGMA synchronous=OFF;
                CREATE TABLE tickets (ticket_id TEXT NOT NULL, code TEXT, status TEXT NOT NULL, body TEXT NOT NULL);
                CREATE TABLE statuses (ticket_id TEXT PRIMARY KEY, status TEXT NOT NULL);
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

    def finish(self) -> str:
        """Write what is pending, let status lines override ticket bodies; the set's checksum."""
        if self._statuses:
            self._insert("statuses", self._statuses)
            self._statuses = []
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
            return _stream_checksum(conn.execute("SELECT ticket_id, status FROM tickets ORDER BY ticket_id"))
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
) -> None:
    """Replace tickets, statuses, (non-empty) keys and (given) gate roster by a staged snapshot, in one
    transaction.

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
            c.execute("INSERT INTO tickets (ticket_id, code, body) SELECT ticket_id, code, body FROM snap.tickets")
            c.execute(
                "INSERT INTO revocations (ticket_id, status) SELECT ticket_id, status FROM snap.tickets "
                "WHERE status != 'valid'"
            )
            c.execute(
                "INSERT OR IGNORE INTO revocations (ticket_id, status) SELECT ticket_id, status FROM snap.statuses "
                "WHERE status != 'valid'"
            )
            if keys:
                _replace_keys(c, keys)
            _set_meta(c, FEED_SEQ, str(seq))
            _set_meta(c, FEED_EPOCH, epoch)
            _set_meta(c, FRESH_AT, _iso(fresh))
            _set_meta(c, SNAPSHOT_CHECKSUM, checksum)
            if gates is not None:
                _set_roster(c, gates)
    except sqlite3.IntegrityError as exc:  # the staged tickets have no keys of their own
        raise SnapshotError(f"snapshot lists a ticket id or code twice: {exc}") from exc
    finally:
        c.execute("DETACH DATABASE snap")


def apply_batch(
    store: GateStore,
    *,
    acknowledged: Iterable[uuid.UUID] = (),
    remote: Iterable[PassageEvent] = (),
    now: datetime,
) -> list[tuple[PassageEvent, str]]:
    """In one transaction: drop events the cloud confirmed from the outbox, and journal other
    gates' completed passages so decisions here count them (never into the outbox).

    An event that is no completed passage of a ticket is skipped; one already known is kept once.
    One whose time cannot be true by this gate's clock `now` is not recorded (an event dated 2099
    would answer `passback` until 2099): dated out of `models.sync.implausible_time`'s bounds, or a
    counted entry dated before its cached ticket became valid (less the clock skew). Those are
    returned, each with why ("future", "too_old", "before_validity").
    """
    passages = [e for e in remote if e.passed and e.ticket_id is not None]
    starts = _valid_from(store, {e.ticket_id for e in passages if e.counted and e.ticket_id is not None})
    refused: list[tuple[PassageEvent, str]] = []
    rows = []
    for e in passages:
        start = starts.get(e.ticket_id or "") if e.counted else None
        why: str | None = implausible_time(e.at, now)
        if why is None and start is not None and e.at < start - EVENT_CLOCK_SKEW:
            why = "before_validity"
        if why is not None:
            refused.append((e, why))
            continue
        rows.append(
            (
                str(e.event_id),
                _iso(e.at),
                e.gate_id,
                e.site_id,
                e.direction.value,
                e.ticket_id,
                e.credential,
                e.outcome.value,
                e.code,
                int(e.counted),
                REMOTE,
            )
        )
    with store.conn as c:
        c.executemany("DELETE FROM outbox WHERE event_id = ?", [(str(e),) for e in acknowledged])
        c.executemany(
            "INSERT OR IGNORE INTO passages (event_id, at, gate_id, site_id, direction, ticket_id, credential, "
            "outcome, code, passed, counted, resolution) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
            rows,
        )
    return refused


def _valid_from(store: GateStore, ticket_ids: set[str]) -> dict[str, datetime]:
    """When each of these cached tickets becomes valid (tickets not cached are left out)."""
    ids = sorted(ticket_ids)
    found: dict[str, datetime] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        rows = store.conn.execute(
            "SELECT ticket_id, json_extract(body, '$.valid_from') FROM tickets "
            f"WHERE ticket_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        found.update({ticket_id: datetime.fromisoformat(at) for ticket_id, at in rows if at is not None})
    return found


def outbox_after(store: GateStore, after: int, limit: int) -> list[tuple[int, str, str]]:
    """(outbox seq, event id, event JSON) of the oldest events queued after `after`."""
    rows = store.conn.execute(
        "SELECT seq, event_id, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
    ).fetchall()
    return [(int(s), str(e), str(b)) for s, e, b in rows]
