"""The gate's face gallery: every opened template in one float32 matrix, searched 1:N.

Distances are Euclidean (as `face_recognition.face_distance`), computed as
``sqrt(||a||^2 - 2 a.b + ||b||^2)`` with the templates' squared norms kept beside them: one
matrix-vector product per search instead of an N x 128 float64 difference (~100x slower and
2 GiB of temporaries at 1M).

Layout, chosen by measurement on the 2-core gate (bench.face): templates are the columns of
fixed-size float32 blocks of shape (128, BLOCK); a search multiplies the probe into one block
after another, writing into one preallocated output buffer (``a @ block`` over 65,536-column
blocks: ~20 ms at 1M; a row-major ``B @ a`` measured 25-50 ms). A block once allocated is never
moved, so adding a template never copies the gallery.

Entries are keyed by the season pass's ticket id; the ids live beside each block in numpy arrays
(fixed-width bytes, widened when a longer id arrives, plus a 64-bit hash of the ticket id for
lookups), not Python objects: at 1M templates the process stays under ~600 MB, 488 MiB of it the
matrix. The matrix blocks are anonymous mappings without transparent huge pages: a 2 MiB huge page
would span 8 rows of a block, so a block holding a few templates would cost all its 32 MiB at once.
Growing never copies or frees what is there, so the heap does not fragment as the gallery fills.
Removing swaps the last template into the hole, so the filled columns stay contiguous.

Threads: OpenBLAS's own pool keeps its threads spinning for a while after every call, on the core
the gate's QR path and decision loop need. So the gate runs BLAS single-threaded
(`single_threaded_blas`) and a large gallery splits its blocks over a few threads of its own, which
sleep between searches: at 1M ~19 ms on two cores (one thread: ~26 ms; OpenBLAS's two: ~21 ms).

Not thread-safe: one owner (the face thread, `edge.face.pipeline`) searches and edits it.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.face import ENCODING_DIM

BLOCK = 65_536
THREADED_FROM_BLOCKS = 4  # below ~200k templates one thread searches faster than handing blocks out

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Hit:
    """The nearest template, and the nearest template of any other holder (None: no other holder)."""

    ticket_id: str
    holder_id: str
    distance: float
    second: float | None


def template_key(ticket_id: str) -> int:
    """The 64-bit hash a template is looked up by (its ticket id's)."""
    return int.from_bytes(hashlib.blake2b(ticket_id.encode(), digest_size=8).digest(), "little", signed=True)


def single_threaded_blas() -> bool:
    """Make OpenBLAS (numpy's) use one thread in this process; False when no OpenBLAS is loaded."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    libs = sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower() and "/" in line})
    for lib in libs:
        handle = ctypes.CDLL(lib)
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"):
            if hasattr(handle, name):
                getattr(handle, name)(1)
                return True
    return False


def _mapped(n: int, *shape: int) -> F32:
    """Zeroed float32 memory of its own mapping (returned to the system when dropped), no huge pages."""
    m = mmap.mmap(-1, max(n, 1) * 4)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        m.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(m, dtype=np.float32, count=n).reshape(shape or (n,))


class _Block:
    """BLOCK templates as columns, their squared norms, ticket-id hashes, ticket and holder ids."""

    def __init__(self, size: int) -> None:
        self.mat = _mapped(ENCODING_DIM * size, ENCODING_DIM, size)
        self.norms = np.zeros(size, dtype=np.float32)
        self.keys = np.zeros(size, dtype=np.int64)
        self.tickets = np.zeros(size, dtype="S1")
        self.holders = np.zeros(size, dtype="S1")

    def widen(self, ticket: int, holder: int) -> None:
        """Make room for ids this long (bytes)."""
        if ticket > self.tickets.dtype.itemsize:
            self.tickets = self.tickets.astype(f"S{ticket}")
        if holder > self.holders.dtype.itemsize:
            self.holders = self.holders.astype(f"S{holder}")

    def set(self, col: int, key: int, ticket: bytes, holder: bytes, enc: F32, norm: float) -> None:
        self.widen(len(ticket), len(holder))
        self.mat[:, col] = enc
        self.norms[col] = norm
        self.keys[col] = key
        self.tickets[col] = ticket
        self.holders[col] = holder


class Gallery:
    """Face templates by ticket id, searched for the nearest one."""

    def __init__(self, block: int = BLOCK, *, threads: int = 2) -> None:
        self.block = block
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._reset()

    def _reset(self) -> None:
        self._blocks: list[_Block] = []
        self._n = 0
        self._out = _mapped(0)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, ticket_id: str) -> bool:
        return self._slot(ticket_id) is not None

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the matrix, norms, ids and output buffer (untouched pages cost nothing)."""
        arrays: list[np.ndarray] = [self._out]
        for b in self._blocks:
            arrays += [b.mat, b.norms, b.keys, b.tickets, b.holders]
        return sum(int(a.nbytes) for a in arrays)

    def _cols(self, b: int) -> int:
        return max(0, min(self.block, self._n - b * self.block))

    def _slot(self, ticket_id: str) -> int | None:
        key, raw = template_key(ticket_id), ticket_id.encode()
        for b, blk in enumerate(self._blocks):
            for col in np.flatnonzero(blk.keys[: self._cols(b)] == key):
                if blk.tickets[col] == raw:
                    return b * self.block + int(col)
        return None

    def _grow(self) -> None:
        self._blocks.append(_Block(self.block))
        out = _mapped(len(self._blocks) * self.block)
        out[: self._out.size] = self._out
        self._out = out

    def _write(self, slot: int, ticket_id: str, holder_id: str, encoding: F32) -> None:
        b, col = divmod(slot, self.block)
        norm = float(np.dot(encoding, encoding))
        self._blocks[b].set(col, template_key(ticket_id), ticket_id.encode(), holder_id.encode(), encoding, norm)

    def _append(self, ticket_id: str, holder_id: str, encoding: F32) -> None:
        if self._n == len(self._blocks) * self.block:
            self._grow()
        self._n += 1
        self._write(self._n - 1, ticket_id, holder_id, encoding)

    def put(self, ticket_id: str, holder_id: str, encoding: npt.ArrayLike) -> None:
        """Add the template of a pass, or replace the one it had."""
        enc = np.asarray(encoding, dtype=np.float32).reshape(ENCODING_DIM)
        slot = self._slot(ticket_id)
        if slot is None:
            self._append(ticket_id, holder_id, enc)
        else:
            self._write(slot, ticket_id, holder_id, enc)

    def load(self, entries: Iterable[tuple[str, str, npt.ArrayLike]]) -> None:
        """Add many templates of distinct passes (a start-up or a snapshot), without a lookup each."""
        for ticket_id, holder_id, encoding in entries:
            self._append(ticket_id, holder_id, np.asarray(encoding, dtype=np.float32).reshape(ENCODING_DIM))

    def load_arrays(
        self,
        keys: npt.NDArray[np.int64],
        tickets: npt.NDArray[np.bytes_],
        holders: npt.NDArray[np.bytes_],
        matrix: F32,
    ) -> None:
        """Add templates of distinct passes given as arrays (`edge.face.loader.Chunk`): copied by slices, block
        by block, with no Python work per template."""
        n, i = len(keys), 0
        while i < n:
            if self._n == len(self._blocks) * self.block:
                self._grow()
            b, col = divmod(self._n, self.block)
            take = min(n - i, self.block - col)
            blk, part = self._blocks[b], matrix[i : i + take]
            blk.widen(tickets.dtype.itemsize, holders.dtype.itemsize)
            blk.mat[:, col : col + take] = part.T
            blk.norms[col : col + take] = np.einsum("ij,ij->i", part, part)
            blk.keys[col : col + take] = keys[i : i + take]
            blk.tickets[col : col + take] = tickets[i : i + take]
            blk.holders[col : col + take] = holders[i : i + take]
            self._n += take
            i += take

    def remove(self, ticket_id: str) -> bool:
        """Forget a pass's template (the last one moves into its slot); False if there was none."""
        slot = self._slot(ticket_id)
        if slot is None:
            return False
        last = self._n - 1
        lb, lc = divmod(last, self.block)
        tail = self._blocks[lb]
        if slot != last:
            b, col = divmod(slot, self.block)
            self._blocks[b].set(
                col, int(tail.keys[lc]), tail.tickets[lc], tail.holders[lc], tail.mat[:, lc], float(tail.norms[lc])
            )
        tail.mat[:, lc] = 0.0  # a deleted template does not linger in memory
        tail.norms[lc] = 0.0
        tail.keys[lc] = 0
        self._n = last
        return True

    def clear(self) -> None:
        """Forget every template and give the memory back."""
        self._reset()

    def encoding(self, ticket_id: str) -> F32 | None:
        """A copy of a pass's template, or None."""
        slot = self._slot(ticket_id)
        if slot is None:
            return None
        b, col = divmod(slot, self.block)
        return self._blocks[b].mat[:, col].copy()

    def _fill(self, a: F32, b: int) -> None:
        cols = self._cols(b)
        if cols == 0:
            return
        blk = self._blocks[b]
        part = self._out[b * self.block : b * self.block + cols]
        np.matmul(a, blk.mat[:, :cols], out=part)  # releases the GIL, as do the two below
        part *= -2.0
        part += blk.norms[:cols]

    def squared_distances(self, probe: npt.ArrayLike) -> F32:
        """||probe - t||^2 for every template, in slot order (a view of the output buffer)."""
        a = np.asarray(probe, dtype=np.float32).reshape(ENCODING_DIM)
        blocks = range(len(self._blocks))
        if self.threads > 1 and len(self._blocks) >= THREADED_FROM_BLOCKS:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="face-search")
            for done in [self._pool.submit(self._fill, a, b) for b in blocks]:
                done.result()
        else:
            for b in blocks:
                self._fill(a, b)
        found = self._out[: self._n]
        found += np.dot(a, a)
        return found

    def _ids(self, slot: int) -> tuple[bytes, bytes]:
        b, col = divmod(slot, self.block)
        return self._blocks[b].tickets[col], self._blocks[b].holders[col]

    def search(self, probe: npt.ArrayLike) -> Hit | None:
        """The nearest template to `probe` and the distance of the nearest other holder's; None if empty."""
        if self._n == 0:
            return None
        d2 = self.squared_distances(probe)
        best = int(np.argmin(d2))
        best_d2 = float(d2[best])
        ticket, holder = self._ids(best)
        second: float | None = None
        if self._n > 1:
            d2[best] = np.inf
            other = int(np.argmin(d2))
            if self._ids(other)[1] == holder:  # one holder with two passes here: look past all of them
                for b, blk in enumerate(self._blocks):
                    part = d2[b * self.block : b * self.block + self._cols(b)]
                    part[blk.holders[: part.size] == holder] = np.inf
                other = int(np.argmin(d2))
            if np.isfinite(d2[other]):
                second = float(np.sqrt(max(float(d2[other]), 0.0)))
        return Hit(
            ticket_id=bytes(ticket).decode(),
            holder_id=bytes(holder).decode(),
            distance=float(np.sqrt(max(best_d2, 0.0))),
            second=second,
        )
