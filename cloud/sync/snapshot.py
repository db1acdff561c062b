"""A site's snapshot for a gate that starts empty or saw a gap: NDJSON, streamed from a spool file.

Lines: `SnapshotHeader`, one `Ticket` per ticket (all the site's tickets, in the order of their ids
as text), then a `SnapshotStatus` per revoked ticket, then a `SnapshotFace` per face template of the
site's gallery (`cloud.faces`, in ticket-id order; `header.faces` counts them, summed into the checksum
after the tickets).

One consistent read (REPEATABLE READ on PostgreSQL; SQLite's transactions here are serialised
anyway) makes two passes. The first reads ids and statuses: the header, which must come first,
needs their count and checksum. The second, on a thread of its own, writes the ticket lines to a
spool file that the response streams as it grows, so the gate works on the first tickets while
the cloud formats the last. Neither the transaction nor memory depends on the size of the set or
on how fast the gate reads.

A site may hold a million tickets, so both passes read plain columns through the driver's cursor,
and the lines are formatted here: the bytes `wire_ticket(t).model_dump_json()` gives, without an
ORM object, a SQLAlchemy row or a pydantic model per ticket (tests hold the two equal).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import ColumnElement, Select, Text, cast, select
from sqlalchemy.orm import Session

from cloud.customers.models import Holder
from cloud.db import read_only_snapshot
from cloud.faces.models import FaceGalleryEntry
from cloud.staff import technicians
from cloud.sync import checksums
from cloud.sync.feed import gate_codes, head
from cloud.tickets.models import Ticket
from cloud.tickets.service import _WIRE_STATUS
from models import ProductKind, TicketStatus
from models.sync import KeySet, SnapshotFace, SnapshotHeader, SnapshotStatus, TicketSetChecksum

log = logging.getLogger(__name__)

CHUNK = 1 << 20

Checksum = TicketSetChecksum  # the one implementation, shared with the gate

_STATUS = {state.value: status for state, status in _WIRE_STATUS.items()}  # stored status -> wire status
_STATUS_TEXT = {state: status.value for state, status in _STATUS.items()}
_VALID = TicketStatus.VALID.value


@dataclass
class Snapshot:
    header: SnapshotHeader
    body: Spool  # the ticket and status lines, after the header

    def lines(self) -> Iterator[bytes]:
        """The NDJSON stream; lets go of the spool when done (or when the stream is dropped)."""
        try:
            yield self.header.model_dump_json().encode() + b"\n"
            offset = 0
            while chunk := self.body.read(offset):
                offset += len(chunk)
                yield chunk
        finally:
            self.body.close()


def build(session: Session, site_id: int, site_code: str, keys: KeySet, *, yield_per: int = 5000) -> Snapshot:
    """Read the site's tickets at one point of its feed; ends the session's transaction.

    Returns once the header is known; the ticket lines follow in the snapshot's body.
    """
    session.rollback()  # SQLite: the read below takes the database's lock, which this session may hold
    reader = Session(session.get_bind())  # the snapshot's own transaction: it outlives the request
    try:
        read_only_snapshot(reader)
        statuses = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the second pass
        try:
            header = _header(reader, site_id, site_code, keys, statuses, yield_per)
        except BaseException:
            statuses.close()
            raise
    except BaseException:
        reader.close()
        raise
    spool = Spool()
    threading.Thread(
        target=_write_tickets,
        args=(reader, site_id, header, statuses, spool, yield_per),
        name="snapshot-writer",
        daemon=True,
    ).start()
    return Snapshot(header, spool)


def site_checksum(session: Session, site_id: int, *, yield_per: int = 5000) -> SnapshotHeader:
    """The site's ticket count and checksum at its feed head, as a snapshot's header would say, without
    the ticket lines (one pass; what a gate's status checksum is compared with). Kept as the site's last
    checksum (`cloud.sync.checksums`) and committed: ends the transaction."""
    session.rollback()  # the read below must be the first of its transaction: seq and tickets agree
    try:
        read_only_snapshot(session)
        with open(os.devnull, "wb") as nowhere:
            header = _header(session, site_id, "", KeySet(keys={}), nowhere, yield_per)
    finally:
        session.rollback()
    checksums.remember(session, site_id, header.seq, header.checksum)
    session.commit()
    return header


def _header(
    reader: Session, site_id: int, site_code: str, keys: KeySet, statuses: IO[bytes], yield_per: int
) -> SnapshotHeader:
    """First pass: count and checksum of the site's tickets and face templates; a status line per revoked one,
    then the face lines, into `statuses`."""
    seq, epoch = head(reader, site_id)
    checksum = Checksum()
    count = 0
    id_text = _id_as_text(reader)
    query = select(id_text, Ticket.status).where(Ticket.site_id == site_id).order_by(id_text)
    for rows in _rows(reader, query, yield_per):
        ids = [row[0] for row in rows]
        values = [_STATUS_TEXT[row[1]] for row in rows]
        checksum.add_many(ids, values)  # a batch at a time: one call per ticket was most of this pass
        if values.count(_VALID) != len(values):
            for ticket_id, value in zip(ids, values, strict=True):
                if value != _VALID:
                    line = SnapshotStatus(ticket_id=ticket_id, status=TicketStatus(value)).model_dump_json()
                    statuses.write(line.encode() + b"\n")
        count += len(rows)
    faces = 0
    for ticket_id, holder_id, sealed in reader.execute(_faces_query(reader, site_id)):
        checksum.add_face(ticket_id, str(holder_id), sealed)
        face = SnapshotFace(ticket_id=ticket_id, holder_id=str(holder_id), sealed=sealed)
        statuses.write(face.model_dump_json().encode() + b"\n")  # after the status lines, as the second pass copies
        faces += 1
    return SnapshotHeader(
        site=site_code,
        epoch=epoch,
        seq=seq,
        tickets=count,
        checksum=checksum.hexdigest(),
        keys=keys.keys,
        keys_signature=keys.signature,
        gates=gate_codes(reader, site_id),
        faces=faces or None,
        technicians=technicians.accounts(reader),  # always a list: a gate then knows who its technicians are
    )


def _faces_query(reader: Session, site_id: int) -> Select[str, int, str]:
    """The site's face templates (`cloud.faces`), in the checksum's order of ticket ids (code points)."""
    ticket_id: ColumnElement[str] = FaceGalleryEntry.ticket_id.expression
    if reader.get_bind().dialect.name == "postgresql":
        ticket_id = ticket_id.collate("C")
    return (
        select(FaceGalleryEntry.ticket_id, FaceGalleryEntry.holder_id, FaceGalleryEntry.sealed)
        .where(FaceGalleryEntry.site_id == site_id)
        .order_by(ticket_id)
    )


def _write_tickets(
    reader: Session, site_id: int, header: SnapshotHeader, statuses: IO[bytes], spool: Spool, yield_per: int
) -> None:
    """Second pass (a thread): the ticket lines, then the status and face lines, into the spool; ends the
    transaction, then keeps the header's checksum as the site's last (`cloud.sync.checksums`)."""
    expected = header.tickets
    try:
        wire = WireLines()
        count = 0
        for rows in _rows(reader, _wire_query(reader, site_id), yield_per):
            if spool.abandoned:
                break
            spool.write("".join([wire.line(row) for row in rows]).encode())
            count += len(rows)
        else:
            if count != expected:
                raise RuntimeError(f"second pass read {count} tickets, the first {expected}")
            statuses.seek(0)
            while chunk := statuses.read(CHUNK):
                spool.write(chunk)
    except BaseException as exc:
        log.exception("snapshot of site %d failed", site_id)
        spool.fail(exc)
    else:
        spool.finish()
    finally:
        statuses.close()
        reader.rollback()
        reader.close()
    _remember(reader, site_id, header)


def _remember(reader: Session, site_id: int, header: SnapshotHeader) -> None:
    """Keep the snapshot's checksum, in a transaction of its own once the reader's ended (SQLite: its lock)."""
    try:
        with Session(reader.get_bind()) as session:
            checksums.remember(session, site_id, header.seq, header.checksum)
            session.commit()
    except Exception:
        log.exception("could not keep the checksum of site %d's snapshot", site_id)


def _wire_query(reader: Session, site_id: int) -> Select[*tuple[Any, ...]]:
    id_text = _id_as_text(reader)
    return (
        select(  # in the order `WireLines.line` unpacks them
            id_text,
            Ticket.status,
            Ticket.kind,
            Ticket.product_id,
            Ticket.valid_from,
            Ticket.valid_until,
            Ticket.entries,
            Ticket.window_minutes,
            Ticket.holder_id,
            Holder.name,
            Ticket.first_entry_at,
            Ticket.entries_used,
            Ticket.code,
        )
        .outerjoin(Holder, Holder.id == Ticket.holder_id)
        .where(Ticket.site_id == site_id)
        .order_by(id_text)
    )


def _id_as_text(session: Session) -> ColumnElement[str]:
    # The checksum orders ticket ids as Python orders strings: by code point, i.e. the "C" collation.
    text = cast(Ticket.id, Text)
    return text.collate("C") if session.get_bind().dialect.name == "postgresql" else text


def _rows(reader: Session, query: Select[*tuple[Any, ...]], batch: int) -> Iterator[list[tuple[Any, ...]]]:
    """The query's rows as the driver returns them (no per-row result processing), `batch` at a time."""
    connection = reader.connection()  # the reader's one transaction
    dialect = connection.dialect
    sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))  # ints only
    driver = connection.connection.dbapi_connection
    assert driver is not None
    # PostgreSQL: a server-side (named) cursor, so rows come as read instead of all at once.
    cursor = driver.cursor("snapshot") if dialect.name == "postgresql" else driver.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(batch):
            yield typing.cast(list[tuple[Any, ...]], rows)
    finally:
        cursor.close()


class WireLines:
    """Format rows of `_wire_query` as `models.Ticket` JSON lines, byte for byte as pydantic would."""

    def __init__(self) -> None:
        # What many tickets share (product, validity) is formatted once, in a bounded memo.
        self._terms: dict[tuple[Any, ...], tuple[str, str]] = {}

    def line(self, row: tuple[Any, ...]) -> str:
        """The ticket's JSON line, with its newline."""
        ticket_id, state = row[0], row[1]
        holder_id, name, first, used, code = row[8:]
        product, terms = self._terms.get(row[2:8]) or self._format_terms(row[2:8])
        plain = "null" if code is None else json.dumps(code, ensure_ascii=False)
        holder = (
            "null"
            if holder_id is None
            else f'{{"schema_version":1,"holder_id":"{holder_id}","name":{json.dumps(name, ensure_ascii=False)}}}'
        )
        first_at = "null" if first is None else f'"{_utc(first)}"'
        return (
            f'{{"schema_version":1,"ticket_id":"{ticket_id}",{product}"code":{plain},{terms}"holder":{holder},'
            f'"status":"{_STATUS_TEXT[state]}","first_entry_at":{first_at},"entries_used":{used:d}}}\n'
        )

    def _format_terms(self, key: tuple[Any, ...]) -> tuple[str, str]:
        """The fields before the ticket's own code, and those after it."""
        kind, product_id, valid_from, valid_until, entries, window_minutes = key
        if len(self._terms) >= 4096:
            self._terms.clear()
        self._terms[key] = terms = (
            f'"kind":"{ProductKind(kind).value}","product_id":"{product_id}",',
            f'"valid_from":"{_utc(valid_from)}","valid_until":"{_utc(valid_until)}",'
            f'"entries":{_int(entries)},"window_minutes":{_int(window_minutes)},"daily_limit":null,',
        )
        return terms


def _int(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def _utc(value: datetime | str) -> str:
    """A stored UTC timestamp as pydantic writes it (SQLite's driver gives naive text, psycopg aware values)."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.isoformat() + "Z"


class Spool:
    """A scratch file one thread appends to while another reads it from the start, as it grows."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed when writer and reader are both done
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._users = 2  # the writer and the reader
        self._changed = threading.Condition()
        self.abandoned = False  # the reader went away: the writer may stop

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()  # what `_size` counts is in the file, for `os.pread`
        with self._changed:
            self._size += len(data)
            self._changed.notify_all()

    def finish(self) -> None:
        self._end(None)

    def fail(self, exc: BaseException) -> None:
        self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        with self._changed:
            self._done, self._error = True, exc
            self._changed.notify_all()
        self._leave()

    def read(self, offset: int) -> bytes:
        """Up to `CHUNK` bytes from `offset`, waiting for the writer; b"" at the end."""
        with self._changed:
            while self._size <= offset and not self._done:
                self._changed.wait()
            if self._error is not None:
                raise RuntimeError("the snapshot could not be written") from self._error
            size = min(CHUNK, self._size - offset)
        return os.pread(self._file.fileno(), size, offset) if size > 0 else b""

    def close(self) -> None:
        """The reader is done (or gone)."""
        if not self.abandoned:
            self.abandoned = True
            self._leave()

    def _leave(self) -> None:
        with self._changed:
            self._users -= 1
            last = self._users == 0
        if last:
            self._file.close()
