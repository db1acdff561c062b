"""QR decoder benchmark: decode rate on the shared photos and time per 640x480 frame.

python -m bench.qr_decode [--json] [--iterations N] [--testdata DIR] [--variants]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import segno

from drivers.qr import DECODER_NAMES, QrDecoder, ZxingDecoder, load_image, make_decoder
from harness.testdata import SHARED_TESTDATA

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FRAME_WIDTH, FRAME_HEIGHT = 640, 480


@dataclass(frozen=True, slots=True)
class Photo:
    """A shared test photo and the text its QR code holds."""

    path: Path
    expected: str


def load_photos(testdata: Path) -> list[Photo]:
    """Every image under testdata/qr-photos (or testdata itself) that has a NAME.txt with its text."""
    root = testdata / "qr-photos" if (testdata / "qr-photos").is_dir() else testdata
    photos = []
    for path in sorted(root.rglob("*")):
        expected = path.with_suffix(".txt")
        if path.suffix.lower() in IMAGE_SUFFIXES and expected.is_file():
            # Bytes, not read_text(): the payloads hold \r\n that universal newlines would rewrite.
            photos.append(Photo(path, expected.read_bytes().decode("utf-8").strip()))
    return photos


def decodes_correctly(decoder: QrDecoder, image: np.ndarray, expected: str) -> bool:
    """True when one of the decoded codes has the expected text (ignoring surrounding whitespace)."""
    return any(code.text.strip() == expected for code in decoder.decode(image))


def bench_decoders(names: Sequence[str] = DECODER_NAMES, variants: bool = False) -> dict[str, QrDecoder]:
    """The decoders to measure by name; with variants, also zxing with one binarizer at a time."""
    decoders = {name: make_decoder(name) for name in names}
    if variants:
        for binarizer in ("local_average", "global_histogram"):
            decoders[f"zxing[{binarizer}]"] = ZxingDecoder(binarizers=(binarizer,))
    return decoders


def photo_decode_rates(testdata: Path, decoders: Mapping[str, QrDecoder] | None = None) -> dict[str, dict[str, Any]]:
    """Per decoder: photos decoded correctly, total, rate and the names it missed."""
    photos = load_photos(testdata)
    if not photos:
        raise FileNotFoundError(f"no QR photos with .txt under {testdata}")
    decoders = bench_decoders() if decoders is None else decoders
    images = [load_image(photo.path) for photo in photos]
    rates: dict[str, dict[str, Any]] = {}
    for name, decoder in decoders.items():
        missed = [
            str(photo.path.relative_to(photo.path.parents[1]))
            for photo, image in zip(photos, images, strict=True)
            if not decodes_correctly(decoder, image, photo.expected)
        ]
        decoded = len(photos) - len(missed)
        rates[name] = {"decoded": decoded, "total": len(photos), "rate": decoded / len(photos), "missed": missed}
    return rates


def synthetic_payload(seed: int = 0) -> str:
    """A 140-character ticket-like text: "SF" and base32, like a signed compact token."""
    body = base64.b32encode(random.Random(seed).randbytes(90)).decode("ascii").rstrip("=")
    return ("SF" + body)[:140]


def synthetic_frame(text: str | bytes, *, module_px: int = 6, background: int = 170) -> np.ndarray:
    """A 640x480 BGR frame with the QR code of text (ECC level M, bytes in byte mode) centred on grey."""
    modules = np.array([list(row) for row in segno.make(text, error="m", micro=False).matrix], dtype=np.uint8)
    code = np.pad(np.where(modules == 1, 0, 255).astype(np.uint8), 4, constant_values=255)
    code = np.kron(code, np.ones((module_px, module_px), dtype=np.uint8))
    height, width = code.shape
    if height > FRAME_HEIGHT or width > FRAME_WIDTH:
        raise ValueError(f"a {width}x{height} px code does not fit a {FRAME_WIDTH}x{FRAME_HEIGHT} frame")
    frame = np.full((FRAME_HEIGHT, FRAME_WIDTH), background, dtype=np.uint8)
    top, left = (FRAME_HEIGHT - height) // 2, (FRAME_WIDTH - width) // 2
    frame[top : top + height, left : left + width] = code
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)


def empty_frame() -> np.ndarray:
    """A 640x480 BGR frame with nothing in view."""
    return np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), 128, dtype=np.uint8)


def _timings_ms(decoder: QrDecoder, image: np.ndarray, iterations: int) -> tuple[float, float]:
    for _ in range(5):  # warm-up: lazy tables, caches, CPU clock
        decoder.decode(image)
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        decoder.decode(image)
        samples.append((time.perf_counter() - start) * 1000)
    return float(np.median(samples)), float(np.percentile(samples, 99))


def frame_decode_timings(
    iterations: int = 200, decoders: Mapping[str, QrDecoder] | None = None
) -> dict[str, dict[str, Any]]:
    """Per decoder: median and p99 ms on a 640x480 frame with a QR code and on an empty one."""
    decoders = bench_decoders() if decoders is None else decoders
    text = synthetic_payload()
    with_code, empty = synthetic_frame(text), empty_frame()
    timings: dict[str, dict[str, Any]] = {}
    for name, decoder in decoders.items():
        qr_median, qr_p99 = _timings_ms(decoder, with_code, iterations)
        empty_median, empty_p99 = _timings_ms(decoder, empty, iterations)
        timings[name] = {
            "qr_decoded": decodes_correctly(decoder, with_code, text),
            "qr_median_ms": qr_median,
            "qr_p99_ms": qr_p99,
            "empty_median_ms": empty_median,
            "empty_p99_ms": empty_p99,
        }
    return timings


def format_table(rates: Mapping[str, Mapping[str, Any]], timings: Mapping[str, Mapping[str, Any]]) -> str:
    """The figures as a plain-text table."""
    lines = [f"{'decoder':<26} {'photos':>8} {'rate':>6}  {'QR frame med/p99 ms':>20}  {'empty frame med/p99 ms':>23}"]
    for name, rate in rates.items():
        t = timings[name]
        qr = f"{t['qr_median_ms']:.2f} / {t['qr_p99_ms']:.2f}" + ("" if t["qr_decoded"] else " (missed)")
        empty = f"{t['empty_median_ms']:.2f} / {t['empty_p99_ms']:.2f}"
        photos = f"{rate['decoded']}/{rate['total']}"
        lines.append(f"{name:<26} {photos:>8} {rate['rate']:>6.0%}  {qr:>20}  {empty:>23}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print photo decode rates and frame timings per decoder."""
    parser = argparse.ArgumentParser(prog="python -m bench.qr_decode", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--iterations", type=int, default=200, help="timed decodes per frame (default 200)")
    parser.add_argument("--testdata", type=Path, default=SHARED_TESTDATA, help="folder holding qr-photos/")
    parser.add_argument("--variants", action="store_true", help="also measure zxing with a single binarizer")
    args = parser.parse_args(argv)
    decoders = bench_decoders(variants=args.variants)
    rates = photo_decode_rates(args.testdata, decoders)
    timings = frame_decode_timings(args.iterations, decoders)
    if args.json:
        print(json.dumps({"photo_decode_rates": rates, "frame_decode_timings": timings}, indent=2))
    else:
        print(format_table(rates, timings))
        for name, rate in rates.items():
            if rate["missed"]:
                print(f"{name} missed: {', '.join(rate['missed'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
