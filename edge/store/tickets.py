"""The ticket cache, revocations and trusted keys, and the checksum of the ticket set (with faces).

Ticket status has one truth at the gate: a ticket's cached body carries the status the cloud
last sent, and `revocations` holds every ticket that is not valid (cached or not: a signed
ticket needs no cache entry to be revoked). The effective status the checksum covers is the
revocation's status if there is one, else the body's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.store import faces
from models import Ticket, TicketStatus
from models.credential import load_public_key
from models.sync import TicketSetChecksum


def ticket(conn: sqlite3.Connection, ticket_id: str) -> Ticket | None:
    row = conn.execute("SELECT body FROM tickets WHERE ticket_id = ?", (ticket_id,)).fetchone()
    return None if row is None else Ticket.model_validate_json(row[0])


def ticket_by_code(conn: sqlite3.Connection, code: str) -> Ticket | None:
    row = conn.execute("SELECT body FROM tickets WHERE code = ?", (code,)).fetchone()
    return None if row is None else Ticket.model_validate_json(row[0])


def has(conn: sqlite3.Connection, ticket_id: str) -> bool:
    return conn.execute("SELECT 1 FROM tickets WHERE ticket_id = ?", (ticket_id,)).fetchone() is not None


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM tickets").fetchone()[0])


def put(c: sqlite3.Connection, t: Ticket) -> None:
    """Cache a ticket from the feed; a plain code that moved to another ticket leaves its stale holder."""
    c.execute(
        "INSERT OR REPLACE INTO tickets (ticket_id, code, body) VALUES (?, ?, ?)",
        (t.ticket_id, t.code, t.model_dump_json()),
    )


def set_body_status(c: sqlite3.Connection, ticket_id: str, status: TicketStatus) -> None:
    c.execute("UPDATE tickets SET body = json_set(body, '$.status', ?) WHERE ticket_id = ?", (status.value, ticket_id))


def status(conn: sqlite3.Connection, ticket_id: str) -> TicketStatus | None:
    row = conn.execute("SELECT status FROM revocations WHERE ticket_id = ?", (ticket_id,)).fetchone()
    return None if row is None else TicketStatus(row[0])


def set_status(c: sqlite3.Connection, ticket_id: str, status: TicketStatus, reason: str | None) -> None:
    """Revoke or block a ticket (even one not cached); VALID lifts it. A reason of None keeps the stored one."""
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


def keys(conn: sqlite3.Connection) -> dict[int, Ed25519PublicKey]:
    return {int(k): load_public_key(v) for k, v in conn.execute("SELECT key_id, public_key FROM keys")}


def replace_keys(c: sqlite3.Connection, keys: dict[int, str]) -> None:
    c.execute("DELETE FROM keys")
    c.executemany("INSERT INTO keys (key_id, public_key) VALUES (?, ?)", sorted(keys.items()))


def valid_from(conn: sqlite3.Connection, ticket_ids: set[str]) -> dict[str, datetime]:
    """When each of these cached tickets becomes valid (tickets not cached are left out)."""
    ids = sorted(ticket_ids)
    found: dict[str, datetime] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        rows = conn.execute(
            "SELECT ticket_id, json_extract(body, '$.valid_from') FROM tickets "
            f"WHERE ticket_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        found.update({ticket_id: datetime.fromisoformat(at) for ticket_id, at in rows if at is not None})
    return found


def stream_checksum(rows: Iterable[tuple[str, str]], faces: Iterable[tuple[str, str, str]] = ()) -> str:
    """The checksum of tickets (id, effective status) then face templates (id, holder, sealed), each
    sorted by ticket id: SQLite's BINARY order on UTF-8 text is Python's code-point order."""
    checksum = TicketSetChecksum()
    for ticket_id, st in rows:
        checksum.add(ticket_id, st)
    for ticket_id, holder_id, sealed in faces:
        checksum.add_face(ticket_id, holder_id, sealed)
    return checksum.hexdigest()


def checksum(conn: sqlite3.Connection) -> str:
    """`models.sync.TicketSetChecksum` of the cached tickets with their effective status, then the face
    templates (as the cloud sums a site's set)."""
    rows: Iterator[tuple[str, str]] = conn.execute(
        "SELECT t.ticket_id, COALESCE(r.status, json_extract(t.body, '$.status'), 'valid') "
        "FROM tickets t LEFT JOIN revocations r ON r.ticket_id = t.ticket_id ORDER BY t.ticket_id"
    )
    return stream_checksum(rows, faces.rows(conn))
