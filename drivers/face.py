"""Face detection, quality gates and 128-d encodings: the face encoder as a small library.

The real encoder is `DlibFaceEncoder` (face_recognition over dlib: HOG detector, 68-point landmarks,
ResNet encoder); `FakeFaceEncoder` answers from a table for logic tests. Both speak `FaceEncoder`.

CONTRACT (written before the implementation; the implementer keeps these names and shapes):

* `analyze(image, *, bgr=True) -> list[FaceFound]`: every face the HOG detector finds, largest first
  (by box area), each with its `Quality`; only the largest carries an `encoding` (float32, shape (128,)),
  and only when `encode_largest` is true (the default). Detection runs on the image scaled to
  `detect_width` pixels wide (never upscaled), with `upsample` HOG upsampling passes; boxes are in
  the coordinates of the image given. An image that is not an HxWx3 (or HxW, or HxWx4) uint8 array
  raises `FaceImageError`.
* `enroll(data: bytes) -> Enrolled`: one photo as uploaded (JPEG/PNG/WebP bytes) to one encoding,
  under `ENROLLMENT_GATES`; raises `EnrollmentError(code, message, details)` with code one of
  `ENROLLMENT_CODES`.
* `QualityGates.failed(quality) -> str | None`: the first gate a face fails, as a stable code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from drivers.errors import DriverError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Encoding = npt.NDArray[np.float32]
    Image = npt.NDArray[np.uint8]

# What enrollment refuses, each with its own code (the cloud maps them to HTTP 422 with en/zh-CN text).
ENROLLMENT_CODES = (
    "unreadable_image",  # not an image a decoder reads (details: why)
    "file_too_large",  # details: max_bytes
    "no_face",
    "several_faces",  # two or more faces of similar size (details: faces)
    "face_too_small",  # details: min_face_px, face_px
    "blurry",  # details: min_blur, blur
    "too_dark",  # details: brightness range, brightness
    "too_bright",
    "head_turned",  # details: max_yaw_deg, max_pitch_deg, yaw_deg, pitch_deg
)
MAX_PHOTO_BYTES = 5 * 1024 * 1024


class FaceError(DriverError):
    """Base of the face encoder's errors."""


class FaceImageError(FaceError):
    """The image handed in is no image the encoder can read."""


class EnrollmentError(FaceError):
    """A photo that cannot be enrolled, and why (a stable `code`, a sentence, machine-readable details)."""

    def __init__(self, code: str, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass(frozen=True, slots=True)
class Box:
    """A face's box in image pixels (face_recognition's order: top, right, bottom, left)."""

    top: int
    right: int
    bottom: int
    left: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)


@dataclass(frozen=True, slots=True)
class Quality:
    """What the quality gates look at for one face."""

    face_px: int  # the box's shorter side, in pixels of the image given
    blur: float  # variance of the Laplacian of the face crop (grey): low is blurry
    brightness: float  # mean grey level of the face crop, 0-255
    yaw_deg: float  # head turned left/right, estimated from the landmarks (0: facing the camera)
    pitch_deg: float  # head up/down, estimated from the landmarks


@dataclass(frozen=True, slots=True)
class QualityGates:
    """Thresholds a face must pass to be matched (at the gate) or enrolled (stricter: `ENROLLMENT_GATES`)."""

    min_face_px: int = 80
    min_blur: float = 30.0
    min_brightness: float = 40.0
    max_brightness: float = 220.0
    max_yaw_deg: float = 30.0
    max_pitch_deg: float = 25.0

    def failed(self, q: Quality) -> str | None:
        """The first gate `q` fails, as a code of `ENROLLMENT_CODES` (face_too_small, blurry, ...), or None."""
        raise NotImplementedError  # implemented by the face encoder's author


ENROLLMENT_GATES = QualityGates(
    min_face_px=120, min_blur=60.0, min_brightness=50.0, max_brightness=210.0, max_yaw_deg=20.0, max_pitch_deg=20.0
)


@dataclass(frozen=True, slots=True)
class FaceFound:
    box: Box
    quality: Quality
    encoding: Encoding | None = field(default=None, compare=False)  # only the largest face's


@dataclass(frozen=True, slots=True)
class Enrolled:
    encoding: Encoding = field(compare=False)
    box: Box
    quality: Quality


class FaceEncoder(Protocol):
    """What the gate and the cloud need of a face encoder."""

    def analyze(self, image: Image, *, bgr: bool = True, encode_largest: bool = True) -> list[FaceFound]: ...

    def enroll(self, data: bytes) -> Enrolled: ...
