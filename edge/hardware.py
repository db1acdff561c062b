"""How the gate sees its devices: Protocols, and factories that pick a driver by config `type`.

Drivers are imported lazily here, so a gate without a camera never loads OpenCV, and a
missing optional library is reported by name (drivers.errors.MissingDependencyError).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from edge.config import CameraConfig, ModbusRtuBarrier, ModbusTcpBarrier, ScannerConfig

if TYPE_CHECKING:
    import numpy as np

    from drivers.barrier import BarrierInputs
    from drivers.qr import DecodedCode


class Barrier(Protocol):
    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def pulse_open(self) -> None: ...
    async def set_hold_open(self, on: bool) -> None: ...
    async def read_inputs(self) -> BarrierInputs: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def last_error(self) -> str | None: ...


class Scanner(Protocol):
    def read_line(self, timeout: float) -> bytes | None: ...
    def close(self) -> None: ...


class Camera(Protocol):
    def read(self) -> np.ndarray | None: ...
    def close(self) -> None: ...


class QrDecoder(Protocol):
    name: str

    def decode(self, image: np.ndarray) -> list[DecodedCode]: ...


def make_barrier(cfg: ModbusTcpBarrier | ModbusRtuBarrier) -> Barrier:
    from drivers.barrier import ModbusBarrier

    rtu = isinstance(cfg, ModbusRtuBarrier)
    return ModbusBarrier(
        transport="rtu" if rtu else "tcp",
        host=cfg.host,
        port=cfg.port,
        serial_port=cfg.serial_port if isinstance(cfg, ModbusRtuBarrier) else None,
        baudrate=cfg.baudrate if isinstance(cfg, ModbusRtuBarrier) else 9600,
        device_id=cfg.device_id,
        open_coil=cfg.open_coil,
        pulse_ms=cfg.pulse_ms,
        passage_input=cfg.passage_input,
        fire_alarm_input=cfg.fire_alarm_input,
        timeout_s=cfg.timeout_s,
    )


def make_scanner(cfg: ScannerConfig) -> Scanner:
    from drivers.scanner import SerialScanner

    return SerialScanner(
        port=cfg.port, baudrate=cfg.baudrate, bytesize=cfg.bytesize, parity=cfg.parity, stopbits=cfg.stopbits
    )


def make_camera(cfg: CameraConfig) -> Camera:
    from drivers.camera import OpenCvCamera

    return OpenCvCamera(source=cfg.source, width=cfg.width, height=cfg.height)


def make_decoder(name: str) -> QrDecoder:
    from drivers.qr import make_decoder as _make

    return _make(name)
