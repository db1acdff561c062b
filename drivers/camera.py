"""Cameras behind one Protocol: OpenCV capture (device, file or stream) and a fake fed with frames."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Protocol, Self

import cv2
import numpy as np

from drivers.errors import DriverConnectionError, DriverError

_LIVE_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "/dev/")


class Camera(Protocol):
    """A source of BGR frames."""

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class Capture(Protocol):
    """The part of cv2.VideoCapture the camera uses; tests inject a fake."""

    def isOpened(self) -> bool: ...  # OpenCV's spelling

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def set(self, prop_id: int, value: float) -> bool: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[int | str], Capture]


def _open_video_capture(source: int | str) -> Capture:
    """cv2.VideoCapture for a device index, file path or stream URL."""
    # A function rather than cv2.VideoCapture itself only so mypy can match its overloads to CaptureFactory.
    return cv2.VideoCapture(source)


def is_live_source(source: int | str) -> bool:
    """True for devices and network streams, which can go away and come back; False for files."""
    return isinstance(source, int) or source.startswith(_LIVE_PREFIXES)


class OpenCvCamera:
    """A camera read through OpenCV; reopens a live source that stopped delivering frames.

    For a live source a failed read releases the capture and raises DriverConnectionError; every
    read() until reopen_delay_s has passed raises the same message again without touching the device
    (the caller logs changes and backs off), then the next read() reopens. A file source returns None
    at its end.
    """

    def __init__(
        self,
        *,
        source: int | str,
        width: int | None = None,
        height: int | None = None,
        reopen_delay_s: float = 1.0,
        capture_factory: CaptureFactory = _open_video_capture,
        clock: Callable[[], float] = time.monotonic,
        lazy: bool = False,
    ) -> None:
        """With ``lazy``, a live camera that is absent at start-up is an outage, retried on read."""
        self.source = source
        self.width = width
        self.height = height
        self.reopen_delay_s = reopen_delay_s
        self.live = is_live_source(source)
        self._factory = capture_factory
        self._clock = clock
        self._reopen_at = 0.0
        self._outage = ""
        self._closed = False
        self._capture: Capture | None = None
        try:
            self._capture = self._open()
        except DriverConnectionError as exc:
            if not (lazy and self.live):
                raise
            self._start_outage(f"{exc}; retrying every {self.reopen_delay_s:g} s")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def read(self) -> np.ndarray | None:
        """The next frame; None at the end of a file; DriverConnectionError while a live source is away."""
        if self._closed:
            raise DriverError(f"camera {self.source!r} is closed")
        if self._capture is None:
            if not self.live:
                return None
            if self._clock() < self._reopen_at:
                raise DriverConnectionError(self._outage)
            try:
                self._capture = self._open()
            except DriverConnectionError as exc:
                self._start_outage(f"{exc}; retrying every {self.reopen_delay_s:g} s")
                raise DriverConnectionError(self._outage) from exc
        ok, frame = self._capture.read()
        if ok and frame is not None:
            return frame
        self._release()
        if not self.live:
            return None
        self._start_outage(
            f"camera {self.source!r} stopped delivering frames; reopening after {self.reopen_delay_s:g} s"
        )
        raise DriverConnectionError(self._outage)

    def close(self) -> None:
        """Release the device; further reads raise DriverError."""
        self._release()
        self._closed = True

    def _open(self) -> Capture:
        what = "camera" if self.live else "video file"
        try:
            capture = self._factory(self.source)
        except cv2.error as exc:
            raise DriverConnectionError(f"cannot open {what} {self.source!r}: {exc}") from exc
        if not capture.isOpened():
            capture.release()
            why = "absent, busy or refusing the connection" if self.live else "missing or not a readable video"
            raise DriverConnectionError(f"cannot open {what} {self.source!r} ({why})")
        if self.width is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height is not None:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        return capture

    def _start_outage(self, message: str) -> None:
        # One message per outage state, repeated while waiting, so a caller can log each change once.
        self._outage = message
        self._reopen_at = self._clock() + self.reopen_delay_s

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class FakeCamera:
    """Replays the given frames, then returns None; a DriverError among them is raised when reached."""

    def __init__(self, frames: Iterable[np.ndarray | DriverError]) -> None:
        self._frames: Iterator[np.ndarray | DriverError] = iter(frames)
        self.closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def read(self) -> np.ndarray | None:
        """The next frame, or None once the frames are used up."""
        if self.closed:
            raise DriverError("fake camera is closed")
        item = next(self._frames, None)
        if isinstance(item, DriverError):
            raise item
        return item

    def close(self) -> None:
        """Stop replaying."""
        self.closed = True
