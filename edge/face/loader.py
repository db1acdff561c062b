"""Opening a gate's stored face templates into gallery chunks, in a process of its own.

Opening a template is Python work per row (AES-GCM, unpacking, hashing its ticket id): ~12 µs each,
1.2 s for 100k templates, 12 s for a million, all of it holding the GIL. Done on the face thread at
start-up and after every snapshot, it would stall the QR decoder and the decision loop for as long
(measured: three journal commits' p99 went from 3 ms to 72 ms while 200k templates loaded). So a
spawned child opens the store read-only, opens the templates and sends them back in chunks of numpy
arrays; the face thread only copies each chunk into the gallery's blocks (a few ms of memcpy per
chunk, the pipe read between chunks releasing the GIL).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.face.gallery import template_key
from models.face import ENCODING_BYTES, ENCODING_DIM, FaceSealError, template_aad, unseal

if TYPE_CHECKING:
    import numpy.typing as npt

CHUNK = 4096


class LoadFailed(Exception):
    """The templates could not be read (the store, or the loading process, failed)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Opened templates: ticket-id hashes, ticket and holder ids, encodings (n x 128), and what did not open."""

    keys: npt.NDArray[np.int64]
    tickets: npt.NDArray[np.bytes_]
    holders: npt.NDArray[np.bytes_]
    matrix: npt.NDArray[np.float32]
    failed: list[str] = field(default_factory=list)


def open_chunks(rows: Iterable[tuple[str, str, str]], key: bytes, site: str, size: int = CHUNK) -> Iterator[Chunk]:
    """The rows (ticket id, holder id, sealed) opened with the site's key, `size` at a time."""
    keys: list[int] = []
    tickets: list[bytes] = []
    holders: list[bytes] = []
    raw = bytearray()
    failed: list[str] = []
    for ticket_id, holder_id, sealed in rows:
        try:
            plain = unseal(key, sealed, template_aad(site, ticket_id, holder_id))
            if len(plain) != ENCODING_BYTES:
                raise FaceSealError(f"a face encoding is {ENCODING_BYTES} bytes, not {len(plain)}")
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


def _serve(conn: Connection, path: str, key: bytes, site: str, size: int) -> None:
    try:
        for chunk in open_chunks(stored_rows(path), key, site, size):
            conn.send(chunk)
        conn.send(None)
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")


def load_in_child(path: str | Path, key: bytes, site: str, *, size: int = CHUNK) -> Iterator[Chunk]:
    """`open_chunks` of the store at `path`, done by a spawned child; `LoadFailed` when it cannot finish."""
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_serve, args=(there, str(path), key, site, size), name="starfish-face-load", daemon=True)
    proc.start()
    there.close()
    try:
        while True:
            try:
                got = here.recv()
            except EOFError as exc:
                raise LoadFailed(f"the loading process ended (exit code {proc.exitcode})") from exc
            if got is None:
                return
            if isinstance(got, str):
                raise LoadFailed(got)
            yield got
    finally:
        here.close()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
