"""A simulated Modbus relay board wired to a turnstile, served by a real pymodbus server (TCP or RTU).

Used by tests, the demo and the benchmark in place of the hardware. The board has coils (relays) and
discrete inputs. When the open coil switches on, a simulated skier walks through: after
``passage_delay_s`` the passage input goes high for ``passage_hold_s`` (unless ``skier_passes`` is
False). The fire-alarm input is set by the caller.

``VirtualSerialCable`` joins two pseudo-terminals like a null-modem cable, so an RTU client and the
simulator can each open a real tty path.

Why here and not in drivers/: this is the peer at the other end of the wire, a stand-in for the relay
board, and it never runs on a gate. drivers/ holds the libraries a gate uses to talk to real devices
(with their in-memory fakes such as `FakeBarrier`); a driver's real-protocol test speaks to this board
through pymodbus, as it would to the hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

_READ_DISCRETE_INPUTS = 2
_WRITE_COIL_CODES = frozenset({5, 15})

_Server = ModbusTcpServer | ModbusSerialServer


class RelayBoardSim:
    """A relay board + turnstile: coils, discrete inputs and a simulated skier."""

    def __init__(
        self,
        *,
        open_coil: int = 0,
        passage_input: int = 0,
        fire_alarm_input: int = 1,
        passage_delay_s: float = 0.05,
        passage_hold_s: float = 0.3,
        skier_passes: bool = True,
        device_id: int = 0,
        coils: int = 16,
        inputs: int = 16,
    ) -> None:
        """Describe the board; ``device_id=0`` answers every Modbus device id."""
        self.open_coil = open_coil
        self.passage_input = passage_input
        self.fire_alarm_input = fire_alarm_input
        self.passage_delay_s = passage_delay_s
        self.passage_hold_s = passage_hold_s
        self.skier_passes = skier_passes
        self.device_id = device_id
        self._n_coils = _round_up_16(max(coils, open_coil + 1))
        self._n_inputs = _round_up_16(max(inputs, passage_input + 1, fire_alarm_input + 1))
        self._coils = [False] * self._n_coils
        self._fire_alarm = False
        self._passages: list[tuple[float, float]] = []
        self._server: _Server | None = None
        self.open_count = 0
        self.passage_count = 0
        self.port: int | None = None

    # --- state a test can look at or change ---------------------------------------------------

    @property
    def coil_on(self) -> bool:
        """Whether the open coil is energised right now."""
        return self._coils[self.open_coil]

    @property
    def coils(self) -> tuple[bool, ...]:
        """Every coil of the board."""
        return tuple(self._coils)

    @property
    def passage_complete(self) -> bool:
        """Whether the passage input is high right now."""
        now = time.monotonic()
        self._passages = [(start, end) for start, end in self._passages if end > now]
        return any(start <= now for start, _ in self._passages)

    @property
    def running(self) -> bool:
        """Whether the Modbus server is up."""
        return self._server is not None

    def set_fire_alarm(self, on: bool) -> None:
        """Drive the fire-alarm input."""
        self._fire_alarm = on

    # --- lifecycle -----------------------------------------------------------------------------

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve Modbus TCP on host:port (0 picks a free port); return the bound port, OSError if taken."""
        server = self._prepare(lambda device: ModbusTcpServer(device, address=(host, port)))
        await self._listen(server, f"tcp {host}:{port}")
        listener: Any = server.transport
        self.port = int(listener.sockets[0].getsockname()[1])
        return self.port

    async def start_rtu(self, serial_port: str, baudrate: int = 9600) -> None:
        """Serve Modbus RTU on a serial port path (an adapter or a VirtualSerialCable end); OSError if absent."""
        server = self._prepare(
            lambda device: ModbusSerialServer(
                device, framer=FramerType.RTU, port=serial_port, baudrate=baudrate, reconnect_delay=0.5
            )
        )
        await self._listen(server, f"serial port {serial_port}")

    async def stop(self) -> None:
        """Stop serving and drop every connection; like a power cut, the coils fall off."""
        server, self._server = self._server, None
        self.port = None
        self._coils = [False] * self._n_coils
        self._passages.clear()
        if server is not None:
            await server.shutdown()
            # Let the transports run their close callbacks so the port is free when we return.
            await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _prepare(self, factory: Callable[[SimDevice], _Server]) -> _Server:
        if self._server is not None:
            raise RuntimeError("relay board simulator is already running; stop() it first")
        self._coils = [False] * self._n_coils
        device = SimDevice(
            id=self.device_id,
            simdata=(
                [SimData(0, count=self._n_coils, values=False, datatype=DataType.BITS)],
                [SimData(0, count=self._n_inputs, values=False, datatype=DataType.BITS)],
                [SimData(0, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._on_access,
        )
        return factory(device)

    async def _listen(self, server: _Server, where: str) -> None:
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            await server.shutdown()
            raise OSError(f"relay board simulator cannot listen on {where}") from exc
        self._server = server

    # --- the board's behaviour, called by pymodbus on every request ----------------------------

    async def _on_access(
        self,
        func_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # Called before pymodbus applies a write, with the block's packed 16-bit registers.
        if values is not None and func_code in _WRITE_COIL_CODES:
            for offset, value in enumerate(values):
                self._set_coil(address + offset, bool(value))
        elif func_code == _READ_DISCRETE_INPUTS:
            bits = [False] * self._n_inputs
            bits[self.passage_input] = self.passage_complete
            bits[self.fire_alarm_input] = self._fire_alarm
            for index in range(self._n_inputs // 16):
                chunk = bits[index * 16 : index * 16 + 16]
                registers[index] = sum(1 << bit for bit, on in enumerate(chunk) if on)
        return None

    def _set_coil(self, coil: int, on: bool) -> None:
        if not 0 <= coil < self._n_coils:
            return
        was_on, self._coils[coil] = self._coils[coil], on
        if coil == self.open_coil and on and not was_on:
            self.open_count += 1
            if self.skier_passes:
                self.passage_count += 1
                start = time.monotonic() + self.passage_delay_s
                self._passages.append((start, start + self.passage_hold_s))


def _round_up_16(n: int) -> int:
    return max(16, (n + 15) // 16 * 16)


class VirtualSerialCable:
    """Two pseudo-terminals joined like a null-modem cable: bytes written to one end come out the other.

    A single pty pair cannot serve here: its master side has no path, and pymodbus (through
    pyserial) only opens ports by path. So each side gets its own pty, whose slave path is
    ``port_a`` / ``port_b``, and a thread copies between the two masters.
    """

    def __init__(self) -> None:
        """Open both pseudo-terminals and start copying."""
        self._masters: list[int] = []
        self._slaves: list[int] = []
        for _ in range(2):
            master, slave = os.openpty()
            # Raw before anyone opens it: no echo, no newline translation of binary frames.
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._masters.append(master)
            # Held open so the master never sees a hang-up while a side is closed and reopened.
            self._slaves.append(slave)
        self.port_a = os.ttyname(self._slaves[0])
        self.port_b = os.ttyname(self._slaves[1])
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._pump, name="virtual-serial-cable", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop copying and close both pseudo-terminals."""
        if not self._thread.is_alive() and not self._masters:
            return
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2)
        for fd in (*self._masters, *self._slaves, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._masters, self._slaves = [], []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _pump(self) -> None:
        a, b = self._masters
        while True:
            readable, _, _ = select.select([a, b, self._wake_r], [], [])
            if self._wake_r in readable:
                return
            for source in readable:
                try:
                    data = os.read(source, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return
                _write_or_drop(b if source == a else a, data)


def _write_or_drop(fd: int, data: bytes) -> None:
    # Nobody reading the other end and its buffer full: the bytes are lost, as on a real line.
    with contextlib.suppress(BlockingIOError):
        while data:
            data = data[os.write(fd, data) :]
