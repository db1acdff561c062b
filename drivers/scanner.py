"""Serial QR/barcode scanners: line-terminated codes over a (USB-)serial port, surviving unplug/replug."""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from drivers.errors import DriverConnectionError, MissingDependencyError

if TYPE_CHECKING:
    import serial

_PARITIES = ("N", "E", "O", "M", "S")
_BYTESIZES = (5, 6, 7, 8)
_STOPBITS = (1, 1.5, 2)
_DISCARD_LOG_EVERY_S = 60.0


class Scanner(Protocol):
    """What the gate daemon needs from a scanner."""

    def read_line(self, timeout: float) -> bytes | None:
        """One scanned code without its terminator, or None if nothing arrived within timeout."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


class SerialScanner:
    """A scanner that sends each code as a line on a serial port.

    Not thread-safe: one task owns the scanner. SerialException is an OSError subclass, so
    catching OSError covers pyserial's errors as well as the raw ones (EIO, ENXIO, ...).
    """

    def __init__(
        self,
        *,
        port: str,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        terminators: bytes = b"\r\n",
        max_line: int = 1024,
        reopen_delay_s: float = 1.0,
        serial_factory: Callable[..., serial.Serial] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if not port:
            raise ValueError("port must name a serial device, e.g. /dev/ttyACM0")
        if isinstance(baudrate, bool) or not isinstance(baudrate, int) or baudrate <= 0:
            raise ValueError(f"baudrate must be a positive integer, got {baudrate!r}")
        if bytesize not in _BYTESIZES:
            raise ValueError(f"bytesize must be one of {_BYTESIZES}, got {bytesize!r}")
        if parity not in _PARITIES:
            raise ValueError(f"parity must be one of {', '.join(_PARITIES)}, got {parity!r}")
        if stopbits not in _STOPBITS:
            raise ValueError(f"stopbits must be one of {_STOPBITS}, got {stopbits!r}")
        if not terminators:
            raise ValueError("terminators must contain at least one byte, e.g. b'\\r\\n'")
        if max_line <= 0:
            raise ValueError(f"max_line must be positive, got {max_line!r}")
        if reopen_delay_s <= 0:
            raise ValueError(f"reopen_delay_s must be positive (it bounds reopen attempts), got {reopen_delay_s!r}")
        if serial_factory is None:
            serial_factory = _pyserial_factory()

        self._port = port
        self._settings = {"baudrate": baudrate, "bytesize": bytesize, "parity": parity, "stopbits": stopbits}
        self._max_line = max_line
        self._reopen_delay_s = reopen_delay_s
        self._factory = serial_factory
        self._log = logger or logging.getLogger(__name__)
        # Map every terminator byte onto the first one so a single split finds all line ends.
        table = bytearray(range(256))
        for byte in terminators:
            table[byte] = terminators[0]
        self._fold_terminators = bytes(table)
        self._terminator = terminators[:1]

        self._serial: serial.Serial | None = None
        self._identity: tuple[int, int, int] | None = None
        self._timeout: float | None = None
        self._lines: deque[bytes] = deque()
        self._partial = bytearray()
        self._discarding = False
        self._next_open_at = 0.0
        self._outage_logged = False
        self._last_error: str | None = None
        self._discarded = 0
        self._discards_logged = 0
        self._discard_logged_at = -math.inf

    @property
    def port(self) -> str:
        """The configured device path."""
        return self._port

    @property
    def connected(self) -> bool:
        """Whether the port is open right now."""
        return self._serial is not None

    @property
    def last_error(self) -> str | None:
        """The most recent open/read error, kept after a reconnect for the diagnostics page."""
        return self._last_error

    @property
    def discarded_lines(self) -> int:
        """Lines dropped since start for being longer than max_line (noise, or a hostile device)."""
        return self._discarded

    def open(self) -> None:
        """Open the port now; raise DriverConnectionError if it cannot be opened."""
        if self._serial is not None:
            return
        if not self._try_open():
            raise DriverConnectionError(f"cannot open scanner port {self._port}: {self._last_error}")

    def close(self) -> None:
        """Close the port; a later read_line opens it again."""
        self._drop_port()
        self._outage_logged = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def read_line(self, timeout: float) -> bytes | None:
        """One scanned code (terminator stripped, raw bytes), or None if none arrived within timeout."""
        if self._lines:
            return self._lines.popleft()
        deadline = time.monotonic() + max(0.0, timeout)
        if self._serial is None and not self._reopen_before(deadline):
            return None
        while True:
            chunk = self._read_chunk(deadline)
            if chunk is None:
                return None
            if not chunk:
                self._check_still_plugged()
                return None
            self._feed(chunk)
            if self._lines:
                return self._lines.popleft()
            if time.monotonic() >= deadline:
                return None

    def _reopen_before(self, deadline: float) -> bool:
        """Try to (re)open at most every reopen_delay_s, sleeping instead of spinning, until deadline."""
        while True:
            if time.monotonic() >= self._next_open_at and self._try_open():
                return True
            wake = min(self._next_open_at, deadline)
            time.sleep(max(0.0, wake - time.monotonic()))
            if wake >= deadline:
                return False

    def _try_open(self) -> bool:
        self._next_open_at = time.monotonic() + self._reopen_delay_s
        try:
            port = self._factory(port=self._port, timeout=0, **self._settings)
        except (OSError, ValueError) as exc:
            self._last_error = _describe(exc)
            if not self._outage_logged:
                self._log.warning(
                    "scanner %s cannot be opened (%s); retrying every %g s",
                    self._port,
                    self._last_error,
                    self._reopen_delay_s,
                )
                self._outage_logged = True
            else:
                self._log.debug("scanner %s still unavailable: %s", self._port, self._last_error)
            return False
        self._serial = port
        self._timeout = 0
        self._identity = _identity(self._port)
        if self._outage_logged:
            self._log.info("scanner %s reconnected", self._port)
        else:
            self._log.info("scanner %s opened", self._port)
        self._outage_logged = False
        return True

    def _read_chunk(self, deadline: float) -> bytes | None:
        """Bytes from the port (b"" on timeout), or None after the port failed."""
        port = self._serial
        assert port is not None
        remaining = max(0.0, deadline - time.monotonic())
        try:
            if remaining != self._timeout:
                port.timeout = remaining
                self._timeout = remaining
            chunk = port.read(1)
            if chunk:
                waiting = port.in_waiting
                if waiting:
                    chunk += port.read(waiting)
        except OSError as exc:
            self._unplugged(_describe(exc))
            return None
        return bytes(chunk)

    def _check_still_plugged(self) -> None:
        """After a quiet read: notice a port that went away without making read fail."""
        port = self._serial
        assert port is not None
        try:
            _ = port.in_waiting  # raises EIO on a hung-up tty
        except OSError as exc:
            self._unplugged(_describe(exc))
            return
        if self._identity is None:
            return
        current = _identity(self._port)
        if current is None:
            self._unplugged(f"{self._port} no longer exists")
        elif current != self._identity:
            self._unplugged(f"{self._port} now points to a different device")

    def _unplugged(self, reason: str) -> None:
        self._last_error = reason
        self._log.warning("scanner %s disconnected: %s", self._port, reason)
        self._outage_logged = True
        self._drop_port()
        self._next_open_at = time.monotonic() + self._reopen_delay_s

    def _drop_port(self) -> None:
        port, self._serial = self._serial, None
        self._identity = None
        # A half-read code from before an unplug must not be glued to one from after it.
        self._partial.clear()
        self._discarding = False
        if port is not None:
            try:
                port.close()
            except OSError as exc:
                self._log.debug("scanner %s: error while closing: %s", self._port, exc)

    def _feed(self, chunk: bytes) -> None:
        *complete, rest = chunk.translate(self._fold_terminators).split(self._terminator)
        for piece in complete:
            if self._discarding:
                self._discarding = False
                continue
            self._partial += piece
            line = bytes(self._partial)
            self._partial.clear()
            if len(line) > self._max_line:
                self._log_discard()
            elif line:
                self._lines.append(line)
        if not self._discarding:
            self._partial += rest
            if len(self._partial) > self._max_line:
                self._log_discard()
                self._partial.clear()
                self._discarding = True

    def _log_discard(self) -> None:
        """Count the line; warn at the first, then at most once a minute with the count: a flood is not a log flood."""
        self._discarded += 1
        now = time.monotonic()
        if now - self._discard_logged_at < _DISCARD_LOG_EVERY_S:
            return
        self._log.warning(
            "scanner %s: discarded %d line(s) longer than %d bytes",
            self._port,
            self._discarded - self._discards_logged,
            self._max_line,
        )
        self._discards_logged = self._discarded
        self._discard_logged_at = now


class FakeScanner:
    """A scanner for logic tests: returns the given lines in order, then None."""

    def __init__(self, lines: Iterable[bytes] = ()) -> None:
        self._lines: deque[bytes] = deque(lines)
        self.closed = False

    def feed(self, *lines: bytes) -> None:
        """Queue more scanned codes."""
        self._lines.extend(lines)

    @property
    def connected(self) -> bool:
        """True until closed."""
        return not self.closed

    @property
    def last_error(self) -> str | None:
        """Always None: the fake never fails."""
        return None

    def read_line(self, timeout: float) -> bytes | None:
        """The next queued line, or None at once when the queue is empty."""
        return self._lines.popleft() if self._lines else None

    def close(self) -> None:
        """Mark the fake closed."""
        self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _pyserial_factory() -> Callable[..., serial.Serial]:
    try:
        import serial
    except ImportError as exc:
        raise MissingDependencyError("pyserial", "SerialScanner") from exc
    return serial.Serial


def _identity(path: str) -> tuple[int, int, int] | None:
    """Which device node a path resolves to now (following symlinks such as /dev/serial/by-id)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_rdev)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
