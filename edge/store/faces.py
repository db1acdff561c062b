"""Face templates at the gate: one per season pass, sealed text exactly as the feed carried it.

The store never opens a template: the site's face key is in the gate's config (a file or an
environment variable), never in its SQLite file. The gate's matcher reads the rows with `all_faces`
at start-up and opens them into memory; the feed keeps the table in step (`edge.store.feed`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.store.gate_store import GateStore


def put(c: sqlite3.Connection, ticket_id: str, holder_id: str, sealed: str) -> None:
    """Keep a pass's template, replacing any earlier one (a re-enrolled face, another holder)."""
    c.execute(
        "INSERT OR REPLACE INTO face_templates (ticket_id, holder_id, sealed) VALUES (?, ?, ?)",
        (ticket_id, holder_id, sealed),
    )


def delete(c: sqlite3.Connection, ticket_id: str) -> bool:
    """Delete a pass's template; False when there was none."""
    return c.execute("DELETE FROM face_templates WHERE ticket_id = ?", (ticket_id,)).rowcount > 0


def rows(conn: sqlite3.Connection) -> Iterator[tuple[str, str, str]]:
    """(ticket id, holder id, sealed) of every template, in ticket-id order (the checksum's)."""
    yield from conn.execute("SELECT ticket_id, holder_id, sealed FROM face_templates ORDER BY ticket_id")


def all_faces(store: GateStore) -> Iterator[tuple[str, str, str]]:
    """(ticket id, holder id, sealed) of every template in the store, in ticket-id order.

    Read through the store's own connection: iterate it to the end before the store changes.
    """
    return rows(store.conn)


def count(store: GateStore) -> int:
    """How many face templates the store holds."""
    return int(store.conn.execute("SELECT count(*) FROM face_templates").fetchone()[0])
