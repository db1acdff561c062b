"""The Modbus barrier against a real pymodbus relay-board simulator (TCP and RTU over ptys), and its fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from drivers.barrier import Barrier, BarrierInputs, FakeBarrier, ModbusBarrier
from drivers.errors import DriverConnectionError, DriverError, DriverProtocolError, DriverTimeoutError
from harness.processes import eventually
from harness.relay_sim import RelayBoardSim, VirtualSerialCable

TRANSPORTS = [pytest.param("tcp", id="tcp"), pytest.param("rtu", id="rtu-over-pty")]


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run one async scenario; a hung scenario fails instead of blocking the suite."""
    asyncio.run(asyncio.wait_for(coro, timeout=10))


@asynccontextmanager
async def relay_board(
    transport: str, *, sim: RelayBoardSim | None = None, **barrier_options: Any
) -> AsyncIterator[tuple[RelayBoardSim, ModbusBarrier]]:
    """A running simulator and a ModbusBarrier talking to it over TCP loopback or RTU over ptys."""
    sim = sim or RelayBoardSim(passage_input=0, fire_alarm_input=1, passage_hold_s=2.0)
    options: dict[str, Any] = {
        "open_coil": sim.open_coil,
        "passage_input": sim.passage_input,
        "fire_alarm_input": sim.fire_alarm_input,
        "pulse_ms": 20,
        **barrier_options,
    }
    if transport == "tcp":
        port = await sim.start_tcp()
        barrier = ModbusBarrier(transport="tcp", port=port, **options)
        async with sim, barrier:
            yield sim, barrier
        return
    with VirtualSerialCable() as cable:
        await sim.start_rtu(cable.port_a, baudrate=19200)
        barrier = ModbusBarrier(transport="rtu", serial_port=cable.port_b, baudrate=19200, **options)
        async with sim, barrier:
            yield sim, barrier


async def passage_seen(barrier: Barrier) -> bool:
    return (await barrier.read_inputs()).passage_complete is True


# --- real protocol: TCP loopback and RTU over a pty cable ------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pulse_open_switches_the_coil_on_then_off(transport: str) -> None:
    async def scenario() -> None:
        async with relay_board(transport) as (sim, barrier):
            await barrier.pulse_open()
            assert sim.open_count == 1
            assert not sim.coil_on
            assert barrier.healthy
            assert barrier.last_error is None

    run(scenario())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_passage_complete_goes_high_after_a_pulse(transport: str) -> None:
    async def scenario() -> None:
        async with relay_board(transport) as (_sim, barrier):
            assert await barrier.read_inputs() == BarrierInputs(passage_complete=False, fire_alarm=False)
            await barrier.pulse_open()
            await eventually(lambda: passage_seen(barrier), "passage_complete after the pulse", 4.0, interval=0.02)

    run(scenario())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fire_alarm_input_is_read(transport: str) -> None:
    async def scenario() -> None:
        async with relay_board(transport) as (sim, barrier):
            sim.set_fire_alarm(True)
            assert (await barrier.read_inputs()).fire_alarm is True
            sim.set_fire_alarm(False)
            assert (await barrier.read_inputs()).fire_alarm is False

    run(scenario())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hold_open_keeps_the_coil_on_through_pulses_until_cleared(transport: str) -> None:
    async def scenario() -> None:
        async with relay_board(transport) as (sim, barrier):
            await barrier.set_hold_open(True)
            assert sim.coil_on
            await barrier.pulse_open()
            assert sim.coil_on, "a pulse must not close a barrier held open for a fire alarm"
            await barrier.set_hold_open(False)
            assert not sim.coil_on
            assert sim.open_count == 1

    run(scenario())


def test_skier_who_turns_back_leaves_passage_low() -> None:
    async def scenario() -> None:
        sim = RelayBoardSim(passage_input=0, fire_alarm_input=1, passage_delay_s=0.0, skier_passes=False)
        async with relay_board("tcp", sim=sim) as (_sim, barrier):
            await barrier.pulse_open()
            assert sim.open_count == 1
            assert sim.passage_count == 0
            assert (await barrier.read_inputs()).passage_complete is False

    run(scenario())


def test_inputs_on_other_addresses_and_unconfigured_inputs() -> None:
    async def scenario() -> None:
        sim = RelayBoardSim(open_coil=3, passage_input=5, fire_alarm_input=40, passage_hold_s=2.0)
        async with relay_board("tcp", sim=sim) as (_sim, barrier):
            sim.set_fire_alarm(True)
            await barrier.pulse_open()
            assert sim.coils[3] is False and sim.open_count == 1
            await eventually(lambda: passage_seen(barrier), "passage on input 5", 4.0, interval=0.02)
            assert (await barrier.read_inputs()).fire_alarm is True
        async with relay_board("tcp", passage_input=None, fire_alarm_input=None) as (_sim, bare):
            assert await bare.read_inputs() == BarrierInputs(passage_complete=None, fire_alarm=None)

    run(scenario())


def test_exception_response_is_a_protocol_error_and_the_board_stays_usable() -> None:
    async def scenario() -> None:
        async with relay_board("tcp", passage_input=200) as (sim, barrier):
            with pytest.raises(DriverProtocolError, match="illegal data address"):
                await barrier.read_inputs()
            assert not barrier.healthy
            assert "read discrete inputs" in (barrier.last_error or "")
            await barrier.pulse_open()
            assert barrier.healthy
            assert sim.open_count == 1

    run(scenario())


def test_dead_board_fails_fast_then_is_picked_up_when_it_comes_back() -> None:
    async def scenario() -> None:
        sim = RelayBoardSim()
        port = await sim.start_tcp()
        await sim.stop()  # the port is now free and nothing listens on it
        barrier = ModbusBarrier(transport="tcp", port=port, pulse_ms=0)
        with pytest.raises(DriverConnectionError) as failure:
            await barrier.pulse_open()
        assert f"127.0.0.1:{port}" in str(failure.value)
        assert not barrier.healthy
        assert f"127.0.0.1:{port}" in (barrier.last_error or "")

        await sim.start_tcp(port=port)
        try:
            await barrier.pulse_open()
            assert barrier.healthy
            assert sim.open_count == 1 and not sim.coil_on
        finally:
            await barrier.close()
            await sim.stop()

    run(scenario())


def test_board_restarted_mid_run_is_reconnected() -> None:
    async def scenario() -> None:
        async with relay_board("tcp", timeout_s=0.2, retries=0) as (sim, barrier):
            port = sim.port
            assert port is not None
            await barrier.pulse_open()
            await sim.stop()
            with pytest.raises(DriverConnectionError):
                await barrier.pulse_open()
            assert not barrier.healthy
            await sim.start_tcp(port=port)
            await barrier.pulse_open()
            assert barrier.healthy
            assert sim.open_count == 2 and not sim.coil_on
            assert barrier.last_error is not None  # kept for the diagnostics page

    run(scenario())


def test_cancelled_pulse_still_switches_the_coil_off() -> None:
    async def scenario() -> None:
        async with relay_board("tcp", pulse_ms=10_000) as (sim, barrier):
            pulse = asyncio.create_task(barrier.pulse_open())
            await eventually(lambda: sim.coil_on, "coil on during the pulse", 4.0, interval=0.02)
            pulse.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pulse
            assert not sim.coil_on

    run(scenario())


def test_rtu_board_that_never_answers_times_out() -> None:
    async def scenario() -> None:
        with VirtualSerialCable() as cable:  # nothing on port_a
            barrier = ModbusBarrier(transport="rtu", serial_port=cable.port_b, timeout_s=0.05, retries=0)
            with pytest.raises(DriverTimeoutError, match=cable.port_b):
                await barrier.set_hold_open(True)
            assert not barrier.healthy
            await barrier.close()

    run(scenario())


# --- the coil-off guarantee, with a scripted client injected ----------------------------------


class _Response:
    def __init__(self, *, error: bool = False) -> None:
        self.bits = [False] * 8
        self.exception_code = 4 if error else None
        self._error = error

    def isError(self) -> bool:
        return self._error


class ScriptedClient:
    """Stands in for a pymodbus client: records coil writes; failures follow a script."""

    def __init__(self, fail_writes: dict[int, Exception] | None = None) -> None:
        self.connected = False
        self.connects = 0
        self.writes: list[bool] = []
        self._fail_writes = fail_writes or {}

    async def connect(self) -> bool:
        self.connects += 1
        self.connected = True
        return True

    def close(self) -> None:
        self.connected = False

    async def write_coil(self, address: int, value: bool, *, device_id: int = 1) -> _Response:
        self.writes.append(value)
        failure = self._fail_writes.get(len(self.writes))
        if failure is not None:
            raise failure
        return _Response()


def test_failed_coil_off_is_retried_once_on_a_fresh_connection() -> None:
    async def scenario() -> None:
        client = ScriptedClient(fail_writes={2: ConnectionResetError("link dropped")})
        barrier = ModbusBarrier(transport="tcp", pulse_ms=0, client=client)
        await barrier.pulse_open()
        assert client.writes == [True, False, False]
        assert client.connects == 2
        assert barrier.healthy

    run(scenario())


def test_coil_off_failing_twice_raises_and_says_the_coil_may_be_on() -> None:
    async def scenario() -> None:
        client = ScriptedClient(fail_writes={2: OSError("gone"), 3: OSError("still gone")})
        barrier = ModbusBarrier(transport="tcp", pulse_ms=0, client=client)
        with pytest.raises(DriverConnectionError, match="MAY STILL BE ON"):
            await barrier.pulse_open()
        assert client.writes == [True, False, False]
        assert not barrier.healthy
        assert "MAY STILL BE ON" in (barrier.last_error or "")

    run(scenario())


def test_unanswered_coil_on_is_followed_by_a_coil_off() -> None:
    async def scenario() -> None:
        client = ScriptedClient(fail_writes={1: TimeoutError()})
        barrier = ModbusBarrier(transport="tcp", pulse_ms=0, client=client)
        with pytest.raises(DriverTimeoutError, match="coil on"):
            await barrier.pulse_open()
        assert client.writes == [True, False]

    run(scenario())


def test_rtu_without_a_serial_port_is_refused() -> None:
    with pytest.raises(ValueError, match="serial_port"):
        ModbusBarrier(transport="rtu")


# --- FakeBarrier --------------------------------------------------------------------------------


def test_fake_counts_pulses_and_reports_one_passage_per_pulse() -> None:
    async def scenario() -> None:
        async with FakeBarrier() as fake:
            assert (await fake.read_inputs()).passage_complete is False
            await fake.pulse_open()
            assert fake.pulses == 1
            assert (await fake.read_inputs()).passage_complete is True
            assert (await fake.read_inputs()).passage_complete is False
            assert fake.calls == ["connect", "read_inputs", "pulse_open", "read_inputs", "read_inputs"]

    run(scenario())


def test_fake_skier_who_turns_back_never_completes_the_passage() -> None:
    async def scenario() -> None:
        fake = FakeBarrier(passes=False)
        await fake.pulse_open()
        assert fake.pulses == 1
        assert (await fake.read_inputs()).passage_complete is False

    run(scenario())


def test_fake_inputs_are_settable_or_absent() -> None:
    async def scenario() -> None:
        fake = FakeBarrier()
        fake.fire_alarm = True
        assert await fake.read_inputs() == BarrierInputs(passage_complete=False, fire_alarm=True)
        bare = FakeBarrier(passage_input=False, fire_alarm_input=False)
        await bare.pulse_open()
        assert await bare.read_inputs() == BarrierInputs(passage_complete=None, fire_alarm=None)

    run(scenario())


def test_fake_hold_open_is_recorded_and_pulses_do_not_release_it() -> None:
    async def scenario() -> None:
        fake = FakeBarrier()
        await fake.set_hold_open(True)
        await fake.pulse_open()
        assert fake.hold_open and fake.coil_on and fake.pulses == 0
        await fake.set_hold_open(False)
        assert not fake.hold_open

    run(scenario())


def test_fake_failures_raise_connection_errors_and_mark_it_unhealthy() -> None:
    async def scenario() -> None:
        fake = FakeBarrier(fail=True)
        with pytest.raises(DriverConnectionError):
            await fake.pulse_open()
        assert not fake.healthy and fake.pulses == 0
        fake.fail = False
        await fake.pulse_open()
        assert fake.healthy and fake.last_error is not None

        fake.inject_fault(times=2, error=DriverProtocolError("board said no"))
        for _ in range(2):
            with pytest.raises(DriverError, match="board said no"):
                await fake.read_inputs()
        await fake.read_inputs()
        assert fake.healthy

    run(scenario())


def test_both_implementations_satisfy_the_barrier_protocol() -> None:
    assert isinstance(FakeBarrier(), Barrier)
    assert isinstance(ModbusBarrier(transport="tcp"), Barrier)
