"""The gate daemon end to end, in process, with the fake barrier and scanner."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.barrier import FakeBarrier, ModbusBarrier
from drivers.scanner import FakeScanner
from edge.config import EdgeConfig, parse_config
from edge.daemon import Debouncer, GateDaemon, Handled, Scan
from edge.store import GateStore, GateStoreReader
from harness.processes import eventually
from harness.relay_sim import RelayBoardSim
from harness.tickets import NOW, make_ticket, sign
from models import ProductKind, TicketStatus
from models.credential import public_key_b64


def config(tmp_path: Path, key: Ed25519PrivateKey, gate: dict[str, Any] | None = None, **barrier: Any) -> EdgeConfig:
    return parse_config(
        {
            "gate": {"gate_id": "g1", "site_id": "nanshan", "passback_seconds": 60, **(gate or {})},
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
        await eventually(
            lambda: daemon.controller.healthy or daemon.controller.last_error, "the barrier connected or failed", 1.0
        )
        await body()
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 5)


def build(
    tmp_path: Path,
    key: Ed25519PrivateKey,
    barrier: FakeBarrier,
    gate: dict[str, Any] | None = None,
    barrier_cfg: dict[str, Any] | None = None,
    **kw: Any,
) -> tuple[GateDaemon, Clock]:
    cfg = config(tmp_path, key, gate, **(barrier_cfg or {}))
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
            seen_at_pulse.extend((e.outcome, e.passed) for e in GateStoreReader(tmp_path / "gate.db").entries())
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
        await eventually(lambda: daemon.controller.healthy, "the barrier reconnected", 2.0, interval=0.02)
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


def test_a_sensor_unreadable_after_opening_counts_nothing_and_marks_the_barrier_faulty(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    class SensorDiesAtPulse(FakeBarrier):
        async def pulse_open(self) -> None:
            await super().pulse_open()
            self.inject_fault(times=100)  # the board stops answering once the barrier is open

    daemon, _ = build(tmp_path, signing_key, SensorDiesAtPulse())
    tokens = [sign(signing_key, make_ticket(ProductKind.PUNCH, ticket_id=f"10{i}")).encode() for i in range(2)]

    async def body() -> None:
        first = await daemon.handle(tokens[0], "test")
        assert (first.entry.code, first.entry.passed, first.entry.counted) == ("ok", False, False)
        assert not daemon.controller.healthy, "the fault is kept, not overwritten by the pulse's success"
        second = await daemon.handle(tokens[1], "test")
        assert (second.entry.code, second.entry.passed) == ("barrier_fault", False)

    asyncio.run(with_daemon(daemon, body))


def test_fire_alarm_releases_the_barrier_admits_freely_and_is_journaled(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    barrier = FakeBarrier()
    daemon, _ = build(tmp_path, signing_key, barrier)

    async def body() -> None:
        barrier.fire_alarm = True
        await eventually(lambda: barrier.hold_open, "the fire alarm released the barrier", 2.0, interval=0.02)
        handled = await daemon.handle(b"\xffnot a ticket", "test")
        assert (handled.entry.outcome.value, handled.entry.code, handled.entry.counted) == ("admit", "emergency", False)
        barrier.fire_alarm = False
        await eventually(lambda: not barrier.hold_open, "the barrier closed after the alarm", 2.0, interval=0.02)
        handled = await daemon.handle(b"\xffnot a ticket", "test")
        assert handled.entry.code == "unreadable"

    asyncio.run(with_daemon(daemon, body))
    codes = [e.code for e in daemon.store.entries()]
    assert codes == ["fire_alarm_on", "emergency", "fire_alarm_off", "unreadable"]


def test_codes_from_the_scanner_are_decided_in_order_and_line_noise_is_only_counted(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    good = sign(signing_key, make_ticket(ProductKind.PUNCH)).encode()
    seen: list[Handled] = []
    scanner = FakeScanner([good, b"\x00\xff", b"UNKNOWN123"])
    daemon, _ = build(tmp_path, signing_key, FakeBarrier(), scanner=scanner, on_handled=seen.append)

    async def body() -> None:
        await eventually(lambda: len(seen) == 2, "both codes decided", 2.0)

    asyncio.run(with_daemon(daemon, body))
    assert [h.entry.code for h in seen] == ["ok", "unknown_ticket"]
    assert daemon.intake.drops == {"scanner": {"not_a_credential": 1}}


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

    def flaky(data: Any, now: datetime) -> Any:
        if data == b"BOOM0001":
            raise RuntimeError("disk on fire")
        return original(data, now)

    daemon.service.evaluate = flaky  # type: ignore[method-assign]

    async def body() -> None:
        await eventually(lambda: seen, "the code after the failing one decided", 2.0)

    asyncio.run(with_daemon(daemon, body))
    assert [h.entry.code for h in seen] == ["unknown_ticket"]


def test_without_a_passage_sensor_the_entry_counts_on_open(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    barrier = FakeBarrier(passage_input=False)
    daemon, _ = build(tmp_path, signing_key, barrier, barrier_cfg={"passage_input": None})
    token = sign(signing_key, make_ticket(ProductKind.PUNCH)).encode()

    async def body() -> None:
        handled = await daemon.handle(token, "test")
        assert (handled.entry.passed, handled.entry.counted, handled.entry.resolution) == (True, True, "on_open")

    asyncio.run(with_daemon(daemon, body))


def test_stopping_while_a_skier_is_in_the_turnstile_still_counts_the_passage(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    class SlowSkier(FakeBarrier):
        reads_after_pulse = 0

        async def read_inputs(self) -> Any:
            if self._passage_pending:
                self.reads_after_pulse += 1
                if self.reads_after_pulse < 10:  # the skier takes a moment to walk through
                    return await FakeBarrier.read_inputs(FakeBarrier(passes=False))
            return await super().read_inputs()

    barrier = SlowSkier()
    daemon, _ = build(tmp_path, signing_key, barrier, barrier_cfg={"passage_timeout_s": 5})
    scanner_token = sign(signing_key, make_ticket(ProductKind.PUNCH)).encode()

    async def main() -> None:
        task = asyncio.create_task(daemon.run())
        await eventually(lambda: daemon.controller.healthy, "the barrier connected", 5.0)
        handling = asyncio.create_task(daemon.handle(scanner_token, "test"))
        await eventually(lambda: barrier.pulses == 1, "the barrier pulsed open", 5.0)
        daemon.request_stop()  # SIGTERM arrives mid-passage
        await asyncio.wait_for(task, 10)
        await handling

    asyncio.run(main())
    [entry] = daemon.store.entries()
    assert (entry.passed, entry.counted, entry.resolution) == (True, True, "sensor")


def test_emergency_keep_open_holds_the_barrier_and_pulses_nothing(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    barrier = FakeBarrier()
    daemon, _ = build(tmp_path, signing_key, barrier, gate={"emergency_open": True})

    async def body() -> None:
        await eventually(lambda: barrier.hold_open, "the barrier held open", 5.0)
        handled = await daemon.handle(b"anything at all", "test")
        assert (handled.entry.code, handled.entry.counted, handled.entry.resolution) == (
            "emergency",
            False,
            "free_passage",
        )

    asyncio.run(with_daemon(daemon, body))
    assert barrier.pulses == 0


def test_fire_alarm_during_a_pending_admission_releases_the_barrier(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    barrier = FakeBarrier(passes=False)
    daemon, _ = build(tmp_path, signing_key, barrier, barrier_cfg={"passage_timeout_s": 1})
    token = sign(signing_key, make_ticket(ProductKind.PUNCH)).encode()

    async def body() -> None:
        handling = asyncio.create_task(daemon.handle(token, "test"))
        await eventually(lambda: barrier.pulses == 1, "the barrier pulsed open", 5.0)
        barrier.fire_alarm = True
        await eventually(lambda: barrier.hold_open, "the fire alarm released the barrier", 5.0)
        handled = await handling
        assert (handled.entry.code, handled.entry.counted) == ("ok", False)

    asyncio.run(with_daemon(daemon, body))
    assert [e.code for e in daemon.store.entries()] == ["ok", "fire_alarm_on"]


def test_a_journal_failure_on_fire_alarm_still_releases_the_barrier(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    barrier = FakeBarrier()
    daemon, _ = build(tmp_path, signing_key, barrier)

    def disk_full(on: bool, now: datetime) -> Any:
        raise OSError("disk full")

    daemon.service.record_alarm = disk_full  # type: ignore[method-assign]

    async def body() -> None:
        barrier.fire_alarm = True
        await eventually(lambda: barrier.hold_open, "the fire alarm released the barrier", 5.0)
        handled = await daemon.handle(b"\xff", "test")
        assert handled.entry.code == "emergency"

    asyncio.run(with_daemon(daemon, body))


def test_sensor_stuck_high_counts_on_open_instead_of_admitting_for_free(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    barrier = FakeBarrier(passes=False)
    barrier.passage_complete = True  # stuck
    daemon, clock = build(tmp_path, signing_key, barrier, gate={"passback_seconds": 0, "rescan_seconds": 0})
    token = sign(signing_key, make_ticket(ProductKind.PUNCH, entries=1)).encode()

    async def body() -> None:
        first = await daemon.handle(token, "test")
        assert (first.entry.passed, first.entry.counted, first.entry.resolution) == (True, True, "on_open_sensor_stuck")
        clock.now += timedelta(minutes=1)
        second = await daemon.handle(token, "test")
        assert second.entry.code == "used_up"

    asyncio.run(with_daemon(daemon, body))


def test_a_read_that_waited_behind_a_passage_too_long_is_dropped(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    seen: list[Handled] = []
    daemon, _ = build(tmp_path, signing_key, FakeBarrier(), on_handled=seen.append)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        daemon._offer(loop, b"UNKNOWN001", "scanner")
        daemon._offer(loop, b"UNKNOWN002", "scanner")
        await eventually(lambda: len(seen) == 2, "two reads decided", 5.0)
        stale = Scan(b"UNKNOWN003", "scanner", daemon.clock(), time.monotonic() - 10)
        daemon.intake.put(stale)
        daemon._offer(loop, b"UNKNOWN004", "scanner")
        await eventually(lambda: len(seen) == 3, "the fresh read decided", 5.0)

    asyncio.run(with_daemon(daemon, body))
    assert [h.data for h in seen] == [b"UNKNOWN001", b"UNKNOWN002", b"UNKNOWN004"]
    assert daemon.intake.drops == {"scanner": {"too_old": 1}}


def test_an_input_that_throws_is_logged_and_read_again(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    class Flaky(FakeScanner):
        calls = 0

        def read_line(self, timeout: float) -> bytes | None:
            self.calls += 1
            if self.calls == 1:
                raise TypeError("driver bug")
            return super().read_line(timeout)

    seen: list[Handled] = []
    scanner = Flaky([b"UNKNOWN123"])
    daemon, _ = build(tmp_path, signing_key, FakeBarrier(), scanner=scanner, on_handled=seen.append)

    async def body() -> None:
        await eventually(lambda: len(seen) == 1, "the read decided after the input's error", 5.0)

    asyncio.run(with_daemon(daemon, body))
    assert seen[0].entry.code == "unknown_ticket"
    assert scanner.closed


def test_exit_gate_through_the_daemon_lets_a_refunded_ticket_out(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    barrier = FakeBarrier()
    daemon, _ = build(tmp_path, signing_key, barrier, gate={"direction": "out"})
    daemon.store.set_status("1001", TicketStatus.REVOKED, "refunded")
    token = sign(signing_key, make_ticket()).encode()

    async def body() -> None:
        handled = await daemon.handle(token, "test")
        assert (handled.entry.code, handled.entry.passed, handled.entry.counted) == ("ok_exit", True, False)

    asyncio.run(with_daemon(daemon, body))
    assert barrier.pulses == 1


def test_a_quick_skier_whose_passage_signal_ends_within_the_pulse_is_counted(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    """A real relay board (Modbus TCP simulator): the sensor is watched from the moment the coil is on."""

    async def scenario() -> None:
        # The skier is through 20 ms after the coil goes on and the signal is gone 100 ms later,
        # well inside the 300 ms pulse.
        sim = RelayBoardSim(passage_input=0, fire_alarm_input=1, passage_delay_s=0.02, passage_hold_s=0.1)
        port = await sim.start_tcp()
        barrier = ModbusBarrier(
            transport="tcp", port=port, open_coil=0, passage_input=0, fire_alarm_input=1, pulse_ms=300
        )
        cfg = config(tmp_path, signing_key, port=port, pulse_ms=300, passage_timeout_s=2.0)
        daemon = GateDaemon(cfg, store=GateStore(cfg.store.path), barrier=barrier, clock=Clock())
        tokens = [sign(signing_key, make_ticket(ProductKind.PUNCH, ticket_id=f"10{i}")).encode() for i in range(3)]

        async def body() -> None:
            for token in tokens:
                handled = await daemon.handle(token, "test")
                assert (handled.entry.code, handled.entry.passed, handled.entry.counted) == ("ok", True, True)
                assert handled.entry.resolution == "sensor"

        try:
            await with_daemon(daemon, body)
        finally:
            await sim.stop()
        assert sim.passage_count == 3 and not sim.coil_on

    asyncio.run(scenario())
