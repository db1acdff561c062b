"""Pixels to measures for the face encoder: colour conversion, photo decoding, sharpness, head pose.

Head pose from the 68 dlib landmarks, after removing the roll (the eye line made horizontal):

* yaw: the head as a cylinder with the nose tip on its front. The nose tip's position between the jaw's outer
  points (0 and 16), `across` in [0, 1], is (1 + sin yaw) / 2 for a head turned by yaw, so
  yaw = asin(2 * across - 1). The nose stands out of the cylinder, so this overestimates a turn a little
  (errs on the strict side).
* pitch: `down` = the nose tip's drop below the eye line over the chin's; a frontal face has FRONTAL_NOSE_DROP
  (measured on the shared photos), and tilting by pitch moves the nose tip (NOSE_DEPTH of the eye-chin height
  in front of the face plane) by tan(pitch) of that depth: pitch = atan((FRONTAL_NOSE_DROP - down) / NOSE_DEPTH),
  positive when the head tips up. A rough estimate good to ~10 degrees, enough for a gate that only asks
  "facing the camera or not".
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    Image = npt.NDArray[np.uint8]

SHARPNESS_SIDE = 128
MAX_PHOTO_PIXELS = 40_000_000
FRONTAL_NOSE_DROP = 0.28
NOSE_DEPTH = 0.3


def to_rgb(image: Image, *, bgr: bool) -> Image:
    """A contiguous RGB copy (or view) of a grey, BGR(A) or RGB(A) uint8 image; ValueError for anything else."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        raise ValueError("a face image must be a non-empty uint8 numpy array")
    if image.ndim == 2:
        return _u8(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"a face image must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
    if image.shape[2] == 4:
        return _u8(cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB))
    return _u8(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)) if bgr else np.ascontiguousarray(image)


def _u8(image: npt.NDArray[Any]) -> Image:
    return np.asarray(image, dtype=np.uint8)


def sharpness(grey_crop: npt.NDArray[Any]) -> float:
    """Variance of the Laplacian of a grey face crop scaled to SHARPNESS_SIDE px, so faces of any size compare."""
    h, w = grey_crop.shape[:2]
    if h == 0 or w == 0:
        return 0.0
    scaled = cv2.resize(
        grey_crop,
        (SHARPNESS_SIDE, SHARPNESS_SIDE),
        interpolation=cv2.INTER_AREA if min(h, w) > SHARPNESS_SIDE else cv2.INTER_LINEAR,
    )
    return float(cv2.Laplacian(scaled, cv2.CV_64F).var())


def head_pose(points: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(yaw, pitch) in degrees from the 68 landmarks; see the module's notes on the estimate."""
    eye_r, eye_l = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    dx, dy = eye_l - eye_r
    c, s = np.cos(-np.arctan2(dy, dx)), np.sin(-np.arctan2(dy, dx))
    upright = (points - (eye_r + eye_l) / 2) @ np.array([[c, s], [-s, c]])  # roll removed: eyes on y = 0
    jaw_r, jaw_l, nose, chin = upright[0], upright[16], upright[30], upright[8]
    across = (nose[0] - jaw_r[0]) / max(jaw_l[0] - jaw_r[0], 1e-6)
    yaw = np.degrees(np.arcsin(np.clip(2 * across - 1, -1, 1)))
    down = nose[1] / max(chin[1], 1e-6)
    pitch = np.degrees(np.arctan((FRONTAL_NOSE_DROP - down) / NOSE_DEPTH))
    return float(yaw), float(pitch)


def decode_photo(data: bytes) -> Image:
    """Uploaded bytes to an RGB image: OpenCV (applies EXIF orientation), else PIL; ValueError if neither reads it."""
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with PILImage.open(io.BytesIO(data)) as header:
            pixels = header.size[0] * header.size[1]
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        pixels, why = 0, str(exc)
    else:
        why = ""
    if pixels > MAX_PHOTO_PIXELS:
        raise ValueError(f"{pixels} pixels, more than {MAX_PHOTO_PIXELS}")
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) if data else None
    if bgr is not None:
        return _u8(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        why = why or str(exc)
    raise ValueError(why or "no decoder reads it")
