"""The real daemon in its own process: serial scanner on a pty, relay board over Modbus TCP.

Kill -9 between the journal write and the passage sensor, restart, and the counts are exact.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.store import GateStoreReader
from harness.relay_sim import RelayBoardSim
from harness.tickets import make_ticket, sign
from models import ProductKind
from models.credential import public_key_b64

REPO = Path(__file__).resolve().parents[2]


def live_ticket(kind: ProductKind = ProductKind.DAY, **kw: Any) -> Any:
    """A ticket valid around the real clock: these tests run the daemon on wall time."""
    now = datetime.now(UTC)
    return make_ticket(kind, valid_from=now - timedelta(hours=1), valid_until=now + timedelta(days=1), **kw)


class SimThread:
    """A relay board simulator on its own event loop, so the test can stay synchronous."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim = RelayBoardSim(passage_delay_s=0.05, passage_hold_s=0.3)
        self.port = asyncio.run_coroutine_threadsafe(self.sim.start_tcp(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def relay() -> Iterator[SimThread]:
    s = SimThread()
    yield s
    s.stop()


@pytest.fixture
def scanner_pty(tmp_path: Path) -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    link = tmp_path / "scanner"
    link.symlink_to(os.ttyname(slave))
    yield master, str(link)
    os.close(master)
    os.close(slave)


def write_config(tmp_path: Path, key: Ed25519PrivateKey, port: int, scanner: str) -> Path:
    cfg: dict[str, Any] = {
        "gate": {"gate_id": "g1", "site_id": "nanshan", "passback_seconds": 0, "rescan_seconds": 0},
        "store": {"path": str(tmp_path / "gate.db")},
        "barrier": {
            "type": "modbus_tcp",
            "host": "127.0.0.1",
            "port": port,
            "passage_input": 0,
            "fire_alarm_input": 1,
            "passage_timeout_s": 30,
        },
        "scanner": {"port": scanner},
        "trusted_keys": {1: public_key_b64(key.public_key())},
        "input_debounce_s": 0,
        "log_level": "INFO",
    }
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def start_gate(config: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "gate", "run", "--config", str(config)],
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def wait_for(what: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what.__doc__ or what}")


def test_kill_between_journal_and_sensor_then_restart_counts_exactly(
    tmp_path: Path, signing_key: Ed25519PrivateKey, relay: SimThread, scanner_pty: tuple[int, str]
) -> None:
    master, port_path = scanner_pty
    db = tmp_path / "gate.db"
    config = write_config(tmp_path, signing_key, relay.port, port_path)
    token = sign(signing_key, live_ticket(ProductKind.PUNCH, entries=5)).encode() + b"\r\n"
    log = tmp_path / "gate.log"

    gate = start_gate(config, log)
    try:
        wait_for(lambda: "running" in log.read_text())
        time.sleep(0.5)  # the scanner opens its port lazily on the first read
        os.write(master, token)
        wait_for(lambda: sum(bool(e.counted and e.passed) for e in GateStoreReader(db).entries()) == 1)

        relay.sim.skier_passes = False  # the next skier stops in the turnstile...
        os.write(master, token)
        wait_for(lambda: len(GateStoreReader(db).pending()) == 1)
        gate.send_signal(signal.SIGKILL)  # ...and the gate dies before the sensor fires
        gate.wait(10)
    finally:
        if gate.poll() is None:
            gate.kill()

    relay.sim.skier_passes = True
    gate = start_gate(config, log)
    try:
        wait_for(lambda: len(GateStoreReader(db).pending()) == 0)
        wait_for(lambda: log.read_text().count("running") == 2)
        time.sleep(0.5)
        os.write(master, token)
        wait_for(lambda: sum(e.counted for e in GateStoreReader(db).entries()) == 2)
        gate.send_signal(signal.SIGTERM)
        assert gate.wait(10) == 0
    finally:
        if gate.poll() is None:
            gate.kill()

    journal = [(e.code, e.passed, e.counted, e.resolution) for e in GateStoreReader(db).entries()]
    assert journal == [
        ("ok", 1, 1, "sensor"),
        ("ok", 0, 0, "unconfirmed_after_restart"),
        ("ok", 1, 1, "sensor"),
    ]
    outbox = GateStoreReader(db).outbox_ids()
    assert (len(outbox), len(set(outbox))) == (3, 3)
    assert "resolved 1 admission(s) left unconfirmed by a crash" in log.read_text()
    assert "stopped" in log.read_text()


def test_gate_with_dead_relay_board_keeps_running_and_denies_with_barrier_fault(
    tmp_path: Path, signing_key: Ed25519PrivateKey, scanner_pty: tuple[int, str]
) -> None:
    master, port_path = scanner_pty
    db = tmp_path / "gate.db"
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    config = write_config(tmp_path, signing_key, dead_port, port_path)
    log = tmp_path / "gate.log"
    gate = start_gate(config, log)
    try:
        wait_for(lambda: "running" in log.read_text())
        time.sleep(0.5)
        os.write(master, sign(signing_key, live_ticket()).encode() + b"\r\n")
        wait_for(lambda: [(e.outcome, e.code) for e in GateStoreReader(db).entries()] == [("deny", "barrier_fault")])
        assert gate.poll() is None
        assert "barrier fault" in log.read_text()
        gate.send_signal(signal.SIGTERM)
        assert gate.wait(10) == 0
    finally:
        if gate.poll() is None:
            gate.kill()


def test_corrupt_config_names_the_problem_and_exits(tmp_path: Path) -> None:
    bad = tmp_path / "gate.yaml"
    bad.write_text("gate:\n  gate_id: g1\n  site_id: s\n  direction: up\nbarrier:\n  type: modbus_tcp\n  host: x\n")
    out = subprocess.run(
        [sys.executable, "-m", "edge.cli", "gate", "run", "--config", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "gate.direction" in out.stderr
