"""Opening a gate's stored face templates into gallery chunks (start-up, and after each snapshot).

The face thread reads the store through a read-only connection of its own and opens the templates
4096 at a time into numpy arrays (`open_chunks`), which the gallery copies in by slices
(`Gallery.load_arrays`): the Python work per template is one AES-GCM open and a few list appends
(~9 µs; 200k templates in 1.8 s, a million in ~9 s, against 2.4-2.6 s for 200k one by one), and
SQLite's row reads release the GIL between rows. Measured while 200k templates loaded, a journal-like
commit plus 0.3 ms of Python on the main thread: p99 1.0-2.1 ms over six runs (1.2-1.7 ms for the
one-by-one path); the same work in a spawned child process measured no better (p99 1.9-4.0 ms: on two
cores the child competes for the CPU), so it stays in the face thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.face.gallery import template_key
from models.face import ENCODING_BYTES, ENCODING_DIM, FaceSealError, template_aad, unseal

if TYPE_CHECKING:
    import numpy.typing as npt

CHUNK = 4096


@dataclass(frozen=True, slots=True)
class Chunk:
    """Opened templates: ticket-id hashes, ticket and holder ids, encodings (n x 128), and what did not open."""

    keys: npt.NDArray[np.int64]
    tickets: npt.NDArray[np.bytes_]
    holders: npt.NDArray[np.bytes_]
    matrix: npt.NDArray[np.float32]
    failed: list[str] = field(default_factory=list)


def open_template(key: bytes, site: str, ticket_id: str, holder_id: str, sealed: str) -> bytes:
    """A sealed template's 512 bytes (float32 LE); `FaceSealError` when it does not open or is no encoding."""
    plain = unseal(key, sealed, template_aad(site, ticket_id, holder_id))
    if len(plain) != ENCODING_BYTES:
        raise FaceSealError(f"a face encoding is {ENCODING_BYTES} bytes, not {len(plain)}")
    return plain


def open_chunks(rows: Iterable[tuple[str, str, str]], key: bytes, site: str, size: int = CHUNK) -> Iterator[Chunk]:
    """The rows (ticket id, holder id, sealed) opened with the site's key, `size` at a time."""
    keys: list[int] = []
    tickets: list[bytes] = []
    holders: list[bytes] = []
    raw = bytearray()
    failed: list[str] = []
    for ticket_id, holder_id, sealed in rows:
        try:
            plain = open_template(key, site, ticket_id, holder_id, sealed)
        except FaceSealError:
            failed.append(ticket_id)
            continue
        keys.append(template_key(ticket_id))
        tickets.append(ticket_id.encode())
        holders.append(holder_id.encode())
        raw += plain
        if len(keys) == size:
            yield _chunk(keys, tickets, holders, raw, failed)
            keys, tickets, holders, raw, failed = [], [], [], bytearray(), []
    if keys or failed:
        yield _chunk(keys, tickets, holders, raw, failed)


def _chunk(keys: list[int], tickets: list[bytes], holders: list[bytes], raw: bytearray, failed: list[str]) -> Chunk:
    matrix = np.frombuffer(bytes(raw), dtype="<f4").astype(np.float32).reshape(len(keys), ENCODING_DIM)
    return Chunk(
        keys=np.array(keys, dtype=np.int64),
        tickets=np.array(tickets, dtype=np.bytes_) if tickets else np.zeros(0, "S1"),
        holders=np.array(holders, dtype=np.bytes_) if holders else np.zeros(0, "S1"),
        matrix=matrix,
        failed=failed,
    )


def stored_rows(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """Every sealed template of the gate store at `path`, read-only through a connection of this thread."""
    from edge.store.faces import rows

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        yield from rows(conn)
    finally:
        conn.close()
