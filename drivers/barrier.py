"""Turnstile barrier on a Modbus relay board (TCP or RTU): pulse the open coil, read passage and fire alarm.

Coil and input numbers are the board's documented 0-based addresses, exactly as sent on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable

from drivers.errors import (
    DriverConnectionError,
    DriverError,
    DriverProtocolError,
    DriverTimeoutError,
    MissingDependencyError,
)

_MODBUS_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
# Inputs closer together than this are fetched in one request.
_MAX_SPAN = 16


@dataclass(frozen=True, slots=True)
class BarrierInputs:
    """The barrier's inputs at one moment; None where the input is not configured."""

    passage_complete: bool | None
    fire_alarm: bool | None


@runtime_checkable
class Barrier(Protocol):
    """What the gate daemon needs from a barrier."""

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def pulse_open(self) -> None: ...
    async def set_hold_open(self, on: bool) -> None: ...
    async def read_inputs(self) -> BarrierInputs: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def last_error(self) -> str | None: ...


class ModbusBarrier:
    """A relay board driving the turnstile's open coil, with optional passage and fire-alarm inputs.

    Every failure raises a DriverError naming the board and the operation, and marks the barrier
    unhealthy; the next call reconnects, so a board that comes back is picked up.

    ``timeout_s`` bounds one whole operation: the connect and each of the ``1 + retries`` attempts
    get ``timeout_s / (retries + 1)``, so a silent board fails after ``timeout_s`` and a refused
    connection at once; pulse_open on a silent board takes twice that (its best-effort coil off).
    ``client`` replaces the pymodbus client (tests, unusual transports) and brings its own timeouts.
    """

    def __init__(
        self,
        *,
        transport: Literal["tcp", "rtu"],
        host: str = "127.0.0.1",
        port: int = 502,
        serial_port: str | None = None,
        baudrate: int = 9600,
        device_id: int = 1,
        open_coil: int = 0,
        pulse_ms: int = 300,
        passage_input: int | None = None,
        fire_alarm_input: int | None = None,
        timeout_s: float = 0.5,
        retries: int = 1,
        client: Any | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """Configure the board; no I/O until connect() or the first operation."""
        if transport not in ("tcp", "rtu"):
            raise ValueError(f"transport must be 'tcp' or 'rtu', not {transport!r}")
        if transport == "rtu" and not serial_port:
            raise ValueError("transport 'rtu' needs serial_port")
        if pulse_ms < 0 or timeout_s <= 0 or retries < 0:
            raise ValueError("pulse_ms and retries must be >= 0 and timeout_s > 0")
        for name, address in (
            ("open_coil", open_coil),
            ("passage_input", passage_input),
            ("fire_alarm_input", fire_alarm_input),
        ):
            if address is not None and not 0 <= address <= 0xFFFF:
                raise ValueError(f"{name} must be a 0-based Modbus address (0..65535), not {address}")
        self._transport = transport
        self._host = host
        self._port = port
        self._serial_port = serial_port
        self._baudrate = baudrate
        self._device_id = device_id
        self._open_coil = open_coil
        self._pulse_s = pulse_ms / 1000
        self._passage_input = passage_input
        self._fire_alarm_input = fire_alarm_input
        self._timeout_s = timeout_s
        self._attempt_timeout_s = timeout_s / (retries + 1)
        self._retries = retries
        self._client = client
        self._log = logger or logging.getLogger(__name__)
        where = f"{host}:{port}" if transport == "tcp" else f"{serial_port} @ {baudrate} baud"
        self.name = f"relay board {transport} {where} (device {device_id})"
        self._lock = asyncio.Lock()
        self._healthy = False
        self._last_error: str | None = None
        self._hold_open = False
        # The discrete inputs to read, as (start, count) ranges: one read when they are close together.
        wanted = [a for a in (passage_input, fire_alarm_input) if a is not None]
        self._input_ranges: list[tuple[int, int]] = []
        if wanted:
            low, high = min(wanted), max(wanted)
            self._input_ranges = [(low, high - low + 1)] if high - low < _MAX_SPAN else [(a, 1) for a in wanted]

    @property
    def healthy(self) -> bool:
        """Whether the last operation succeeded."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        """The most recent failure, kept after recovery for the diagnostics page."""
        return self._last_error

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the TCP connection or serial port."""
        async with self._lock:
            await self._ensure_connected()
            self._succeeded()

    async def close(self) -> None:
        """Close the connection; the coils stay as they are (a held-open barrier stays open)."""
        async with self._lock:
            if self._client is not None:
                self._client.close()

    async def pulse_open(self) -> None:
        """Let one skier through: open coil on, wait pulse_ms, coil off (retried once)."""
        if self._hold_open:
            self._log.debug("%s: held open, pulse not needed", self.name)
            return
        try:
            await self._write_coil(True, "pulse open: coil on")
        except (DriverTimeoutError, asyncio.CancelledError) as exc:
            # The request may have reached the board and only the answer been lost: switch off once.
            with contextlib.suppress(DriverError):
                await self._write_coil(False, "pulse open: coil off after unanswered on")
            if isinstance(exc, DriverError):
                self._last_error = str(exc)
            raise
        try:
            await asyncio.sleep(self._pulse_s)
        finally:
            # Also on cancellation: a coil left on is a turnstile left open.
            if not self._hold_open:
                await self._coil_off_after_pulse()

    async def set_hold_open(self, on: bool) -> None:
        """Hold the open coil on for free passage (fire alarm, emergency) until called with False."""
        self._hold_open = on
        await self._write_coil(on, f"hold open {'on' if on else 'off'}")

    async def read_inputs(self) -> BarrierInputs:
        """Read the configured inputs; unconfigured ones are None."""
        if not self._input_ranges:
            return BarrierInputs(passage_complete=None, fire_alarm=None)
        bits: dict[int, bool] = {}
        for start, count in self._input_ranges:
            values = await self._read_discrete_inputs(start, count)
            bits.update(zip(range(start, start + count), values, strict=False))
        return BarrierInputs(
            passage_complete=None if self._passage_input is None else bits[self._passage_input],
            fire_alarm=None if self._fire_alarm_input is None else bits[self._fire_alarm_input],
        )

    # --- Modbus I/O ---------------------------------------------------------------------------

    async def _coil_off_after_pulse(self) -> None:
        try:
            await self._write_coil(False, "pulse open: coil off")
            return
        except DriverError as first:
            self._log.warning("%s: %s; retrying once", self.name, first)
        try:
            await self._write_coil(False, "pulse open: coil off (retry)")
        except DriverError as second:
            stuck = type(second)(f"{second}; open coil {self._open_coil} MAY STILL BE ON")
            self._failed(stuck)
            raise stuck from second

    async def _write_coil(self, on: bool, op: str) -> None:
        coil, device_id = self._open_coil, self._device_id
        await self._call(
            f"{op} (write coil {coil})",
            lambda client: client.write_coil(coil, on, device_id=device_id),
        )

    async def _read_discrete_inputs(self, start: int, count: int) -> list[bool]:
        device_id = self._device_id
        op = f"read discrete inputs {start}..{start + count - 1}"
        response = await self._call(
            op, lambda client: client.read_discrete_inputs(start, count=count, device_id=device_id)
        )
        bits = list(response.bits)
        if len(bits) < count:
            raise self._failed(DriverProtocolError(f"{self.name}: {op}: answer has {len(bits)} bits"))
        return [bool(b) for b in bits[:count]]

    async def _call(self, op: str, request: Callable[[Any], Awaitable[Any]]) -> Any:
        async with self._lock:
            await self._ensure_connected()
            try:
                response = await request(self._client)
            except Exception as exc:
                # Timed out or dropped: start from a fresh connection next time.
                self._drop_connection()
                raise self._failed(self._classify(op, exc)) from exc
            if response is None or response.isError():
                code = getattr(response, "exception_code", None)
                meaning = _MODBUS_EXCEPTIONS.get(code, "unknown") if isinstance(code, int) else "no answer"
                raise self._failed(
                    DriverProtocolError(f"{self.name}: {op} refused: Modbus exception {code} ({meaning})")
                )
            self._succeeded()
            return response

    async def _ensure_connected(self) -> None:
        client = self._client
        if client is not None and client.connected:
            return
        try:
            if client is None:
                client = self._client = self._make_client()
            else:
                client.close()
            ok = await client.connect()
        except DriverError as exc:
            raise self._failed(exc) from exc
        except Exception as exc:
            raise self._failed(self._classify("connect", exc)) from exc
        if not ok:
            raise self._failed(DriverConnectionError(f"{self.name}: connect failed (refused or no answer)"))
        if self._last_error is not None and not self._healthy:
            self._log.info("%s: connected again", self.name)

    def _make_client(self) -> Any:
        try:
            from pymodbus import FramerType
            from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        except ImportError as exc:
            raise MissingDependencyError("pymodbus", "the Modbus relay-board barrier") from exc
        # reconnect_delay=0: no background reconnect loop; the next operation reconnects instead.
        if self._transport == "tcp":
            return AsyncModbusTcpClient(
                self._host,
                port=self._port,
                timeout=self._attempt_timeout_s,
                retries=self._retries,
                reconnect_delay=0,
            )
        assert self._serial_port is not None
        return AsyncModbusSerialClient(
            self._serial_port,
            framer=FramerType.RTU,
            baudrate=self._baudrate,
            timeout=self._attempt_timeout_s,
            retries=self._retries,
            reconnect_delay=0,
        )

    def _classify(self, op: str, exc: Exception) -> DriverConnectionError:
        """A request that went out unanswered is a timeout; anything else a connection failure."""
        if _is_timeout(exc):
            return DriverTimeoutError(f"{self.name}: {op} failed: no answer within {self._timeout_s:g} s")
        return DriverConnectionError(f"{self.name}: {op} failed: {exc or type(exc).__name__}")

    def _drop_connection(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()

    def _succeeded(self) -> None:
        self._healthy = True

    def _failed(self, error: DriverError) -> DriverError:
        self._healthy = False
        self._last_error = str(error)
        self._log.warning("%s", error)
        return error


def _is_timeout(exc: Exception) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    try:
        from pymodbus.exceptions import ModbusIOException
    except ImportError:
        return False
    return isinstance(exc, ModbusIOException)


class FakeBarrier:
    """In-memory barrier for logic tests: records calls, settable inputs, injectable faults.

    After a pulse the simulated skier walks through: the next read_inputs() reports
    passage_complete=True once (unless ``passes`` is False).
    """

    def __init__(
        self,
        *,
        passes: bool = True,
        passage_input: bool = True,
        fire_alarm_input: bool = True,
        fail: bool = False,
    ) -> None:
        """Configure which inputs exist and whether the skier walks through after a pulse."""
        self.passes = passes
        self.fail = fail
        self.passage_complete: bool | None = False if passage_input else None
        self.fire_alarm: bool | None = False if fire_alarm_input else None
        self.pulses = 0
        self.hold_open = False
        self.connected = False
        self.calls: list[str] = []
        self._faults: list[DriverError] = []
        self._passage_pending = False
        self._healthy = False
        self._last_error: str | None = None

    @property
    def healthy(self) -> bool:
        """Whether the last operation succeeded."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        """The most recent failure."""
        return self._last_error

    @property
    def coil_on(self) -> bool:
        """The fake's coil is only ever left on by hold-open."""
        return self.hold_open

    def inject_fault(self, times: int = 1, error: DriverError | None = None) -> None:
        """Make the next ``times`` calls raise ``error`` (a DriverConnectionError by default)."""
        for _ in range(times):
            self._faults.append(error or DriverConnectionError("fake barrier: injected fault"))

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Pretend to connect."""
        self._enter("connect")
        self.connected = True

    async def close(self) -> None:
        """Pretend to close; never fails."""
        self.calls.append("close")
        self.connected = False

    async def pulse_open(self) -> None:
        """Count a pulse; the skier passes on the next read if ``passes``."""
        self._enter("pulse_open")
        if self.hold_open:
            return
        self.pulses += 1
        if self.passes:
            self._passage_pending = True

    async def set_hold_open(self, on: bool) -> None:
        """Record the hold-open state."""
        self._enter(f"set_hold_open({on})")
        self.hold_open = on

    async def read_inputs(self) -> BarrierInputs:
        """Report the inputs, including a pending simulated passage."""
        self._enter("read_inputs")
        passage = self.passage_complete
        if passage is not None and self._passage_pending:
            passage, self._passage_pending = True, False
        return BarrierInputs(passage_complete=passage, fire_alarm=self.fire_alarm)

    def _enter(self, call: str) -> None:
        self.calls.append(call)
        error: DriverError | None = None
        if self._faults:
            error = self._faults.pop(0)
        elif self.fail:
            error = DriverConnectionError(f"fake barrier: {call} failed (fail=True)")
        if error is not None:
            self._healthy = False
            self._last_error = str(error)
            raise error
        self._healthy = True
