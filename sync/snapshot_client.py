"""A site snapshot over HTTP (streamed NDJSON) into the gate's staging: blocking, for a worker thread.

Lines: one `SnapshotHeader`, then `header.tickets` `Ticket` lines, then `SnapshotStatus`
lines, then `header.faces` `SnapshotFace` lines (none from a cloud that sends no `faces`).
Nothing is trusted until the staged set's checksum equals the header's. Where the
lines go is the gate's business: a `SnapshotSink` it opens (`GatePort.open_staging`).
"""

from __future__ import annotations

import itertools
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import AwareDatetime, TypeAdapter, ValidationError

from models import Ticket
from models.api import snapshot_path
from models.sync import SnapshotFace, SnapshotHeader, SnapshotStatus
from sync.errors import SnapshotError, first_error


class SnapshotSink(Protocol):
    """Takes a snapshot's validated lines, in order, from one worker thread; `SnapshotError` when it cannot."""

    BATCH: int  # tickets per `add_tickets`
    tickets: int  # tickets taken so far
    faces: int  # face templates taken so far

    def add_tickets(self, rows: list[tuple[str, str | None, str, str]]) -> None:
        """Take tickets: (ticket id, code, status, the line as received), each a valid `Ticket`."""
        ...

    def add_status(self, status: SnapshotStatus) -> None:
        """Take one status line (it overrides the status in its ticket's line)."""
        ...

    def add_face(self, face: SnapshotFace) -> None:
        """Take one face template line (after every status line)."""
        ...

    def finish(self) -> str:
        """All lines are in: the checksum of the ticket set taken, its face templates included."""
        ...

    def close(self) -> None:
        """Release what the sink holds, whatever happened."""
        ...


def snapshot_url(base: str, site: str) -> str:
    return base.rstrip("/") + snapshot_path(site)


def fetch_snapshot(
    *,
    url: str,
    site: str,
    open_sink: Callable[[], SnapshotSink],
    auth: tuple[str, str] | None,
    ca_file: Path | None = None,
    timeout_s: float = 60.0,
    abort: threading.Event | None = None,
) -> SnapshotHeader:
    """Download a snapshot into the sink `open_sink` opens (once the header is read) and verify it;
    returns its header."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
    try:
        with (
            httpx.Client(auth=auth, verify=verify, timeout=timeout) as client,
            client.stream("GET", url, headers={"Accept": "application/x-ndjson"}) as resp,
        ):
            if resp.status_code != 200:
                raise SnapshotError(f"GET {url}: HTTP {resp.status_code}")
            return _stage(_lines(resp.iter_bytes(), abort), site=site, open_sink=open_sink)
    except httpx.HTTPError as exc:
        raise SnapshotError(f"GET {url}: {exc}") from exc


def _lines(chunks: Iterable[bytes], abort: threading.Event | None = None) -> Iterator[bytes]:
    """The lines of a byte stream, without their line ends (bytes: no decoding of a million lines)."""
    rest = b""
    for chunk in chunks:
        if abort is not None and abort.is_set():
            raise SnapshotError("snapshot download aborted")
        block = rest + chunk
        lines = block.split(b"\n")
        rest = lines.pop()
        yield from (line.rstrip(b"\r") for line in lines) if b"\r" in block else lines
    if rest:
        yield rest.rstrip(b"\r")


_FIRST_ENTRY_AT = TypeAdapter(AwareDatetime)  # `Ticket.first_entry_at`, when not null


class TicketLines:
    """Validates snapshot ticket lines as `models.Ticket`, each distinct shape of line once.

    Pydantic costs ~10 µs a line: a million lines would take longer than everything else. But
    tickets of one product and day differ only in their id and in what the gates reported of
    their use. A line in the cloud's form,

        {"schema_version":1,"ticket_id":"<id>"<shape>,"first_entry_at":<at>,"entries_used":<n>}

    is valid exactly when its shape is valid with any other plain id (ASCII letters and digits,
    at most 64), `at` and `n` valid alone: no rule of the model reads more than one of these
    parts. So the shape of each line validated whole is remembered (with its code and status:
    both are in it), and a line of a known shape needs only `at` checked. Any other line is
    parsed whole; a shape naming one of the three fields again, or holding any backslash escape
    (which could spell one of them), is never remembered.
    """

    PREFIX = b'{"schema_version":1,"ticket_id":"'
    FIRST_ENTRY = b',"first_entry_at":'
    ENTRIES_USED = b',"entries_used":'
    LIMIT = 4096  # shapes remembered; then forgotten all at once

    def __init__(self) -> None:
        self._shapes: dict[bytes, tuple[str | None, str]] = {}
        self._tails: set[bytes] = set()

    def rows(self, lines: list[bytes]) -> list[tuple[str, str | None, str, str]]:
        """`row` of each line (`ValidationError` for the first that is wrong), the usual line in a few steps: a
        known shape and a known tail (its `first_entry_at` and `entries_used` parts, checked once)."""
        shapes, tails, row = self._shapes, self._tails, self.row
        prefix, first_entry, start = self.PREFIX, self.FIRST_ENTRY, len(self.PREFIX)
        out = []
        for line in lines:
            end = line.find(b'"', start)
            first = line.rfind(first_entry)
            known = shapes.get(line[end:first])
            if (
                known is not None
                and line[first:] in tails
                and start < end <= start + 64
                and line.startswith(prefix)
                and line[start:end].isalnum()
            ):
                out.append((line[start:end].decode(), known[0], known[1], line.decode()))
            else:
                out.append(row(line))
        return out

    def row(self, line: bytes) -> tuple[str, str | None, str, str]:
        """(ticket id, code, status, the line) of a valid ticket line; raises `ValidationError` otherwise."""
        start = len(self.PREFIX)
        end = line.find(b'"', start) if line.startswith(self.PREFIX) else -1
        first = line.rfind(self.FIRST_ENTRY)
        used = line.rfind(self.ENTRIES_USED)
        ticket_id, shape = line[start:end], line[end:first]
        at, n = line[first + len(self.FIRST_ENTRY) : used], line[used + len(self.ENTRIES_USED) : -1]
        plain = (
            start < end <= start + 64
            and end < first < used
            and line.endswith(b"}")
            and ticket_id.isalnum()
            and n.isdigit()
            and len(n) <= 18
            and (n == b"0" or not n.startswith(b"0"))
        )
        if plain and (known := self._shapes.get(shape)) is not None:
            if at != b"null":
                _FIRST_ENTRY_AT.validate_json(at)
            self._remember_tail(line[first:])
            return ticket_id.decode(), known[0], known[1], line.decode()
        ticket = Ticket.model_validate_json(line)
        if (
            plain
            and ticket.ticket_id == ticket_id.decode()
            and b"\\" not in shape  # an escape could spell a key in disguise ("ticket\u005fid")
            and not any(key in shape for key in (b'"ticket_id"', b'"first_entry_at"', b'"entries_used"'))
        ):
            if len(self._shapes) >= self.LIMIT:
                self._shapes.clear()
            self._shapes[shape] = (ticket.code, ticket.status.value)
            self._remember_tail(line[first:])
        return ticket.ticket_id, ticket.code, ticket.status.value, line.decode()

    def _remember_tail(self, tail: bytes) -> None:
        """A line's valid `first_entry_at` and `entries_used` parts: the next line with the same needs no check."""
        if len(self._tails) >= self.LIMIT:
            self._tails.clear()
        self._tails.add(tail)


def _stage(lines: Iterable[bytes], *, site: str, open_sink: Callable[[], SnapshotSink]) -> SnapshotHeader:
    it = iter(lines)
    first = next((line for line in it if line.strip()), None)
    if first is None:
        raise SnapshotError("empty snapshot")
    try:
        header = SnapshotHeader.model_validate_json(first)
    except ValidationError as exc:
        raise SnapshotError(f"snapshot header: {first_error(exc)}") from exc
    if header.site != site:
        raise SnapshotError(f"snapshot is for site {header.site!r}, not {site!r}")
    stage = open_sink()
    try:
        numbered = enumerate(it, start=2)
        _stage_tickets(numbered, header.tickets, stage)
        _stage_rest(numbered, stage)
        checksum = stage.finish()
    finally:
        stage.close()
    if stage.tickets != header.tickets:
        raise SnapshotError(f"snapshot announced {header.tickets} tickets but held {stage.tickets}")
    if stage.faces != (header.faces or 0):
        raise SnapshotError(f"snapshot announced {header.faces or 0} face templates but held {stage.faces}")
    if checksum != header.checksum:
        raise SnapshotError(f"snapshot checksum {checksum} does not match its header's {header.checksum}")
    return header


def _stage_rest(numbered: Iterator[tuple[int, bytes]], stage: SnapshotSink) -> None:
    """Stage the status lines, then the face template lines: a status line after a face is refused."""
    in_faces = False
    for number, line in numbered:
        if not line or line.isspace():
            continue
        try:
            if not in_faces:
                try:
                    stage.add_status(SnapshotStatus.model_validate_json(line))
                    continue
                except ValidationError:
                    if b'"sealed"' not in line:
                        raise  # no face line either: say what is wrong with it as a status
                in_faces = True
            stage.add_face(SnapshotFace.model_validate_json(line))
        except ValidationError as exc:
            raise SnapshotError(f"snapshot line {number}: {first_error(exc)}") from exc


def _stage_tickets(numbered: Iterator[tuple[int, bytes]], count: int, stage: SnapshotSink) -> None:
    """Stage the next `count` lines (fewer if the stream ends) as tickets, a batch at a time."""
    tickets = TicketLines()
    left = count
    while left:
        want = min(stage.BATCH, left)
        taken = list(itertools.islice(numbered, want))
        try:
            rows = tickets.rows([line for _, line in taken])
        except ValidationError:  # a blank line or a wrong one: again line by line, to skip it or say which
            rows = []
            for number, line in itertools.chain(taken, numbered):
                try:
                    rows.append(tickets.row(line))
                except ValidationError as exc:
                    if not line or line.isspace():
                        continue  # blank lines are no tickets (checked only here: they are rare)
                    raise SnapshotError(f"snapshot line {number}: {first_error(exc)}") from exc
                if len(rows) == want:
                    break
        stage.add_tickets(rows)
        if len(rows) < want:
            return  # the stream ended
        left -= want
