"""The serial scanner driver against real pty pairs, plus its fake."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from drivers.errors import DriverConnectionError
from drivers.scanner import FakeScanner, Scanner, SerialScanner
from harness.gates import ScannerPty

# Upper bound for reads that should succeed; they return as soon as the line is complete.
ARRIVES = 2.0
# How long to listen when nothing is expected.
QUIET = 0.05


@pytest.fixture
def make_pty() -> Iterator[Callable[[], ScannerPty]]:
    made: list[ScannerPty] = []

    def make() -> ScannerPty:
        made.append(ScannerPty())
        return made[-1]

    yield make
    for pty in made:
        pty.unplug()


@pytest.fixture
def pty(make_pty: Callable[[], ScannerPty]) -> ScannerPty:
    return make_pty()


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.DEBUG, logger="test.scanner")
    return logging.getLogger("test.scanner")


def point_link(link: Path, target: str) -> None:
    """Atomically (re)point a symlink, the way udev moves /dev/serial/by-id links."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def wait_until_connected(scanner: SerialScanner) -> None:
    for _ in range(100):
        assert scanner.read_line(QUIET) is None
        if scanner.connected:
            return
    pytest.fail(f"scanner never reconnected; last error: {scanner.last_error}")


def test_scanned_code_arrives_as_one_line(pty: ScannerPty) -> None:
    with SerialScanner(port=pty.path, baudrate=9600, bytesize=8, parity="N", stopbits=1) as scanner:
        scanner.open()
        pty.write(b"SFG1.eyJ0IjoxfQ.sig\r\n")

        assert scanner.read_line(ARRIVES) == b"SFG1.eyJ0IjoxfQ.sig"
        assert scanner.read_line(QUIET) is None


@pytest.mark.parametrize(
    "terminator",
    [pytest.param(b"\r", id="CR"), pytest.param(b"\n", id="LF"), pytest.param(b"\r\n", id="CRLF")],
)
def test_each_terminator_style_ends_a_code(pty: ScannerPty, terminator: bytes) -> None:
    with SerialScanner(port=pty.path) as scanner:
        scanner.open()
        pty.write(b"FIRST" + terminator + b"SECOND" + terminator)

        assert scanner.read_line(ARRIVES) == b"FIRST"
        assert scanner.read_line(ARRIVES) == b"SECOND"
        assert scanner.read_line(QUIET) is None


def test_code_split_across_two_writes_is_joined(pty: ScannerPty) -> None:
    with SerialScanner(port=pty.path) as scanner:
        scanner.open()
        pty.write(b"TICK")
        assert scanner.read_line(QUIET) is None

        pty.write(b"ET-42\r\n")
        assert scanner.read_line(ARRIVES) == b"TICKET-42"


def test_empty_lines_are_skipped(pty: ScannerPty) -> None:
    with SerialScanner(port=pty.path) as scanner:
        scanner.open()
        pty.write(b"\r\n\r\n\n\rCODE\r\n\r\n")

        assert scanner.read_line(ARRIVES) == b"CODE"
        assert scanner.read_line(QUIET) is None


def test_noise_comes_through_as_bytes_and_the_next_code_still_reads(pty: ScannerPty) -> None:
    with SerialScanner(port=pty.path) as scanner:
        scanner.open()
        pty.write(b"\xff\xfe\x00garbage\r\n")
        pty.write(b"CODE-7\r\n")

        assert scanner.read_line(ARRIVES) == b"\xff\xfe\x00garbage"
        assert scanner.read_line(ARRIVES) == b"CODE-7"


def test_overlong_line_is_discarded_and_the_next_code_reads(
    pty: ScannerPty, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    with SerialScanner(port=pty.path, max_line=16, logger=logger) as scanner:
        scanner.open()
        pty.write(b"X" * 40 + b"\r\nOK-1\r\n")

        assert scanner.read_line(ARRIVES) == b"OK-1"
    assert any("longer than 16 bytes" in message for message in warnings_in(caplog))


def test_overlong_line_arriving_in_pieces_is_dropped_up_to_its_terminator(pty: ScannerPty) -> None:
    with SerialScanner(port=pty.path, max_line=16) as scanner:
        scanner.open()
        pty.write(b"Y" * 20)
        assert scanner.read_line(QUIET) is None
        pty.write(b"Y" * 20)
        assert scanner.read_line(QUIET) is None

        pty.write(b"TAIL-OF-NOISE\rOK-2\r")
        assert scanner.read_line(ARRIVES) == b"OK-2"


def test_line_of_exactly_max_line_bytes_is_kept(pty: ScannerPty) -> None:
    with SerialScanner(port=pty.path, max_line=16) as scanner:
        scanner.open()
        pty.write(b"Z" * 16 + b"\r")

        assert scanner.read_line(ARRIVES) == b"Z" * 16


def test_port_opens_lazily_on_first_read(pty: ScannerPty) -> None:
    with SerialScanner(port=pty.path) as scanner:
        assert not scanner.connected

        assert scanner.read_line(QUIET) is None
        assert scanner.connected


def test_leaving_the_context_closes_the_port(pty: ScannerPty) -> None:
    with SerialScanner(port=pty.path) as scanner:
        scanner.open()
        assert scanner.connected
    assert not scanner.connected


def test_unplugged_scanner_reads_none_then_reconnects_when_replugged(
    make_pty: Callable[[], ScannerPty], tmp_path: Path, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    link = tmp_path / "usb-Scanner_Co_QR-if00"
    first = make_pty()
    point_link(link, first.path)
    with SerialScanner(port=str(link), reopen_delay_s=0.02, logger=logger) as scanner:
        scanner.open()
        first.write(b"BEFORE\r")
        assert scanner.read_line(ARRIVES) == b"BEFORE"

        first.unplug()
        assert scanner.read_line(QUIET) is None
        assert not scanner.connected
        error_at_unplug = scanner.last_error
        assert error_at_unplug is not None
        for _ in range(5):
            assert scanner.read_line(QUIET) is None
        [warning] = warnings_in(caplog)
        assert str(link) in warning
        assert error_at_unplug in warning

        second = make_pty()
        point_link(link, second.path)
        wait_until_connected(scanner)
        second.write(b"AFTER\r\n")
        assert scanner.read_line(ARRIVES) == b"AFTER"
    assert any("reconnected" in r.getMessage() for r in caplog.records)


def test_half_a_code_from_before_an_unplug_is_not_glued_to_the_next_one(
    make_pty: Callable[[], ScannerPty], tmp_path: Path
) -> None:
    link = tmp_path / "scanner"
    first = make_pty()
    point_link(link, first.path)
    with SerialScanner(port=str(link), reopen_delay_s=0.02) as scanner:
        scanner.open()
        first.write(b"HALF-")
        assert scanner.read_line(QUIET) is None

        first.unplug()
        assert scanner.read_line(QUIET) is None
        second = make_pty()
        point_link(link, second.path)
        wait_until_connected(scanner)
        second.write(b"WHOLE\r")
        assert scanner.read_line(ARRIVES) == b"WHOLE"


def test_link_moved_to_a_new_device_is_followed_even_if_the_old_one_lingers(
    make_pty: Callable[[], ScannerPty], tmp_path: Path
) -> None:
    link = tmp_path / "scanner"
    old = make_pty()
    point_link(link, old.path)
    with SerialScanner(port=str(link), reopen_delay_s=0.02) as scanner:
        scanner.open()

        new = make_pty()
        point_link(link, new.path)
        assert scanner.read_line(QUIET) is None
        assert not scanner.connected
        assert scanner.last_error is not None
        assert "different device" in scanner.last_error

        wait_until_connected(scanner)
        new.write(b"ON-NEW\r")
        assert scanner.read_line(ARRIVES) == b"ON-NEW"


def test_explicit_open_of_a_missing_port_raises_a_connection_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-scanner"
    scanner = SerialScanner(port=str(missing))

    with pytest.raises(DriverConnectionError, match="no-such-scanner"):
        scanner.open()
    assert not scanner.connected
    assert scanner.last_error is not None


def test_reading_a_missing_port_returns_none_and_retries_no_faster_than_the_reopen_delay(
    tmp_path: Path, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[str] = []

    def counting_factory(**kwargs: Any) -> serial.Serial:
        attempts.append(kwargs["port"])
        return serial.Serial(**kwargs)

    missing = str(tmp_path / "ttyACM9")
    scanner = SerialScanner(port=missing, reopen_delay_s=3600, serial_factory=counting_factory, logger=logger)
    for _ in range(3):
        assert scanner.read_line(0) is None

    assert attempts == [missing]
    assert not scanner.connected
    [warning] = warnings_in(caplog)
    assert missing in warning


def test_serial_factory_receives_the_line_settings(pty: ScannerPty) -> None:
    seen: dict[str, Any] = {}

    def recording_factory(**kwargs: Any) -> serial.Serial:
        seen.update(kwargs)
        return serial.Serial(**kwargs)

    with SerialScanner(
        port=pty.path, baudrate=19200, bytesize=7, parity="E", stopbits=2, serial_factory=recording_factory
    ) as scanner:
        scanner.open()

    assert {k: seen[k] for k in ("port", "baudrate", "bytesize", "parity", "stopbits")} == {
        "port": pty.path,
        "baudrate": 19200,
        "bytesize": 7,
        "parity": "E",
        "stopbits": 2,
    }


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        pytest.param({"parity": "X"}, "parity", id="parity-X"),
        pytest.param({"baudrate": 0}, "baudrate", id="baudrate-zero"),
        pytest.param({"baudrate": -9600}, "baudrate", id="baudrate-negative"),
        pytest.param({"bytesize": 9}, "bytesize", id="bytesize-9"),
        pytest.param({"stopbits": 3}, "stopbits", id="stopbits-3"),
        pytest.param({"terminators": b""}, "terminators", id="no-terminators"),
        pytest.param({"max_line": 0}, "max_line", id="max-line-zero"),
        pytest.param({"reopen_delay_s": 0}, "reopen_delay_s", id="reopen-delay-zero"),
        pytest.param({"port": ""}, "port", id="empty-port"),
    ],
)
def test_bad_settings_are_refused_at_construction(settings: dict[str, Any], complaint: str) -> None:
    kwargs: dict[str, Any] = {"port": "/dev/ttyACM0", **settings}
    with pytest.raises(ValueError, match=complaint):
        SerialScanner(**kwargs)


def test_fake_scanner_returns_its_lines_in_order_then_none() -> None:
    scanner: Scanner = FakeScanner([b"A", b"\xff\x00B"])

    assert scanner.read_line(1.0) == b"A"
    assert scanner.read_line(1.0) == b"\xff\x00B"
    assert scanner.read_line(1.0) is None


def test_fake_scanner_takes_more_codes_and_closes_with_its_context() -> None:
    with FakeScanner() as scanner:
        assert scanner.read_line(0) is None
        scanner.feed(b"LATE")
        assert scanner.read_line(0) == b"LATE"
        assert scanner.connected
    assert scanner.closed
    assert not scanner.connected
