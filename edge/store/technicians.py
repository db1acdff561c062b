"""The cloud's gate technicians as this gate holds them, and what they did here (`tech_actions`).

The list arrives whole (a `models.sync.Technicians` feed change, or a snapshot header) and replaces
the last one; meta `technicians_received` says a list has arrived at least once, even an empty one:
from then on the config's break-glass account no longer opens the technician page. Functions over a
connection, in the caller's transaction where they write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from edge.store.schema import get_meta, iso, set_meta, time_window
from edge.web.port import TechActionView
from models.ops import TechnicianAccount

TECHNICIANS_RECEIVED = "technicians_received"


def replace(c: sqlite3.Connection, accounts: Sequence[TechnicianAccount]) -> None:
    """The technician list becomes `accounts` (in the caller's transaction)."""
    c.execute("DELETE FROM technicians")
    c.executemany(
        "INSERT OR REPLACE INTO technicians (username, password_hash) VALUES (?, ?)",
        [(a.username, a.password_hash) for a in accounts],
    )
    set_meta(c, TECHNICIANS_RECEIVED, "1")


def accounts(conn: sqlite3.Connection) -> dict[str, str]:
    """Login name -> argon2 hash of every technician the gate holds."""
    return {str(u): str(h) for u, h in conn.execute("SELECT username, password_hash FROM technicians")}


def received(conn: sqlite3.Connection) -> bool:
    """Has a technician list ever arrived from the cloud?"""
    return get_meta(conn, TECHNICIANS_RECEIVED) == "1"


def record_action(
    c: sqlite3.Connection, username: str, action: str, justification: str, ok: bool, detail: str, at: datetime
) -> int:
    """Journal one technician action (in the caller's transaction); its id."""
    cur = c.execute(
        "INSERT INTO tech_actions (at, username, action, justification, ok, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (iso(at), username, action, justification, int(ok), detail),
    )
    return int(cur.lastrowid or 0)


def actions(
    conn: sqlite3.Connection, *, since: datetime | None, until: datetime | None, limit: int
) -> list[TechActionView]:
    """Technician actions at `since` <= at < `until`, newest first."""
    where: list[str] = ["1"]
    params: list[object] = []
    time_window(where, params, since, until)
    rows = conn.execute(
        "SELECT id, at, username, action, justification, ok, detail FROM tech_actions "
        f"WHERE {' AND '.join(where)} ORDER BY at DESC, id DESC LIMIT ?",
        (*params, limit),
    )
    return [
        TechActionView(
            id=int(i),
            at=datetime.fromisoformat(at),
            username=str(u),
            action=str(a),
            justification=str(j),
            ok=bool(ok),
            detail=str(d),
        )
        for i, at, u, a, j, ok, d in rows
    ]
