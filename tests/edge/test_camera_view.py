"""The page's camera view: decoders' corner points on real photos, and the frame drawn with its boxes."""

from __future__ import annotations

from datetime import UTC, datetime

import cv2
import numpy as np
import pytest

from drivers.face import Box
from drivers.qr import DecodedCode, QrDecoder, load_image, make_decoder
from edge.camera_view import FrameTap
from harness.testdata import SHARED_TESTDATA as TESTDATA

QR = TESTDATA / "qr-photos"
# Clear codes every decoder reads; in a photo (1.webp) the code is seen at an angle.
PHOTOS = ("qrcode-1/1.webp", "qrcode-2/14.png", "qrcode-3/05.webp", "qrcode-2/#199b.jpg")


@pytest.fixture(scope="module")
def decoders() -> dict[str, QrDecoder]:
    if not QR.is_dir():
        pytest.skip(f"shared QR photos not found at {QR}")
    return {name: make_decoder(name) for name in ("zxing", "pyzbar", "opencv")}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def tap_with_clock() -> tuple[FrameTap, Clock]:
    clock = Clock()
    return FrameTap(monotonic=clock, clock=lambda: datetime(2026, 1, 10, 9, 30, tzinfo=UTC)), clock


def shown(data: bytes | None) -> np.ndarray:
    assert data is not None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def greenish(image: np.ndarray, x: int, y: int, r: int = 3) -> bool:
    patch = image[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].astype(int)
    b, g, red = patch[..., 0], patch[..., 1], patch[..., 2]
    return bool(((g > 140) & (red < 110) & (b < 110)).any())


def blueish(image: np.ndarray, x: int, y: int, r: int = 3) -> bool:
    patch = image[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].astype(int)
    b, g, red = patch[..., 0], patch[..., 1], patch[..., 2]
    return bool(((b > 170) & (red < 110) & (g < 180)).any())


@pytest.mark.parametrize("photo", PHOTOS)
def test_every_decoder_gives_the_codes_corners_inside_the_image_and_the_decoders_agree(
    decoders: dict[str, QrDecoder], photo: str
) -> None:
    image = load_image(QR / photo)
    h, w = image.shape[:2]
    corners = {}
    for name, decoder in decoders.items():
        (code,) = decoder.decode(image)
        assert len(code.points) == 4, name
        assert all(0 <= x <= w and 0 <= y <= h for x, y in code.points), (name, code.points)
        area = cv2.contourArea(np.array(code.points, np.float32))
        assert area > 0.2 * w * h, (name, area)  # around the code, which fills much of these photos
        corners[name] = code.points

    # Three independent libraries put each corner within a few pixels of one of zxing's.
    for name, pts in corners.items():
        for x, y in pts:
            nearest = min(max(abs(x - zx), abs(y - zy)) for zx, zy in corners["zxing"])
            assert nearest <= 8, (name, pts, corners["zxing"])


def test_decoded_codes_compare_by_content_not_by_where_they_were_seen() -> None:
    a = DecodedCode("T", b"T", "zxing", points=((0, 0), (9, 0), (9, 9), (0, 9)))

    assert a == DecodedCode("T", b"T", "zxing")


def test_no_frame_yet_gives_no_picture() -> None:
    assert FrameTap().jpeg() is None


def test_a_real_photo_is_shown_scaled_with_a_green_box_round_its_code(decoders: dict[str, QrDecoder]) -> None:
    frame = cv2.resize(load_image(QR / "qrcode-2/14.png"), (1280, 1280))  # a big camera frame
    before = frame.copy()
    codes = decoders["zxing"].decode(frame)
    tap, _ = tap_with_clock()

    tap.offer(frame, codes, at=100.0)
    image = shown(tap.jpeg(max_width=640))

    assert image.shape[:2] == (640, 640)
    for x, y in codes[0].points:
        assert greenish(image, x // 2, y // 2), (x, y)
    assert not greenish(image, 320, 320, r=20)  # the middle of the code is not painted
    assert np.array_equal(frame, before)  # drawn on a copy: the decoder and the face worker share the frame


def test_a_face_seen_recently_gets_a_blue_box_and_an_old_one_does_not() -> None:
    frame = load_image(TESTDATA / "faces" / "obama-480p.jpg")
    box = Box(top=100, right=400, bottom=300, left=200)
    tap, clock = tap_with_clock()

    tap.faces([box], at=100.0)
    tap.offer(frame, [], at=101.0)
    recent = shown(tap.jpeg(max_width=4000))
    clock.t += 1.0  # past the cache
    tap.offer(frame, [], at=102.0)  # 2 s after the face was seen
    old = shown(tap.jpeg(max_width=4000))

    assert blueish(recent, 200, 200) and blueish(recent, 300, 300)
    assert not blueish(old, 200, 200) and not blueish(old, 300, 300)


def test_a_frame_without_faces_keeps_the_last_boxes_for_a_moment() -> None:
    frame = np.full((480, 640, 3), 128, np.uint8)
    tap, _ = tap_with_clock()

    tap.faces([Box(top=100, right=300, bottom=300, left=100)], at=100.0)
    tap.faces([], at=100.4)  # the face worker missed it on the next frame
    tap.offer(frame, [], at=100.5)

    assert blueish(shown(tap.jpeg()), 100, 200)


def test_the_picture_is_reused_for_a_fifth_of_a_second_then_made_again() -> None:
    grey, white = np.full((240, 320, 3), 128, np.uint8), np.full((240, 320, 3), 255, np.uint8)
    tap, clock = tap_with_clock()

    tap.offer(grey, [], at=100.0)
    first = tap.jpeg()
    tap.offer(white, [], at=100.1)
    clock.t += 0.1
    again = tap.jpeg()
    clock.t += 0.2
    later = tap.jpeg()

    assert again is first
    assert shown(later)[200, 160].mean() > 240 and shown(first)[200, 160].mean() < 140


def test_a_grey_camera_frame_is_shown_in_colour_with_its_time() -> None:
    frame = np.full((480, 640), 90, np.uint8)
    tap, _ = tap_with_clock()

    tap.offer(frame, [], at=100.0)
    image = shown(tap.jpeg())

    assert image.shape == (480, 640, 3)
    assert image[5:20, 5:100].max() > 200  # the timestamp's white text on its black band


def test_a_frame_the_camera_stopped_sending_says_its_age_in_red() -> None:
    frame = np.full((480, 640, 3), 90, np.uint8)
    tap, clock = tap_with_clock()

    tap.offer(frame, [], at=100.0)
    clock.t = 130.0
    band = shown(tap.jpeg())[0:30, 0:300].astype(int)

    assert ((band[..., 2] > 150) & (band[..., 1] < 90)).any()
