"""Face detection, quality gates and 128-d encodings: the face encoder as a small library.

The real encoder is `DlibFaceEncoder` (face_recognition over dlib: HOG detector, 68-point landmarks,
ResNet encoder); `FakeFaceEncoder` answers from a table for logic tests. Both speak `FaceEncoder`.

The API:

* `analyze(image, *, bgr=True) -> list[FaceFound]`: every face the HOG detector finds, largest first
  (by box area), each with its `Quality`; only the largest carries an `encoding` (float32, shape (128,)),
  and only when `encode_largest` is true (the default) and it passes the encoder's quality `gates` (a
  face the matcher would skip is not worth the encoder's ~80 ms). Detection runs on the image scaled to
  `detect_width` pixels wide (never upscaled), with `upsample` HOG upsampling passes; boxes are in
  the coordinates of the image given. An image that is not an HxWx3 (or HxW, or HxWx4) uint8 array
  raises `FaceImageError`.
* `enroll(data: bytes) -> Enrolled`: one photo as uploaded (JPEG/PNG/WebP bytes) to one encoding,
  under `ENROLLMENT_GATES`; raises `EnrollmentError(code, message, details)` with code one of
  `ENROLLMENT_CODES`.
* `QualityGates.failed(quality) -> str | None`: the first gate a face fails, as a stable code.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from drivers.errors import DriverError, MissingDependencyError
from drivers.face_image import decode_photo, head_pose, sharpness, to_rgb

if TYPE_CHECKING:
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

    def __reduce__(self) -> tuple[type[EnrollmentError], tuple[str, str, dict[str, object]]]:
        return (type(self), (self.code, self.message, self.details))  # picklable across a worker process


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
    """Thresholds a face must pass to be matched (at the gate) or enrolled (stricter: `ENROLLMENT_GATES`).

    Tuned on the shared photos (each photo's measured figures are tabled in tests/drivers/test_face.py): the
    frontal photos give blur 200-1900 (on the crop scaled to 128 px), brightness 110-150, |yaw| <= 20 and
    |pitch| <= 8; a soft video still gives blur 67. Gates are checked in the order of `failed`.
    """

    min_face_px: int = 80
    min_blur: float = 30.0
    min_brightness: float = 40.0
    max_brightness: float = 220.0
    max_yaw_deg: float = 30.0
    max_pitch_deg: float = 25.0

    def failed(self, q: Quality) -> str | None:
        """The first gate `q` fails, as a code of `ENROLLMENT_CODES` (face_too_small, blurry, ...), or None."""
        if q.face_px < self.min_face_px:
            return "face_too_small"
        if q.brightness < self.min_brightness:
            return "too_dark"
        if q.brightness > self.max_brightness:
            return "too_bright"
        if q.blur < self.min_blur:
            return "blurry"
        if abs(q.yaw_deg) > self.max_yaw_deg or abs(q.pitch_deg) > self.max_pitch_deg:
            return "head_turned"
        return None

    def details(self, code: str, q: Quality) -> dict[str, object]:
        """Machine-readable details for a failed gate `code` (the limit and the measured value)."""
        if code == "face_too_small":
            return {"min_face_px": self.min_face_px, "face_px": q.face_px}
        if code == "blurry":
            return {"min_blur": self.min_blur, "blur": round(q.blur, 1)}
        if code in ("too_dark", "too_bright"):
            limits = {"min_brightness": self.min_brightness, "max_brightness": self.max_brightness}
            return {**limits, "brightness": round(q.brightness, 1)}
        if code == "head_turned":
            return {
                "max_yaw_deg": self.max_yaw_deg,
                "max_pitch_deg": self.max_pitch_deg,
                "yaw_deg": round(q.yaw_deg, 1),
                "pitch_deg": round(q.pitch_deg, 1),
            }
        return {}


# No gate at all: every face found is encoded (the technician's `starfish face compare`, distance studies).
NO_GATES = QualityGates(
    min_face_px=0, min_blur=0.0, min_brightness=0.0, max_brightness=255.0, max_yaw_deg=180.0, max_pitch_deg=180.0
)
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


GOOD_QUALITY = Quality(face_px=200, blur=300.0, brightness=120.0, yaw_deg=0.0, pitch_deg=0.0)
"""A quality every gate passes (the fake's default)."""


def fake_face(
    encoding: Iterable[float] | None = None, *, quality: Quality = GOOD_QUALITY, box: Box | None = None
) -> FaceFound:
    """A `FaceFound` for logic tests: `encoding` as float32 (128 values), a square box of `quality.face_px`."""
    enc = None if encoding is None else np.asarray(list(encoding), dtype=np.float32)
    side = quality.face_px
    return FaceFound(box=box or Box(top=10, right=10 + side, bottom=10 + side, left=10), quality=quality, encoding=enc)


AnalyzeAnswer = list[FaceFound] | Callable[["Image"], list[FaceFound]]
EnrollAnswer = Enrolled | EnrollmentError | Callable[[bytes], Enrolled]


class FakeFaceEncoder:
    """A `FaceEncoder` answering from what the test gives it, for logic tests of the gate and the cloud.

    `analyze` is either a callable (image -> faces) or an iterable of answers taken one per call (each a list of
    faces, or a callable); once the queue is empty every frame has no face. `enroll` likewise: an `Enrolled`,
    an `EnrollmentError` to raise, or a callable; an empty queue raises `no_face`. `delay_ms` makes every call
    take that long (sleeping; `spin=True` burns the CPU instead, as dlib does), to make a busy face worker.
    `calls` counts the calls. Picklable when given no lambdas, so it can run in a worker process.
    """

    def __init__(
        self,
        *,
        analyze: Callable[[Image], list[FaceFound]] | Iterable[AnalyzeAnswer] = (),
        enroll: Callable[[bytes], Enrolled] | Iterable[EnrollAnswer] = (),
        delay_ms: float = 0.0,
        spin: bool = False,
    ) -> None:
        self._analyze: deque[AnalyzeAnswer] = deque([analyze] if callable(analyze) else analyze)
        self._analyze_forever = callable(analyze)
        self._enroll: deque[EnrollAnswer] = deque([enroll] if callable(enroll) else enroll)
        self._enroll_forever = callable(enroll)
        self.delay_ms = delay_ms
        self.spin = spin
        self.calls = 0

    def _take_time(self) -> None:
        self.calls += 1
        if self.delay_ms <= 0:
            return
        if not self.spin:
            time.sleep(self.delay_ms / 1000)
            return
        end = time.perf_counter() + self.delay_ms / 1000
        while time.perf_counter() < end:
            pass

    def analyze(self, image: Image, *, bgr: bool = True, encode_largest: bool = True) -> list[FaceFound]:
        """The next answer of the queue (or the callable's), largest face first; no encoding unless asked."""
        self._take_time()
        if not self._analyze:
            return []
        answer = self._analyze[0] if self._analyze_forever else self._analyze.popleft()
        faces = answer(image) if callable(answer) else answer
        faces = sorted(faces, key=lambda f: f.box.area, reverse=True)
        return [f if (encode_largest and i == 0) else FaceFound(f.box, f.quality) for i, f in enumerate(faces)]

    def enroll(self, data: bytes) -> Enrolled:
        """The next enrollment answer: an `Enrolled`, or the queued `EnrollmentError` raised."""
        self._take_time()
        if not self._enroll:
            raise EnrollmentError("no_face", "No face was found in the photo.")
        answer = self._enroll[0] if self._enroll_forever else self._enroll.popleft()
        if isinstance(answer, EnrollmentError):
            raise answer
        return answer(data) if callable(answer) else answer


class DlibFaceEncoder:
    """The real encoder: face_recognition's dlib models (HOG detector, 68-point landmarks, ResNet encoder).

    `model` names the landmarks the encoder aligns with ("large": the 68 points, face_recognition's default;
    "small": the 5-point model, a little faster). The head pose always comes from the 68 points.
    """

    def __init__(
        self,
        *,
        detect_width: int = 320,
        upsample: int = 0,
        model: str = "large",
        num_jitters: int = 1,
        gates: QualityGates = QualityGates(),
        enrollment_gates: QualityGates = ENROLLMENT_GATES,
        enroll_detect_side: int = 1024,
    ) -> None:
        if model not in ("large", "small"):
            raise ValueError(f"model must be 'large' or 'small', got {model!r}")
        try:
            import dlib

            with warnings.catch_warnings():  # face_recognition_models still imports pkg_resources
                warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
                from face_recognition import api
        except ImportError as exc:
            raise MissingDependencyError(
                "face_recognition", "DlibFaceEncoder", "install it: uv add dlib-bin face_recognition"
            ) from exc
        self._dlib = dlib
        self._detector = api.face_detector
        self._landmarks68 = api.pose_predictor_68_point
        self._landmarks5 = api.pose_predictor_5_point if model == "small" else None
        self._encoder = api.face_encoder
        self.detect_width = detect_width
        self.upsample = upsample
        self.num_jitters = num_jitters
        self.gates = gates
        self.enrollment_gates = enrollment_gates
        self.enroll_detect_side = enroll_detect_side

    def analyze(self, image: Image, *, bgr: bool = True, encode_largest: bool = True) -> list[FaceFound]:
        """Every face found, largest first, with its quality; the largest one encoded (see the module's CONTRACT)."""
        try:
            rgb = to_rgb(image, bgr=bgr)
        except ValueError as exc:
            raise FaceImageError(str(exc)) from exc
        boxes = self._detect(rgb, self.detect_width, self.upsample)
        return self._describe(rgb, boxes, encode_largest, skip_below=self.gates)

    def enroll(self, data: bytes) -> Enrolled:
        """One uploaded photo to one encoding under the enrollment gates, or `EnrollmentError` saying why not.

        "Several faces of similar size": the second largest face's box side is at least 0.7 times the largest's
        (a bystander far behind the holder does not refuse the photo; two people side by side do).
        """
        if len(data) > MAX_PHOTO_BYTES:
            raise EnrollmentError(
                "file_too_large",
                f"The photo is larger than {MAX_PHOTO_BYTES // (1024 * 1024)} MiB.",
                {"max_bytes": MAX_PHOTO_BYTES, "bytes": len(data)},
            )
        try:
            rgb = decode_photo(data)
        except ValueError as exc:
            raise EnrollmentError(
                "unreadable_image", "The file is not an image we can read.", {"reason": str(exc)}
            ) from exc
        h, w = rgb.shape[:2]
        boxes = self._detect(rgb, round(w * min(1.0, self.enroll_detect_side / max(h, w))), 1)
        if not boxes:
            raise EnrollmentError("no_face", "No face was found in the photo.")
        if len(boxes) > 1 and _side(boxes[1]) >= SIMILAR_FACE_RATIO * _side(boxes[0]):
            raise EnrollmentError(
                "several_faces", "The photo shows several faces; it must show only the holder.", {"faces": len(boxes)}
            )
        largest = self._describe(rgb, boxes[:1], encode_largest=True)[0]
        failed = self.enrollment_gates.failed(largest.quality)
        if failed is not None:
            raise EnrollmentError(failed, _GATE_TEXT[failed], self.enrollment_gates.details(failed, largest.quality))
        assert largest.encoding is not None
        return Enrolled(encoding=largest.encoding, box=largest.box, quality=largest.quality)

    def _detect(self, rgb: Image, width: int, upsample: int) -> list[Box]:
        h, w = rgb.shape[:2]
        scale = min(1.0, width / w)
        small = (
            rgb
            if scale >= 1.0
            else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        )
        boxes = [
            Box(
                top=max(0, round(r.top() / scale)),
                right=min(w, round(r.right() / scale)),
                bottom=min(h, round(r.bottom() / scale)),
                left=max(0, round(r.left() / scale)),
            )
            for r in self._detector(small, upsample)
        ]
        return sorted((b for b in boxes if b.area > 0), key=lambda b: b.area, reverse=True)

    def _describe(
        self, rgb: Image, boxes: list[Box], encode_largest: bool, skip_below: QualityGates | None = None
    ) -> list[FaceFound]:
        """Quality per face; the largest encoded unless it fails `skip_below` (the encoder's ~80 ms are
        spent only on a face the matcher would look at)."""
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        found = []
        for i, box in enumerate(boxes):
            rect = self._dlib.rectangle(box.left, box.top, box.right, box.bottom)
            shape = self._landmarks68(rgb, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            yaw, pitch = head_pose(points)
            crop = grey[box.top : box.bottom, box.left : box.right]
            quality = Quality(
                face_px=min(box.width, box.height),
                blur=sharpness(crop),
                brightness=float(crop.mean()),
                yaw_deg=yaw,
                pitch_deg=pitch,
            )
            encoding = None
            if i == 0 and encode_largest and (skip_below is None or skip_below.failed(quality) is None):
                if self._landmarks5 is not None:
                    shape = self._landmarks5(rgb, rect)
                encoding = np.asarray(
                    self._encoder.compute_face_descriptor(rgb, shape, self.num_jitters), dtype=np.float32
                )
            found.append(FaceFound(box=box, quality=quality, encoding=encoding))
        return found


SIMILAR_FACE_RATIO = 0.7
_GATE_TEXT = {
    "face_too_small": "The face is too small in the photo; come closer or use a larger photo.",
    "blurry": "The photo is blurry.",
    "too_dark": "The face is too dark.",
    "too_bright": "The face is too bright.",
    "head_turned": "The head is turned; look straight at the camera.",
}


def _side(box: Box) -> int:
    return min(box.width, box.height)
