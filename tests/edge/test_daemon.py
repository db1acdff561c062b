"""The gate daemon end to end, in process, with the fake barrier and scanner."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.barrier import FakeBarrier
from drivers.scanner import FakeScanner
from edge.config import EdgeConfig, parse_config
from edge.daemon import Debouncer, GateDaemon, Handled
from edge.store import GateStore
from models import ProductKind
from models.credential import public_key_b64
from tests.conftest import NOW, make_ticket, sign


def config(tmp_path: Path, key: Ed25519PrivateKey, **barrier: Any) -> EdgeConfig:
    return parse_config(
        {
            "gate": {"gate_id": "g1", "site_id": "nanshan", "passback_seconds": 60},
            "store": {"path": str(tmp_path / "gate.db")},
            "barrier": {
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "passage_input": 0,
                "fire_alarm_input": 1,
                "passage_timeout_s": 0.3,
                **barrier,
            },
            "trusted_keys": {1: public_key_b64(key.public_key())},
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


async def with_daemon(daemon: GateDaemon, body: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(daemon.run())
    try:
        for _ in range(100):
            if daemon.controller.healthy or daemon.controller.last_error:
                break
            await asyncio.sleep(0.01)
        await body()
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 5)


def build(tmp_path: Path, key: Ed25519PrivateKey, barrier: FakeBarrier, **kw: Any) -> tuple[GateDaemon, Clock]:
    cfg = config(tmp_path, key)
    store = GateStore(cfg.store.path)
    clock = Clock()
    return GateDaemon(cfg, store=store, barrier=barrier, clock=clock, **kw), clock


def test_valid_ticket_is_journaled_before_the_barrier_opens_and_counted_on_passage(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    seen_at_pulse: list[tuple[Any, ...]] = []

    class WitnessBarrier(FakeBarrier):
        async def pulse_open(self) -> None:
            # Another connection sees the committed, still pending, admission.
            with sqlite3.connect(tmp_path / "gate.db") as c:
                seen_at_pulse.extend(c.execute("SELECT outcome, passed FROM passages").fetchall())
            await super().pulse_open()

    barrier = WitnessBarrier()
    daemon, _ = build(tmp_path, signing_key, barrier)
    token = sign(signing_key, make_ticket(ProductKind.PUNCH)).encode()

    async def body() -> None:
        handled = await daemon.handle(token, "test")
        assert (handled.entry.code, handled.entry.passed, handled.entry.counted) == ("ok", True, True)

    asyncio.run(with_daemon(daemon, body))
    assert seen_at_pulse == [("admit", None)]
    assert barrier.pulses == 1


def test_skier_who_never_passes_is_not_counted_after_the_passage_timeout(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    daemon, _ = build(tmp_path, signing_key, FakeBarrier(passes=False))
    token = sign(signing_key, make_ticket(ProductKind.PUNCH, entries=1)).encode()

    async def body() -> None:
        handled = await daemon.handle(token, "test")
        assert (handled.entry.passed, handled.entry.counted) == (False, False)

    asyncio.run(with_daemon(daemon, body))
    assert daemon.store.history("1001", "g1").passages == []


def test_dead_barrier_denies_with_barrier_fault_and_recovers_when_it_returns(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    barrier = FakeBarrier(fail=True)
    daemon, clock = build(tmp_path, signing_key, barrier)
    daemon.controller.reconnect_s = 0.05
    token = sign(signing_key, make_ticket(ProductKind.PUNCH)).encode()

    async def body() -> None:
        handled = await daemon.handle(token, "test")
        assert (handled.entry.outcome.value, handled.entry.code) == ("deny", "barrier_fault")
        assert barrier.pulses == 0
        barrier.fail = False
        for _ in range(100):
            if daemon.controller.healthy:
                break
            await asyncio.sleep(0.02)
        clock.now += timedelta(seconds=10)
        handled = await daemon.handle(token, "test")
        assert (handled.entry.code, handled.entry.passed) == ("ok", True)

    asyncio.run(with_daemon(daemon, body))


def test_barrier_failing_at_the_pulse_turns_the_admission_into_a_fault_denial(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    class BreaksAtPulse(FakeBarrier):
        async def pulse_open(self) -> None:
            self.inject_fault()
            await super().pulse_open()

    daemon, _ = build(tmp_path, signing_key, BreaksAtPulse())
    token = sign(signing_key, make_ticket(ProductKind.PUNCH, entries=1)).encode()

    async def body() -> None:
        handled = await daemon.handle(token, "test")
        assert (handled.entry.code, handled.entry.passed, handled.entry.counted) == ("barrier_fault", False, False)

    asyncio.run(with_daemon(daemon, body))
    [event] = daemon.store.outbox()
    assert (event.outcome.value, event.code) == ("deny", "barrier_fault")


def test_fire_alarm_releases_the_barrier_admits_freely_and_is_journaled(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    barrier = FakeBarrier()
    daemon, _ = build(tmp_path, signing_key, barrier)

    async def body() -> None:
        barrier.fire_alarm = True
        for _ in range(100):
            if barrier.hold_open:
                break
            await asyncio.sleep(0.02)
        assert barrier.hold_open
        handled = await daemon.handle(b"\xffnot a ticket", "test")
        assert (handled.entry.outcome.value, handled.entry.code, handled.entry.counted) == ("admit", "emergency", False)
        barrier.fire_alarm = False
        for _ in range(100):
            if not barrier.hold_open:
                break
            await asyncio.sleep(0.02)
        assert not barrier.hold_open
        handled = await daemon.handle(b"\xffnot a ticket", "test")
        assert handled.entry.code == "unreadable"

    asyncio.run(with_daemon(daemon, body))
    codes = [e.code for e in daemon.store.entries()]
    assert codes == ["fire_alarm_on", "emergency", "fire_alarm_off", "unreadable"]


def test_codes_from_the_scanner_are_decided_in_order(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    good = sign(signing_key, make_ticket(ProductKind.PUNCH)).encode()
    seen: list[Handled] = []
    scanner = FakeScanner([good, b"\x00\xff", b"UNKNOWN123"])
    daemon, _ = build(tmp_path, signing_key, FakeBarrier(), scanner=scanner, on_handled=seen.append)

    async def body() -> None:
        for _ in range(200):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.01)

    asyncio.run(with_daemon(daemon, body))
    assert [h.entry.code for h in seen] == ["ok", "unreadable", "unknown_ticket"]


def test_a_code_that_stays_in_view_is_read_once() -> None:
    d = Debouncer(1.5)
    assert d.fresh(b"A", 0.0)
    assert not d.fresh(b"A", 0.5)
    assert not d.fresh(b"A", 1.9)  # still in view: each sighting extends the pause
    assert d.fresh(b"A", 3.5)
    assert d.fresh(b"B", 3.6)


def test_a_failing_decision_never_stops_the_gate(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    seen: list[Handled] = []
    scanner = FakeScanner([b"BOOM0001", b"UNKNOWN123"])
    daemon, _ = build(tmp_path, signing_key, FakeBarrier(), scanner=scanner, on_handled=seen.append)
    original = daemon.service.evaluate

    def flaky(data: bytes | str, now: datetime) -> Any:
        if data == b"BOOM0001":
            raise RuntimeError("disk on fire")
        return original(data, now)

    daemon.service.evaluate = flaky  # type: ignore[method-assign]

    async def body() -> None:
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)

    asyncio.run(with_daemon(daemon, body))
    assert [h.entry.code for h in seen] == ["unknown_ticket"]
