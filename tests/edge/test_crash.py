"""The real daemon in its own process: serial scanner on a pty, relay board over Modbus TCP.

Kill -9 between the journal write and the passage sensor, restart, and the counts are exact.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.store import GateStoreReader
from harness.gates import GateProcess, RelayBoards, ScannerPty
from harness.processes import free_port, wait_until
from harness.relay_sim import RelayBoardSim
from harness.tickets import make_ticket, sign
from models import ProductKind
from models.credential import public_key_b64

REPO = Path(__file__).resolve().parents[2]


def live_ticket(kind: ProductKind = ProductKind.DAY, **kw: Any) -> Any:
    """A ticket valid around the real clock: these tests run the daemon on wall time."""
    now = datetime.now(UTC)
    return make_ticket(kind, valid_from=now - timedelta(hours=1), valid_until=now + timedelta(days=1), **kw)


@pytest.fixture
def relay() -> Iterator[RelayBoardSim]:
    """A relay board simulator on its own event loop in a thread, so the test can stay synchronous."""
    boards = RelayBoards()
    try:
        yield boards.add(passage_delay_s=0.05, passage_hold_s=0.3)
    finally:
        boards.close()


@pytest.fixture
def gate_on(tmp_path: Path, signing_key: Ed25519PrivateKey) -> Iterator[Callable[[int], GateProcess]]:
    """The daemon for a relay board on `port`, not yet launched: its scanner a pty reached through a
    symlink (as /dev/serial/by-id), its config, store and log in tmp_path."""
    made: list[GateProcess] = []

    def gate_on(port: int) -> GateProcess:
        config: dict[str, Any] = {
            "gate": {"gate_id": "g1", "site_id": "nanshan", "passback_seconds": 0, "rescan_seconds": 0},
            "barrier": {
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": port,
                "passage_input": 0,
                "fire_alarm_input": 1,
                "passage_timeout_s": 30,
            },
            "trusted_keys": {1: public_key_b64(signing_key.public_key())},
            "input_debounce_s": 0,
            "log_level": "INFO",
        }
        made.append(GateProcess(tmp_path, config, scanner=ScannerPty(link=tmp_path / "scanner")))
        return made[-1]

    yield gate_on
    for gate in made:
        gate.kill()
        gate.scanner.close()


def test_kill_between_journal_and_sensor_then_restart_counts_exactly(
    signing_key: Ed25519PrivateKey, relay: RelayBoardSim, gate_on: Callable[[int], GateProcess]
) -> None:
    assert relay.port is not None  # serving
    gate = gate_on(relay.port)
    db, log = gate.db, gate.log
    token = sign(signing_key, live_ticket(ProductKind.PUNCH, entries=5)).encode() + b"\r\n"

    gate.launch()
    try:
        gate.wait_running(15)
        time.sleep(0.5)  # the scanner opens its port lazily on the first read
        gate.scanner.write(token)
        wait_until(
            lambda: sum(bool(e.counted and e.passed) for e in GateStoreReader(db).entries()) == 1, "1 counted", 15
        )

        relay.skier_passes = False  # the next skier stops in the turnstile...
        gate.scanner.write(token)
        wait_until(lambda: len(GateStoreReader(db).pending()) == 1, "1 admission pending", 15)
        gate.kill()  # SIGKILL: ...and the gate dies before the sensor fires
    finally:
        gate.kill()

    relay.skier_passes = True
    gate.launch()  # the same config, store and scanner again
    try:
        wait_until(lambda: len(GateStoreReader(db).pending()) == 0, "no admission pending", 15)
        gate.wait_running(15)  # its second "running"
        time.sleep(0.5)
        gate.scanner.write(token)
        wait_until(lambda: sum(e.counted for e in GateStoreReader(db).entries()) == 2, "2 counted", 15)
        gate.stop(10)  # SIGTERM
        assert gate.returncode == 0
    finally:
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
    signing_key: Ed25519PrivateKey, gate_on: Callable[[int], GateProcess]
) -> None:
    gate = gate_on(free_port())  # nothing listens there
    db, log = gate.db, gate.log
    gate.launch()
    try:
        gate.wait_running(15)
        time.sleep(0.5)
        gate.scanner.write(sign(signing_key, live_ticket()).encode() + b"\r\n")
        wait_until(
            lambda: [(e.outcome, e.code) for e in GateStoreReader(db).entries()] == [("deny", "barrier_fault")],
            "denied with barrier_fault",
            15,
        )
        assert gate.running
        assert "barrier fault" in log.read_text()
        gate.stop(10)  # SIGTERM
        assert gate.returncode == 0
    finally:
        gate.kill()


def test_corrupt_config_names_the_problem_and_exits(tmp_path: Path) -> None:
    bad = tmp_path / "gate.yaml"
    bad.write_text("gate:\n  gate_id: g1\n  site_id: s\n  direction: up\nbarrier:\n  type: modbus_tcp\n  host: x\n")
    # Not a GateProcess: this config must be the bad text as written, and the run its exit status and stderr.
    out = subprocess.run(
        [sys.executable, "-m", "edge.cli", "gate", "run", "--config", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "gate.direction" in out.stderr
