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

Entries are keyed by the season pass's ticket id; the ids live in numpy arrays (fixed-width
bytes, widened when a longer id arrives, plus a 64-bit hash of the ticket id for lookups), not
Python objects: at 1M templates the process stays under ~600 MB, 488 MiB of it the matrix.
Removing swaps the last template into the hole, so the filled columns stay contiguous.

Not thread-safe: one owner (the face thread, `edge.face.pipeline`) searches and edits it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.face import ENCODING_DIM

BLOCK = 65_536

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Hit:
    """The nearest template, and the nearest template of any other holder (None: no other holder)."""

    ticket_id: str
    holder_id: str
    distance: float
    second: float | None


def _key(ticket_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(ticket_id.encode(), digest_size=8).digest(), "little", signed=True)


class Gallery:
    """Face templates by ticket id, searched for the nearest one."""

    def __init__(self, block: int = BLOCK) -> None:
        self.block = block
        self._reset()

    def _reset(self) -> None:
        self._blocks: list[F32] = []
        self._norms: list[F32] = []
        self._n = 0
        self._keys = np.zeros(0, dtype=np.int64)
        self._tickets = np.zeros(0, dtype="S1")
        self._holders = np.zeros(0, dtype="S1")
        self._out = np.zeros(0, dtype=np.float32)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, ticket_id: str) -> bool:
        return self._slot(ticket_id) is not None

    @property
    def nbytes(self) -> int:
        """Bytes held by the matrix, norms, ids and output buffer."""
        arrays: list[np.ndarray] = [*self._blocks, *self._norms, self._keys, self._tickets, self._holders, self._out]
        return sum(int(a.nbytes) for a in arrays)

    def _slot(self, ticket_id: str) -> int | None:
        found = np.flatnonzero(self._keys[: self._n] == _key(ticket_id))
        raw = ticket_id.encode()
        for slot in found:
            if self._tickets[slot] == raw:
                return int(slot)
        return None

    def _grow(self) -> None:
        """One more block of columns, and room for its ids."""
        self._blocks.append(np.zeros((ENCODING_DIM, self.block), dtype=np.float32))
        self._norms.append(np.zeros(self.block, dtype=np.float32))
        cap = len(self._blocks) * self.block
        self._keys = np.resize(self._keys, cap)
        self._tickets = np.resize(self._tickets, cap)
        self._holders = np.resize(self._holders, cap)
        self._out = np.zeros(cap, dtype=np.float32)

    @staticmethod
    def _fit(ids: np.ndarray, raw: bytes) -> np.ndarray:
        if len(raw) > ids.dtype.itemsize:
            return ids.astype(f"S{len(raw)}")
        return ids

    def _write(self, slot: int, ticket_id: str, holder_id: str, encoding: F32) -> None:
        b, col = divmod(slot, self.block)
        self._blocks[b][:, col] = encoding
        self._norms[b][col] = np.dot(encoding, encoding)
        t, h = ticket_id.encode(), holder_id.encode()
        self._tickets = self._fit(self._tickets, t)
        self._holders = self._fit(self._holders, h)
        self._keys[slot] = _key(ticket_id)
        self._tickets[slot] = t
        self._holders[slot] = h

    def put(self, ticket_id: str, holder_id: str, encoding: npt.ArrayLike) -> None:
        """Add the template of a pass, or replace the one it had."""
        enc = np.asarray(encoding, dtype=np.float32).reshape(ENCODING_DIM)
        slot = self._slot(ticket_id)
        if slot is None:
            if self._n == len(self._blocks) * self.block:
                self._grow()
            slot = self._n
            self._n += 1
        self._write(slot, ticket_id, holder_id, enc)

    def load(self, entries: Iterable[tuple[str, str, npt.ArrayLike]]) -> None:
        """Add many templates of distinct passes (a start-up or a snapshot), without a lookup each."""
        for ticket_id, holder_id, encoding in entries:
            if self._n == len(self._blocks) * self.block:
                self._grow()
            self._write(self._n, ticket_id, holder_id, np.asarray(encoding, dtype=np.float32).reshape(ENCODING_DIM))
            self._n += 1

    def remove(self, ticket_id: str) -> bool:
        """Forget a pass's template (the last one moves into its slot); False if there was none."""
        slot = self._slot(ticket_id)
        if slot is None:
            return False
        last = self._n - 1
        if slot != last:
            lb, lc = divmod(last, self.block)
            b, col = divmod(slot, self.block)
            self._blocks[b][:, col] = self._blocks[lb][:, lc]
            self._norms[b][col] = self._norms[lb][lc]
            self._keys[slot] = self._keys[last]
            self._tickets[slot] = self._tickets[last]
            self._holders[slot] = self._holders[last]
        lb, lc = divmod(last, self.block)
        self._blocks[lb][:, lc] = 0.0  # a deleted template does not linger in memory
        self._norms[lb][lc] = 0.0
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
        return self._blocks[b][:, col].copy()

    def squared_distances(self, probe: npt.ArrayLike) -> F32:
        """||probe - t||^2 for every template, in slot order (a view of the output buffer)."""
        a = np.asarray(probe, dtype=np.float32).reshape(ENCODING_DIM)
        out = self._out
        for b in range(len(self._blocks)):
            start = b * self.block
            cols = min(self.block, self._n - start)
            if cols <= 0:
                break
            part = out[start : start + cols]
            np.matmul(a, self._blocks[b][:, :cols], out=part)
            part *= -2.0
            part += self._norms[b][:cols]
        found = out[: self._n]
        found += np.dot(a, a)
        return found

    def search(self, probe: npt.ArrayLike) -> Hit | None:
        """The nearest template to `probe` and the distance of the nearest other holder's; None if empty."""
        if self._n == 0:
            return None
        d2 = self.squared_distances(probe)
        best = int(np.argmin(d2))
        best_d2 = float(d2[best])
        holder = self._holders[best]
        second: float | None = None
        if self._n > 1:
            d2[best] = np.inf
            other = int(np.argmin(d2))
            if self._holders[other] == holder:  # one holder with two passes here: look past all of them
                d2[self._holders[: self._n] == holder] = np.inf
                other = int(np.argmin(d2))
            if np.isfinite(d2[other]):
                second = float(np.sqrt(max(float(d2[other]), 0.0)))
        return Hit(
            ticket_id=self._tickets[best].decode(),
            holder_id=holder.decode(),
            distance=float(np.sqrt(max(best_d2, 0.0))),
            second=second,
        )
