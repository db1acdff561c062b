"""A site's snapshot for a gate that starts empty or saw a gap: NDJSON, streamed from a spool file.

One consistent read (REPEATABLE READ on PostgreSQL; SQLite's transactions here are serialised anyway)
writes the tickets to a temporary file as they come (`yield_per`), so neither the database transaction
nor memory depends on the size of the set or on how fast the gate reads; the header, which must come
first, is known once the pass is done. Lines: `SnapshotHeader`, one `Ticket` per ticket (all the
site's tickets, in the order of their ids as text), then a `SnapshotStatus` per revoked ticket.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from sqlalchemy import ColumnElement, Text, cast, select
from sqlalchemy.orm import Session, joinedload

from cloud.sync.feed import head_seq
from cloud.tickets.models import Ticket
from cloud.tickets.service import wire_ticket
from models import TicketStatus
from models.sync import SnapshotHeader, SnapshotStatus, TicketSetChecksum

CHUNK = 1 << 16


Checksum = TicketSetChecksum  # the one implementation, shared with the gate


@dataclass
class Snapshot:
    header: SnapshotHeader
    body: IO[bytes]  # the ticket and status lines, after the header

    def lines(self) -> Iterator[bytes]:
        """The NDJSON stream; closes the spool file when done (or when the stream is dropped)."""
        try:
            yield self.header.model_dump_json().encode() + b"\n"
            self.body.seek(0)
            while chunk := self.body.read(CHUNK):
                yield chunk
        finally:
            self.body.close()


def build(session: Session, site_id: int, site_code: str, keys: dict[int, str], *, yield_per: int = 2000) -> Snapshot:
    """Read the site's tickets at one point of its feed into a spool file; ends the session's transaction."""
    session.rollback()  # the read below must be the first of its transaction
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})
    body = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the response, which closes it
    try:
        header = _write(session, site_id, site_code, keys, body, yield_per)
    except BaseException:
        body.close()
        raise
    finally:
        session.rollback()
    return Snapshot(header, body)


def _write(
    session: Session, site_id: int, site_code: str, keys: dict[int, str], out: IO[bytes], yield_per: int
) -> SnapshotHeader:
    seq = head_seq(session, site_id)
    checksum = Checksum()
    count = 0
    with tempfile.TemporaryFile() as statuses:
        query = (
            select(Ticket)
            .options(joinedload(Ticket.holder))
            .where(Ticket.site_id == site_id)
            .order_by(_id_as_text(session))
            .execution_options(yield_per=yield_per)
        )
        for ticket in session.scalars(query):
            wire = wire_ticket(ticket)
            out.write(wire.model_dump_json().encode() + b"\n")
            checksum.add(wire.ticket_id, wire.status)
            count += 1
            if wire.status is not TicketStatus.VALID:
                line = SnapshotStatus(ticket_id=wire.ticket_id, status=wire.status).model_dump_json()
                statuses.write(line.encode() + b"\n")
        statuses.seek(0)
        shutil.copyfileobj(statuses, out, CHUNK)
    return SnapshotHeader(site=site_code, seq=seq, tickets=count, checksum=checksum.hexdigest(), keys=keys)


def _id_as_text(session: Session) -> ColumnElement[str]:
    # The checksum orders ticket ids as Python orders strings: by code point, i.e. the "C" collation.
    text = cast(Ticket.id, Text)
    return text.collate("C") if session.get_bind().dialect.name == "postgresql" else text
