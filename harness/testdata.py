"""Where the shared test images live (QR photos, face photos and frames): ../shared/testdata beside the repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

SHARED_TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
FACES = SHARED_TESTDATA / "faces"


def portrait_frame(path: Path) -> npt.NDArray[np.uint8]:
    """A portrait photo as a 640x480 BGR camera frame: its top 60 % fills the height (a skier near the lens)."""
    import cv2

    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(path)
    h, w = image.shape[:2]
    s = 480 / (h * 0.6)
    big = cv2.resize(image, (round(w * s), round(h * s)))[:480, :640]
    out = np.zeros((480, 640, 3), np.uint8)
    x = (640 - big.shape[1]) // 2
    out[: big.shape[0], x : x + big.shape[1]] = big
    return out
