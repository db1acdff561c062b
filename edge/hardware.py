"""How the gate sees its devices: Protocols, and factories that pick a driver by config `type`.

Drivers are imported lazily here, so a gate without a camera never loads OpenCV, and a
missing optional library is reported by name (drivers.errors.MissingDependencyError).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from drivers.barrier import Barrier
from drivers.scanner import Scanner
from edge.config import CameraConfig, FaceConfig, ModbusRtuBarrier, ModbusTcpBarrier, ScannerConfig

if TYPE_CHECKING:
    # Type names only: importing them at run time would load OpenCV on gates without a camera.
    from drivers.camera import Camera
    from drivers.face import FaceEncoder, QualityGates
    from drivers.qr import QrDecoder

__all__ = [
    "Barrier",
    "Camera",
    "FaceEncoder",
    "QrDecoder",
    "Scanner",
    "make_barrier",
    "make_camera",
    "make_decoder",
    "make_face_encoder",
    "make_scanner",
]


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

    return OpenCvCamera(source=cfg.source, width=cfg.width, height=cfg.height, lazy=True)


def make_decoder(name: str) -> QrDecoder:
    from drivers.qr import make_decoder as _make

    return _make(name)


def quality_gates(cfg: FaceConfig) -> QualityGates:
    """The configured quality gates, as the face encoder and the matcher apply them."""
    from drivers.face import QualityGates

    return QualityGates(**cfg.quality.model_dump())


def make_face_encoder(cfg: FaceConfig) -> Callable[[], FaceEncoder]:
    """How the face worker process builds its encoder: picklable, so dlib loads only in that process.

    The package is looked for here, so a gate without it says so by name at start, not as a dying worker."""
    import importlib.util

    from drivers.errors import MissingDependencyError
    from drivers.face import DlibFaceEncoder

    if importlib.util.find_spec("face_recognition") is None:
        raise MissingDependencyError("face_recognition", "face admission", "install dlib-bin and face_recognition")

    return functools.partial(
        DlibFaceEncoder, detect_width=cfg.detect_width, upsample=cfg.upsample, gates=quality_gates(cfg)
    )
