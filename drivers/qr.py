"""QR decoders behind one Protocol: zxing-cpp, pyzbar (libzbar0), OpenCV, and a chain of them."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from drivers.errors import DriverError, MissingDependencyError

DECODER_NAMES = ("zxing", "pyzbar", "opencv", "chain")

DEFAULT_DECODER = "zxing"
"""Picked by measurement: `python -m bench.qr_decode --variants` (2 shared cores, zxing-cpp 3.1.1, OpenCV 5.0).

decoder                  photos  QR frame med/p99 ms  empty frame med/p99 ms
zxing                    80/82   0.44 / 0.75          0.45 / 0.54
pyzbar                   54/82   4.11 / 6.48          2.77 / 3.92
opencv                   23/82   11.7 / 15.9          4.83 / 6.36
chain (zxing, pyzbar)    80/82   0.47 / 0.67          3.41 / 5.88
zxing[local_average]     79/82   0.45 / 0.62          0.29 / 0.40
zxing[global_histogram]  72/82   0.34 / 0.53          0.22 / 0.33

No decoder or chain reads more than 80 of the 82 photos (qrcode-2/12 and 13, artistic codes without a
quiet zone, defeat all of them). The one photo zxing's LocalAverage binarizer misses (qrcode-2/28, a code
printed on a rough surface) is read by its GlobalHistogram pass and by pyzbar alike; the second pass
costs ~0.15 ms on an empty frame where the chain's pyzbar costs ~3 ms. So "zxing" reads as many as the
chain at a seventh of its cost on the frames a gate mostly sees (nothing in view). OpenCV reads nothing
the others miss.
"""

_BINARIZERS = ("local_average", "global_histogram", "fixed_threshold", "bool_cast")


@dataclass(frozen=True, slots=True)
class DecodedCode:
    """One QR code found in an image.

    raw is the payload as the library hands it over: zxing gives the exact bytes, while pyzbar and OpenCV
    transcode non-ASCII payloads to UTF-8 first. For the ASCII tokens on our tickets they are the same.
    points are the code's corners in image pixels, as the library reports them (zxing and OpenCV: four,
    clockwise from top-left; pyzbar: its polygon); () when unknown. They do not take part in equality.
    """

    text: str
    raw: bytes
    decoder: str
    points: tuple[tuple[int, int], ...] = field(default=(), compare=False)


def _points(xy: Iterable[Any]) -> tuple[tuple[int, int], ...]:
    """Corner points as (x, y) pixel pairs, from any sequence of pairs or of objects with x and y."""
    out = []
    for p in xy:
        x, y = (p.x, p.y) if hasattr(p, "x") else (p[0], p[1])
        out.append((round(float(x)), round(float(y))))
    return tuple(out)


class QrDecoder(Protocol):
    """Finds QR codes in a BGR or grayscale uint8 image; [] when there are none or the image is unusable."""

    name: str

    def decode(self, image: np.ndarray) -> list[DecodedCode]: ...


def _gray(image: object) -> np.ndarray | None:
    """The image as a 2-D uint8 array, or None when it is not an image the decoders can read."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        return None
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        return None
    channels = image.shape[2]
    if channels == 1:
        return image[:, :, 0]
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return None


def _text_of(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class ZxingDecoder:
    """zxing-cpp, QR family only, trying a second binarizer when the first finds nothing.

    try_rotate/try_downscale/try_invert stay on (the library default): measured, turning them off saves
    ~0.1 ms a frame, and turning off try_invert loses 3 of the 82 shared photos.
    """

    name = "zxing"

    def __init__(self, *, binarizers: Sequence[str] = ("local_average", "global_histogram")) -> None:
        try:
            import zxingcpp
        except ImportError as exc:
            raise MissingDependencyError("zxing-cpp", "ZxingDecoder") from exc
        unknown = [b for b in binarizers if b not in _BINARIZERS]
        if unknown or not binarizers:
            raise ValueError(f"binarizers must be a non-empty subset of {_BINARIZERS}, got {list(binarizers)}")
        by_name = {
            "local_average": zxingcpp.Binarizer.LocalAverage,
            "global_histogram": zxingcpp.Binarizer.GlobalHistogram,
            "fixed_threshold": zxingcpp.Binarizer.FixedThreshold,
            "bool_cast": zxingcpp.Binarizer.BoolCast,
        }
        self.binarizers = tuple(binarizers)
        self._zxing = zxingcpp
        self._binarizers = [by_name[b] for b in binarizers]

    def decode(self, image: np.ndarray) -> list[DecodedCode]:
        """Decode every QR code in the image."""
        gray = _gray(image)
        if gray is None:
            return []
        zx = self._zxing
        for binarizer in self._binarizers:
            # TextMode.Plain: the default HRI rewrites control characters as "<GS>" and GS1 data as "(01)".
            try:
                found = zx.read_barcodes(gray, formats=zx.QRCode, text_mode=zx.TextMode.Plain, binarizer=binarizer)
            except (ValueError, RuntimeError):
                return []
            if found:
                return [self._code(barcode) for barcode in found]
        return []

    def _code(self, barcode: Any) -> DecodedCode:
        raw = bytes(barcode.bytes)
        binary = barcode.content_type == self._zxing.ContentType.Binary
        pos = barcode.position
        corners = _points((pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left))
        text = raw.decode("latin-1") if binary else barcode.text
        return DecodedCode(text=text, raw=raw, decoder=self.name, points=corners)


class PyzbarDecoder:
    """pyzbar over the zbar C library (Debian/Ubuntu package libzbar0)."""

    name = "pyzbar"

    def __init__(self) -> None:
        if importlib.util.find_spec("pyzbar") is None:
            raise MissingDependencyError("pyzbar", "PyzbarDecoder")
        try:
            from pyzbar import pyzbar
        except (ImportError, OSError) as exc:
            raise MissingDependencyError(
                "libzbar0", "PyzbarDecoder", f"install the zbar shared library: apt-get install libzbar0 ({exc})"
            ) from exc
        self._pyzbar = pyzbar
        self._symbols = [pyzbar.ZBarSymbol.QRCODE]

    def decode(self, image: np.ndarray) -> list[DecodedCode]:
        """Decode every QR code in the image."""
        gray = _gray(image)
        if gray is None:
            return []
        try:
            found = self._pyzbar.decode(gray, symbols=self._symbols)
        except self._pyzbar.PyZbarError:
            return []
        # zbar has already transcoded the payload to UTF-8 where it could guess the charset.
        return [
            DecodedCode(text=_text_of(s.data), raw=bytes(s.data), decoder=self.name, points=_points(s.polygon))
            for s in found
        ]


class OpenCvDecoder:
    """OpenCV's QRCodeDetector: slower and weaker on photos, but a third independent opinion."""

    name = "opencv"

    def __init__(self) -> None:
        self._detector = cv2.QRCodeDetector()

    def decode(self, image: np.ndarray) -> list[DecodedCode]:
        """Decode the QR code in the image (OpenCV reports at most one here)."""
        gray = _gray(image)
        if gray is None:
            return []
        try:
            raw, points, _straight = self._detector.detectAndDecodeBytes(gray)
        except cv2.error:  # e.g. "mode 13 not implemented" for Hanzi-mode payloads
            return []
        if not raw:
            return []
        corners = _points(np.asarray(points).reshape(-1, 2)) if points is not None else ()
        return [DecodedCode(text=_text_of(bytes(raw)), raw=bytes(raw), decoder=self.name, points=corners)]


class ChainDecoder:
    """Tries each decoder in order and returns the first non-empty result."""

    name = "chain"

    def __init__(self, *, decoders: Iterable[QrDecoder]) -> None:
        self.decoders = tuple(decoders)
        if not self.decoders:
            raise ValueError("ChainDecoder needs at least one decoder")

    def decode(self, image: np.ndarray) -> list[DecodedCode]:
        """Decode with the first decoder that finds anything; the frame goes grey once for all of them."""
        gray = _gray(image)
        if gray is None:
            return []
        for decoder in self.decoders:
            found = decoder.decode(gray)
            if found:
                return found
        return []


def _chain() -> ChainDecoder:
    # Measured order: zxing first, as it reads every photo pyzbar reads and is 6-9x faster; pyzbar stays
    # as an independent second opinion. OpenCV adds no photo and costs 5-15 ms a frame, so it is left out.
    return ChainDecoder(decoders=[ZxingDecoder(), PyzbarDecoder()])


_FACTORIES: dict[str, Callable[[], QrDecoder]] = {
    "zxing": ZxingDecoder,
    "pyzbar": PyzbarDecoder,
    "opencv": OpenCvDecoder,
    "chain": _chain,
}


def make_decoder(name: str) -> QrDecoder:
    """The decoder configured by name: "zxing", "pyzbar", "opencv" or "chain"."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown QR decoder {name!r}; valid names: {', '.join(DECODER_NAMES)}") from None
    return factory()


def load_image(path: str | Path) -> np.ndarray:
    """Read a png/jpg/webp file as a BGR uint8 array."""
    path = Path(path)
    if not path.is_file():
        raise DriverError(f"image file {str(path)!r} does not exist or is not a file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DriverError(f"image file {str(path)!r} is not a readable png/jpg/webp image")
    return image
