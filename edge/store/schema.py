"""The gate store's SQLite schema and how its file is opened (WAL, synchronous=FULL).

`technicians` holds the cloud's gate technicians (login name, argon2 hash) as the feed last sent
them, `tech_actions` what they did at this gate (and their logins). `face_templates` holds each season
pass's face template exactly as the feed carried it: sealed (`models.face`) under the site's face key,
which is never in this file. Columns added after a release (`ADDED`) are added to an older store's
tables when it is opened.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

# The ticket cache's columns and keys; a snapshot is staged in a table made alike, then renamed to this one.
TICKETS_COLUMNS = "ticket_id TEXT PRIMARY KEY, code TEXT UNIQUE, body TEXT NOT NULL"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tickets ({TICKETS_COLUMNS});
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
    resolution TEXT,
    face_distance REAL
);
CREATE INDEX IF NOT EXISTS passages_ticket ON passages (ticket_id, at);
CREATE INDEX IF NOT EXISTS passages_pending ON passages (passed) WHERE passed IS NULL;
-- the technician page's journal search by time, newest first: this gate's own decisions only
CREATE INDEX IF NOT EXISTS passages_own_at ON passages (at) WHERE resolution IS NOT 'remote';
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS face_templates (
    ticket_id TEXT PRIMARY KEY,
    holder_id TEXT NOT NULL,
    sealed TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS technicians (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tech_actions (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    username TEXT NOT NULL,
    action TEXT NOT NULL,
    justification TEXT NOT NULL DEFAULT '',
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS tech_actions_at ON tech_actions (at);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


# (table, column, its declaration): columns a store made by an older release lacks
ADDED = (("passages", "face_distance", "REAL"),)


def _add_columns(conn: sqlite3.Connection) -> None:
    for table, column, decl in ADDED:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


class StoreError(Exception):
    """The store file cannot be opened or is not a Starfish gate store."""


def open_store(path: str) -> sqlite3.Connection:
    """Open (creating if need be) the gate store at `path` for writing."""
    try:
        conn = sqlite3.connect(path, timeout=5.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # A deleted face template's sealed bytes are zeroed where that costs no extra write (FAST): what the
        # cloud asked the gate to delete does not wait in free pages for the next VACUUM.
        conn.execute("PRAGMA secure_delete=FAST")
        conn.executescript(SCHEMA)
        with conn:
            _add_columns(conn)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open gate store {path}: {exc}") from exc
    return conn


def time_window(where: list[str], params: list[object], since: datetime | None, until: datetime | None) -> None:
    """Add `since <= at < until` (either end open when None) to a query's conditions and parameters."""
    if since is not None:
        where.append("at >= ?")
        params.append(iso(since))
    if until is not None:
        where.append("at < ?")
        params.append(iso(until))


def iso(dt: datetime) -> str:
    """A time as the store keeps it: UTC, microseconds, so text order is time order."""
    if dt.tzinfo is None:
        raise ValueError("journal times must be timezone-aware")
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def set_meta(c: sqlite3.Connection, key: str, value: str) -> None:
    c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def get_meta(c: sqlite3.Connection, key: str) -> str | None:
    row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])
