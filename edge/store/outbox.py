"""The outbox: events of this gate waiting until the cloud confirms it stored them."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from datetime import datetime

from models import PassageEvent


def enqueue(c: sqlite3.Connection, event: PassageEvent) -> None:
    """Queue an event in the caller's transaction (once, however often it is queued)."""
    c.execute(
        "INSERT OR IGNORE INTO outbox (event_id, body) VALUES (?, ?)", (str(event.event_id), event.model_dump_json())
    )


def oldest(conn: sqlite3.Connection, limit: int) -> list[PassageEvent]:
    """The oldest events not yet confirmed by the cloud."""
    rows = conn.execute("SELECT body FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
    return [PassageEvent.model_validate_json(r[0]) for r in rows]


def after(conn: sqlite3.Connection, seq: int, limit: int) -> list[tuple[int, str, str]]:
    """(outbox seq, event id, event JSON) of the oldest events queued after `seq`."""
    rows = conn.execute(
        "SELECT seq, event_id, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
    ).fetchall()
    return [(int(s), str(e), str(b)) for s, e, b in rows]


def depth(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


def oldest_at(conn: sqlite3.Connection) -> datetime | None:
    """The time of the event queued first (events are queued in about the order they happen); None: empty."""
    row = conn.execute("SELECT json_extract(body, '$.at') FROM outbox ORDER BY seq LIMIT 1").fetchone()
    return None if row is None or row[0] is None else datetime.fromisoformat(row[0])


def acknowledge(c: sqlite3.Connection, event_ids: Iterable[uuid.UUID]) -> None:
    """Remove, in the caller's transaction, events the cloud confirmed it stored."""
    c.executemany("DELETE FROM outbox WHERE event_id = ?", [(str(e),) for e in event_ids])
