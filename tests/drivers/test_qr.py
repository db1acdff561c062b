"""QR decoders against the shared real photos and synthetic 640x480 camera frames."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.qr_decode import Photo, decodes_correctly, load_photos, synthetic_frame, synthetic_payload
from drivers.errors import DriverError, MissingDependencyError
from drivers.qr import (
    DECODER_NAMES,
    DEFAULT_DECODER,
    ChainDecoder,
    DecodedCode,
    QrDecoder,
    ZxingDecoder,
    load_image,
    make_decoder,
)
from harness.testdata import SHARED_TESTDATA as TESTDATA

SINGLE_DECODERS = ("zxing", "pyzbar", "opencv")
# Sharp, front-on codes in each file format that every decoder reads.
CLEAR_PHOTOS = (
    "qrcode-1/1.webp",
    "qrcode-2/#199.webp",
    "qrcode-2/#199b.jpg",
    "qrcode-2/14.png",
    "qrcode-3/05.webp",
    "qrcode-3/28.webp",
)


@pytest.fixture(scope="module")
def photos() -> dict[str, Photo]:
    if not (TESTDATA / "qr-photos").is_dir():
        pytest.skip(f"shared QR photos not found at {TESTDATA / 'qr-photos'}")
    return {str(p.path.relative_to(p.path.parents[1])): p for p in load_photos(TESTDATA)}


@pytest.fixture(scope="module")
def decoders() -> dict[str, QrDecoder]:
    return {name: make_decoder(name) for name in DECODER_NAMES}


def photos_read(decoder: QrDecoder, photos: dict[str, Photo]) -> set[str]:
    return {
        name for name, photo in photos.items() if decodes_correctly(decoder, load_image(photo.path), photo.expected)
    }


def rotated(frame: np.ndarray, degrees: float) -> np.ndarray:
    height, width = frame.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(frame, matrix, (width, height), borderValue=(170, 170, 170))


def blurred(frame: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(frame, (0, 0), sigma)


def noisy(frame: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("photo_name", CLEAR_PHOTOS)
@pytest.mark.parametrize("decoder_name", SINGLE_DECODERS)
def test_clear_photo_is_read_by_every_decoder(
    photos: dict[str, Photo], decoders: dict[str, QrDecoder], decoder_name: str, photo_name: str
) -> None:
    photo = photos[photo_name]

    codes = decoders[decoder_name].decode(load_image(photo.path))

    assert [code.text.strip() for code in codes] == [photo.expected]
    assert codes[0].decoder == decoder_name


@pytest.mark.parametrize("decoder_name", DECODER_NAMES)
def test_decoder_returns_codes_without_raising_on_every_shared_photo(
    photos: dict[str, Photo], decoders: dict[str, QrDecoder], decoder_name: str
) -> None:
    for photo in photos.values():
        codes = decoders[decoder_name].decode(load_image(photo.path))

        assert all(isinstance(code, DecodedCode) for code in codes), photo.path


def test_chain_and_default_read_at_least_as_many_photos_as_the_best_single_decoder(
    photos: dict[str, Photo], decoders: dict[str, QrDecoder]
) -> None:
    best_single = max(len(photos_read(decoders[name], photos)) for name in SINGLE_DECODERS)

    assert len(photos_read(decoders["chain"], photos)) >= best_single
    assert len(photos_read(decoders[DEFAULT_DECODER], photos)) >= best_single


def test_shift_jis_photo_reads_as_text_and_zxing_keeps_its_raw_bytes(photos: dict[str, Photo]) -> None:
    # 31.webp holds Shift_JIS bytes without an ECI marker: zxing guesses the charset, the raw bytes stay.
    photo = photos["qrcode-2/31.webp"]

    (code,) = make_decoder("zxing").decode(load_image(photo.path))

    assert code.text == photo.expected
    assert code.raw.decode("shift_jis") == code.text


@pytest.mark.parametrize("decoder_name", SINGLE_DECODERS)
def test_binary_payload_reads_as_latin1_text(decoders: dict[str, QrDecoder], decoder_name: str) -> None:
    payload = bytes(range(256))[::-3]

    (code,) = decoders[decoder_name].decode(synthetic_frame(payload, module_px=4))

    assert code.text == payload.decode("latin-1")
    if decoder_name == "zxing":  # pyzbar and OpenCV hand over UTF-8, not the payload bytes
        assert code.raw == payload


@pytest.mark.parametrize("decoder_name", DECODER_NAMES)
def test_ticket_code_in_a_clean_camera_frame_is_read(decoders: dict[str, QrDecoder], decoder_name: str) -> None:
    ticket = synthetic_payload(seed=1)

    codes = decoders[decoder_name].decode(synthetic_frame(ticket))

    assert codes == [DecodedCode(text=ticket, raw=ticket.encode("ascii"), decoder=codes[0].decoder)]


@pytest.mark.parametrize(
    "degrade",
    [
        pytest.param(lambda f: noisy(f, sigma=25), id="sensor-noise"),
        pytest.param(lambda f: blurred(f, sigma=1.5), id="out-of-focus"),
        pytest.param(lambda f: rotated(f, degrees=25), id="ticket-held-askew"),
        pytest.param(lambda f: rotated(f, degrees=90), id="phone-turned-sideways"),
        pytest.param(lambda f: noisy(blurred(rotated(f, 15), 1.0), sigma=15), id="askew-soft-and-noisy"),
        pytest.param(lambda f: cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), id="grayscale-camera"),
    ],
)
@pytest.mark.parametrize("decoder_name", ["zxing", "chain"])
def test_ticket_code_in_a_degraded_camera_frame_is_read(
    decoders: dict[str, QrDecoder], decoder_name: str, degrade: Callable[[np.ndarray], np.ndarray]
) -> None:
    ticket = synthetic_payload(seed=2)

    codes = decoders[decoder_name].decode(degrade(synthetic_frame(ticket)))

    assert [code.text for code in codes] == [ticket]


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(np.full((480, 640, 3), 128, np.uint8), id="blank"),
        pytest.param(np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8), id="random-noise"),
        pytest.param(np.zeros((0, 0, 3), np.uint8), id="zero-size"),
        pytest.param(np.zeros((1, 1), np.uint8), id="one-pixel"),
        pytest.param(np.zeros((480, 640, 3), np.float32), id="float-pixels"),
        pytest.param(np.zeros((480, 640, 2), np.uint8), id="two-channels"),
        pytest.param(np.zeros((2, 480, 640, 3), np.uint8), id="batch-of-frames"),
    ],
)
@pytest.mark.parametrize("decoder_name", DECODER_NAMES)
def test_frame_without_a_readable_code_gives_no_codes(
    decoders: dict[str, QrDecoder], decoder_name: str, frame: np.ndarray
) -> None:
    assert decoders[decoder_name].decode(frame) == []


class ScriptedDecoder:
    def __init__(self, name: str, codes: list[DecodedCode]) -> None:
        self.name = name
        self.codes = codes
        self.calls = 0

    def decode(self, image: np.ndarray) -> list[DecodedCode]:
        self.calls += 1
        return self.codes


def test_chain_stops_at_the_first_decoder_that_finds_a_code() -> None:
    found = [DecodedCode(text="SFX", raw=b"SFX", decoder="second")]
    first, second, third = ScriptedDecoder("first", []), ScriptedDecoder("second", found), ScriptedDecoder("third", [])
    chain = ChainDecoder(decoders=[first, second, third])

    assert chain.decode(np.zeros((4, 4), np.uint8)) == found
    assert (first.calls, second.calls, third.calls) == (1, 1, 0)


def test_chain_without_decoders_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ChainDecoder(decoders=[])


@pytest.mark.parametrize("name", DECODER_NAMES)
def test_make_decoder_builds_each_configured_name(name: str) -> None:
    assert make_decoder(name).name == name


def test_unknown_decoder_name_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="zxing, pyzbar, opencv, chain"):
        make_decoder("zbarcam")


def test_unknown_zxing_binarizer_is_refused() -> None:
    with pytest.raises(ValueError, match="local_average"):
        ZxingDecoder(binarizers=("otsu",))


def test_missing_zxing_package_is_named_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zxingcpp", None)  # makes `import zxingcpp` fail as if uninstalled

    with pytest.raises(MissingDependencyError, match="zxing-cpp") as caught:
        ZxingDecoder()

    assert caught.value.package == "zxing-cpp"


def test_missing_zbar_shared_library_is_named_at_construction() -> None:
    # A fresh interpreter in which ctypes finds no libzbar.so, as on a machine without apt's libzbar0.
    code = (
        "import ctypes.util\n"
        "ctypes.util.find_library = lambda name: None\n"
        "from drivers.errors import MissingDependencyError\n"
        "from drivers.qr import make_decoder\n"
        "try:\n"
        "    make_decoder('pyzbar')\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc.package, '|', exc)\n"
    )

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    package, message = result.stdout.strip().split(" | ")
    assert package == "libzbar0"
    assert "apt-get install libzbar0" in message


def test_importing_drivers_qr_loads_no_optional_decoder_library() -> None:
    code = "import sys, drivers.qr; print(sorted(m for m in ('zxingcpp', 'pyzbar') if m in sys.modules))"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"


def test_loading_a_missing_image_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match=r"nowhere\.png"):
        load_image(tmp_path / "nowhere.png")


def test_loading_a_corrupt_image_names_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "torn.webp"
    corrupt.write_bytes(b"RIFF\x00\x00not really a webp")

    with pytest.raises(DriverError, match=r"torn\.webp.*not a readable"):
        load_image(corrupt)


def test_loaded_image_is_a_bgr_frame_the_decoders_read(tmp_path: Path) -> None:
    ticket = synthetic_payload(seed=4)
    path = tmp_path / "ticket.png"
    cv2.imwrite(str(path), synthetic_frame(ticket))

    image = load_image(path)

    assert image.shape == (480, 640, 3)
    assert [code.text for code in make_decoder(DEFAULT_DECODER).decode(image)] == [ticket]
