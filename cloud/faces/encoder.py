"""The face encoder the cloud enrolls with: one per process, loaded on the first enrollment.

`drivers.face` (and with it cv2, dlib and face_recognition's ~100 MB of models) is imported only here,
inside functions, so `starfish cloud serve` starts without it. dlib's models are not documented as safe
to share between threads, and enrollments are rare: one at a time per process.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from drivers.face import Enrolled


class Enroller(Protocol):
    """What enrollment needs of `drivers.face.FaceEncoder`."""

    def enroll(self, data: bytes) -> Enrolled: ...


_lock = threading.Lock()
_encoder: Enroller | None = None


def get_face_encoder() -> Enroller:
    """The process's `DlibFaceEncoder` (a dependency: tests replace it with a `FakeFaceEncoder`)."""
    global _encoder
    with _lock:
        if _encoder is None:
            from drivers.face import DlibFaceEncoder

            _encoder = DlibFaceEncoder()
        return _encoder


def encode(encoder: Enroller, photo: bytes) -> Enrolled:
    """`encoder.enroll(photo)`, one at a time; raises `drivers.face.EnrollmentError` as the encoder does."""
    with _lock:
        return encoder.enroll(photo)
