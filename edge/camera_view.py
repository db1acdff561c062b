"""The camera view of the technician page: the latest frame, with boxes where a QR code or a face was found.

`FrameTap` sits beside the gate's real work and costs it nothing it can notice: the camera thread
`offer`s each frame (a reference is kept, nothing is copied or drawn), the face thread reports the
faces it found (`faces`); only when the page asks (`jpeg`, in a worker thread) is the latest frame
scaled, drawn on and encoded, and the result is reused for `cache_s` so several open pages cost
one encoding.

Times (`at`) are the daemon's monotonic clock. A box is drawn while it is recent: seen within
`keep_s` (1.5 s) of the frame shown, so a code or a face does not blink off on the frames the
decoder or the face worker skipped. The timestamp is the gate's local wall time of the frame;
a frame older than 2 s (a camera that stopped delivering) says how old it is, in red.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from drivers.face import Box
    from drivers.qr import DecodedCode

GREEN = (0, 200, 0)  # BGR
BLUE = (255, 120, 0)
RED = (0, 0, 255)
STALE_S = 2.0


@dataclass(frozen=True, slots=True)
class _Frame:
    image: np.ndarray
    at: float


def _local_now() -> datetime:
    return datetime.now().astimezone()


class FrameTap:
    """The camera's latest frame and what was found in it, drawn as JPEG on demand."""

    def __init__(
        self,
        *,
        keep_s: float = 1.5,
        cache_s: float = 0.2,
        quality: int = 70,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = _local_now,
    ) -> None:
        self.keep_s = keep_s
        self.cache_s = cache_s
        self.quality = quality
        self.monotonic = monotonic
        self.clock = clock
        # Each is replaced whole by its one writer thread (an atomic assignment) and only read elsewhere.
        self._frame: _Frame | None = None
        self._codes: tuple[tuple[tuple[tuple[int, int], ...], ...], float] = ((), float("-inf"))
        self._faces: tuple[tuple[Box, ...], float] = ((), float("-inf"))
        self._lock = threading.Lock()  # one encoding at a time; the cache
        self._cached: tuple[bytes, float, int] | None = None  # (jpeg, made at, max_width)

    def offer(self, frame: np.ndarray, codes: Sequence[DecodedCode], at: float) -> None:
        """The camera thread's latest frame and the codes decoded in it (cheap: keeps references)."""
        self._frame = _Frame(frame, at)
        found = tuple(c.points for c in codes if len(c.points) >= 2)
        if found:
            self._codes = (found, at)

    def faces(self, boxes: Sequence[Box], at: float) -> None:
        """The faces the face thread found in the frame taken at `at`."""
        if boxes:
            self._faces = (tuple(boxes), at)

    def jpeg(self, max_width: int = 640) -> bytes | None:
        """The latest frame with its boxes and time, as JPEG at most `max_width` wide; None before any frame."""
        with self._lock:
            now = self.monotonic()
            cached = self._cached
            if cached is not None and cached[2] == max_width and now - cached[1] < self.cache_s:
                return cached[0]
            frame = self._frame
            if frame is None:
                return None
            data = self._draw(frame, max_width, now)
            self._cached = (data, now, max_width)
            return data

    def _draw(self, frame: _Frame, max_width: int, now: float) -> bytes:
        image = frame.image
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)  # a new array: the camera's frame is never drawn on
        elif image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        h, w = image.shape[:2]
        scale = min(1.0, max_width / w) if w else 1.0
        if scale < 1.0:
            image = cv2.resize(
                image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        elif image is frame.image:
            image = image.copy()
        thick = max(2, round(3 * image.shape[1] / 640))
        age = max(0.0, now - frame.at)
        taken = self.clock() - timedelta(seconds=age)
        text = taken.strftime("%Y-%m-%d %H:%M:%S")
        if age > STALE_S:
            text += f"  ({age:.0f} s old)"
        self._label(  # first: a box near the corner is drawn over it
            image, text, RED if age > STALE_S else (255, 255, 255)
        )
        codes, codes_at = self._codes
        if abs(frame.at - codes_at) <= self.keep_s:
            for points in codes:
                poly = np.array([[round(x * scale), round(y * scale)] for x, y in points], dtype=np.int32)
                cv2.polylines(image, [poly], isClosed=True, color=GREEN, thickness=thick)
        boxes, faces_at = self._faces
        if abs(frame.at - faces_at) <= self.keep_s:
            for b in boxes:
                top_left = (round(b.left * scale), round(b.top * scale))
                cv2.rectangle(image, top_left, (round(b.right * scale), round(b.bottom * scale)), BLUE, thick)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return encoded.tobytes()

    @staticmethod
    def _label(image: np.ndarray, text: str, color: tuple[int, int, int]) -> None:
        font, size = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, image.shape[1] / 1000)
        (tw, th), base = cv2.getTextSize(text, font, size, 1)
        cv2.rectangle(image, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
        cv2.putText(image, text, (4, th + 4), font, size, color, 1, cv2.LINE_AA)
