"""Issue 8, item 14: a flood on an input must not starve genuine scans.

The attack run wrote 20,000 garbage lines to the serial scanner: the old single input queue
filled up and 36 of 39 genuine codes were dropped as "input queue full". Here the scanner is a
real pty pair read by the real driver, the gate runs its real daemon, and the monotonic clock
is explicit: it moves two seconds per skier, the pace of a turnstile.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from drivers.barrier import FakeBarrier
from drivers.camera import FakeCamera
from drivers.qr import DecodedCode
from drivers.scanner import SerialScanner
from edge.config import parse_config
from edge.daemon import Debouncer, GateDaemon, Handled
from edge.intake import Intake, Scan
from edge.store import GateStore
from harness.gates import ScannerPty
from harness.processes import eventually
from harness.tickets import NOW, make_ticket, sign
from models.credential import _MAX_INPUT, Invalid, could_be_credential, parse, public_key_b64

pytestmark = pytest.mark.security

SKIERS = 39
GARBAGE = 20_000
BOUND_S = 20.0  # a bound on waiting, never an assertion about speed


class Mono:
    """The daemon's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def pty() -> Iterator[ScannerPty]:
    p = ScannerPty()
    yield p
    p.close()


def garbage_lines(n: int, seed: int = 8) -> list[bytes]:
    """What a noisy or hostile scanner sends: none of it can be a credential, by construction."""
    rng = random.Random(seed)
    noise = [b for b in range(256) if b not in b"\r\n"]
    b32_lower = b"abcdefghijklmnopqrstuvwxyz234567"
    kinds: list[Callable[[], bytes]] = [
        # line noise (wrong baud rate, a loose cable): always some byte above ASCII
        lambda: bytes(rng.choices(noise, k=rng.randint(0, 80))) + bytes([rng.randint(0x80, 0xFF)]),
        lambda: b"HTTPS://SHOP.EXAMPLE/ITEM?ID=%d" % rng.randint(0, 10**9),  # a poster's QR code
        lambda: b"SF" + bytes(rng.choices(b32_lower, k=148)),  # a token's shape, in lower case
        lambda: b"A1" * rng.randint(257, 400),  # alphanumeric, longer than any credential
        lambda: bytes(rng.choices(b"0123456789ABCDEF", k=rng.randint(1, 5))),  # shorter than any code
        lambda: b"TICKET %d OK" % rng.randint(0, 10**6),  # a space: no code has one
    ]
    return [kinds[i % len(kinds)]() for i in range(n)]


def build(
    tmp_path: Path, key: Ed25519PrivateKey, mono: Mono, seen: list[Handled], **inputs: Any
) -> tuple[GateDaemon, GateStore]:
    config = parse_config(
        {
            "gate": {"gate_id": "g1", "site_id": "nanshan", "passback_seconds": 60},
            "store": {"path": str(tmp_path / "gate.db")},
            "barrier": {"type": "modbus_tcp", "host": "127.0.0.1", "passage_timeout_s": 0.3},
            "trusted_keys": {1: public_key_b64(key.public_key())},
        }
    )
    store = GateStore(config.store.path)
    daemon = GateDaemon(
        config,
        store=store,
        barrier=FakeBarrier(passage_input=False),
        clock=lambda: NOW,
        monotonic=mono,
        on_handled=seen.append,
        **inputs,
    )
    return daemon, store


def decided(seen: list[Handled], n: int, source: str | None = None) -> Callable[[], bool]:
    """Whether n reads (from `source`, or from any input) have been decided."""
    return lambda: sum(source in (None, h.source) for h in seen) == n


async def running(daemon: GateDaemon, body: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: daemon.controller.healthy, "the barrier connected", BOUND_S)
        await body()
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, BOUND_S)


def tokens(key: Ed25519PrivateKey) -> list[bytes]:
    return [sign(key, make_ticket(ticket_id=str(2000 + i))).encode() for i in range(SKIERS)]


def test_twenty_thousand_garbage_lines_on_the_scanner_cannot_crowd_out_one_skier(
    tmp_path: Path, signing_key: Ed25519PrivateKey, pty: ScannerPty, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    mono, seen = Mono(), list[Handled]()
    scanner = SerialScanner(port=pty.path)
    scanner.open()  # raw mode before the first byte: the tty must not interpret the noise
    daemon, store = build(tmp_path, signing_key, mono, seen, scanner=scanner)
    genuine = tokens(signing_key)
    garbage = garbage_lines(GARBAGE)
    cut = [k * GARBAGE // (2 * SKIERS) for k in range(2 * SKIERS + 1)]

    async def body() -> None:
        for i, token in enumerate(genuine):
            before, after = garbage[cut[2 * i] : cut[2 * i + 1]], garbage[cut[2 * i + 1] : cut[2 * i + 2]]
            # The flood goes on before, with and after the skier's scan, while the gate decides.
            await asyncio.to_thread(pty.write, b"\r\n".join([*before, token, *after]) + b"\r\n", timeout=BOUND_S)
            await eventually(decided(seen, i + 1), f"skier {i + 1} decided", BOUND_S)
            mono.t += 2.0
        await eventually(
            lambda: sum(daemon.intake.drops.get("scanner", {}).values()) == GARBAGE, "all noise read", BOUND_S
        )

    asyncio.run(running(daemon, body))
    assert [h.data for h in seen] == genuine
    assert all((h.entry.code, h.entry.passed) == ("ok", True) for h in seen)
    assert [e.code for e in store.entries()] == ["ok"] * SKIERS, "noise is counted, never journaled"
    assert daemon.intake.drops == {"scanner": {"not_a_credential": GARBAGE}}
    summaries = [r for r in caplog.records if "dropped input reads" in r.getMessage()]
    assert 1 <= len(summaries) <= 4, "a summary now and then, not a line per dropped read"
    assert not any("queue full" in r.getMessage() for r in caplog.records)
    store.close()


class Phone:
    """A camera a skier holds a phone up to: one frame per code shown, blank frames otherwise."""

    def __init__(self) -> None:
        self.shown: queue.Queue[bytes] = queue.Queue()

    def frames(self) -> Iterator[np.ndarray]:
        while True:
            try:
                yield np.frombuffer(self.shown.get(timeout=0.02), dtype=np.uint8)
            except queue.Empty:
                yield np.zeros(0, dtype=np.uint8)


class FrameDecoder:
    name = "frame-bytes"

    def decode(self, image: np.ndarray) -> list[DecodedCode]:
        raw = image.tobytes()
        return [DecodedCode(text=raw.decode("ascii"), raw=raw, decoder=self.name)] if raw else []


def test_a_flood_of_plausible_codes_on_the_scanner_does_not_starve_skiers_at_the_camera(
    tmp_path: Path, signing_key: Ed25519PrivateKey, pty: ScannerPty
) -> None:
    mono, seen, phone = Mono(), list[Handled](), Phone()
    scanner = SerialScanner(port=pty.path)
    scanner.open()
    daemon, store = build(
        tmp_path,
        signing_key,
        mono,
        seen,
        scanner=scanner,
        camera=FakeCamera(phone.frames()),
        decoder=FrameDecoder(),
    )
    genuine = tokens(signing_key)
    rng = random.Random(14)
    stop = threading.Event()

    def flood() -> None:  # distinct, well-formed voucher codes that no cache holds
        while not stop.is_set():
            pty.write(b"".join(b"V%011d\r\n" % rng.randrange(10**11) for _ in range(200)), stop=stop, timeout=BOUND_S)

    flooder = threading.Thread(target=flood, daemon=True)

    async def body() -> None:
        flooder.start()
        await eventually(lambda: any(h.source == "scanner" for h in seen), "the flood reached the decisions", BOUND_S)
        for i, token in enumerate(genuine):
            phone.shown.put(token)
            await eventually(decided(seen, i + 1, "camera"), f"skier {i + 1} decided", BOUND_S)
            mono.t += 2.0
        stop.set()
        await asyncio.to_thread(flooder.join, BOUND_S)

    try:
        asyncio.run(running(daemon, body))
    finally:
        stop.set()
    at_camera = [h for h in seen if h.source == "camera"]
    assert [h.data for h in at_camera] == genuine
    assert all((h.entry.code, h.entry.passed) == ("ok", True) for h in at_camera)
    flooded = daemon.intake.drops["scanner"]
    assert flooded["rate_limited"] > 0
    # What the flood got through is bounded by the rate, not by how fast it was sent.
    got_through = sum(h.source == "scanner" for h in seen)
    assert got_through <= daemon.intake.burst + daemon.intake.rate_per_s * 2.0 * SKIERS
    store.close()


def test_a_flood_of_overlong_lines_is_one_warning_and_the_next_code_still_reads(
    pty: ScannerPty, caplog: pytest.LogCaptureFixture
) -> None:
    with SerialScanner(port=pty.path, max_line=64) as scanner, caplog.at_level(logging.WARNING):
        scanner.open()
        pty.write(b"N" * 100 + b"\r\n")
        assert scanner.read_line(0.05) is None  # the first one is warned about at once
        writer = threading.Thread(
            target=pty.write,
            args=((b"N" * 100 + b"\r\n") * 499 + b"VOUCHER-1001\r\n",),
            kwargs={"timeout": BOUND_S},
            daemon=True,
        )
        writer.start()  # more than the tty buffer holds: written while the driver reads
        assert scanner.read_line(BOUND_S) == b"VOUCHER-1001"
        writer.join(BOUND_S)
        assert scanner.discarded_lines == 500
    assert [r.getMessage() for r in caplog.records] == [f"scanner {pty.path}: discarded 1 line(s) longer than 64 bytes"]


def test_a_flood_of_distinct_codes_can_make_the_debouncer_forget_but_never_refuse_a_code() -> None:
    debounce = Debouncer(1.5, capacity=3)
    assert debounce.fresh(b"SKIER-1", 0.0)
    assert not debounce.fresh(b"SKIER-1", 0.1), "still in view"
    for n in range(3):
        assert debounce.fresh(b"FLOOD-%d" % n, 0.2)
    assert debounce.fresh(b"SKIER-1", 0.3), "forgotten: read once more, at worst"


# --- the intake on its own: explicit times, no threads ---------------------------------------------


def scan(source: str, n: int) -> Scan:
    return Scan(f"{source}-{n}".encode(), source, NOW, 0.0)


def test_each_input_queues_apart_and_the_decisions_take_them_in_turn() -> None:
    intake = Intake(per_source=8)
    for n in range(30):
        intake.put(scan("scanner", n))
    intake.put(scan("camera", 0))

    async def take(k: int) -> list[bytes]:
        return [(await intake.get()).data for _ in range(k)]

    order = asyncio.run(take(9))
    assert order[:3] == [b"scanner-22", b"camera-0", b"scanner-23"], "the newest scanner reads, the camera in turn"
    assert order[3:] == [f"scanner-{n}".encode() for n in range(24, 30)]
    assert intake.drops == {"scanner": {"queue_full": 22}}


def test_an_input_gets_its_burst_then_its_rate_and_the_rest_is_counted() -> None:
    intake = Intake(rate_per_s=5.0, burst=20)
    assert all(intake.allow("scanner", 0.0) for _ in range(20))
    assert not intake.allow("scanner", 0.0)
    assert intake.allow("camera", 0.0), "each input has its own rate"
    assert [intake.allow("scanner", 1.0) for _ in range(6)] == [True] * 5 + [False]
    assert intake.drops == {"scanner": {"rate_limited": 2}}


def test_drops_are_logged_as_a_summary_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    mono = Mono()
    intake = Intake(summary_every_s=60.0, monotonic=mono)
    with caplog.at_level(logging.WARNING, logger="starfish.gate"):
        for n in range(10_000):
            mono.t = 1000.0 + n * 0.01  # 100 s of flood
            intake.drop("scanner", "not_a_credential")
        intake.drop("camera", "rate_limited")
        intake.report(force=True)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "dropped input reads: scanner not_a_credential=1",
        "dropped input reads: scanner not_a_credential=6000",
        "dropped input reads: camera rate_limited=1; scanner not_a_credential=3999",
    ]
    assert intake.drops == {"scanner": {"not_a_credential": 10_000}, "camera": {"rate_limited": 1}}


# --- the shape check against the parser ------------------------------------------------------------


@given(st.one_of(st.binary(max_size=600), st.text(max_size=600)))
def test_whatever_the_shape_check_refuses_the_parser_calls_unreadable(data: bytes | str) -> None:
    if not could_be_credential(data):
        result = parse(data, {})
        assert isinstance(result, Invalid) and result.code == "unreadable"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("SF" + "A" * 38, id="shortest-token-shape"),
        pytest.param("SF" + "Z7" * 75, id="a-v2-sized-token"),
        pytest.param("SF" + "A" * (_MAX_INPUT - 2), id="longest-token-shape"),
        pytest.param("88020261220", id="ota-voucher"),
        pytest.param("VOUCHER-1001", id="plain-with-dash"),
        pytest.param("abc123", id="shortest-plain"),
        pytest.param("X" * 32, id="longest-plain"),
        pytest.param("VOUCHER-1001\r\n", id="with-a-line-ending"),
    ],
)
def test_every_credential_shape_passes_the_check(text: str) -> None:
    assert could_be_credential(text)
    assert could_be_credential(text.encode())


def test_every_issued_token_passes_the_check(signing_key: Ed25519PrivateKey) -> None:
    assert all(could_be_credential(t) for t in tokens(signing_key))


def test_the_garbage_of_the_attack_is_no_credential() -> None:
    assert not any(could_be_credential(line) for line in garbage_lines(600))


def test_a_read_on_a_quiet_input_waits_at_most_one_decision_behind_a_busy_one() -> None:
    intake = Intake(per_source=8)
    for n in range(8):
        intake.put(scan("camera", n))
    intake.put(scan("scanner", 0))

    async def first_two() -> list[str]:
        return [(await intake.get()).source for _ in range(2)]

    assert "scanner" in asyncio.run(first_two())
