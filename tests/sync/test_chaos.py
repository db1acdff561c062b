"""Chaos, bounded: kill -9 a gate mid-burst, restart it; every event reaches the cloud exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.deps import Role
from cloud.migrate import upgrade
from cloud.settings import Settings
from cloud.sync.models import GatePassage
from edge.store import GateStoreReader
from harness.api import Api
from harness.cloud import live_server
from harness.gates import GateProcess
from harness.keys import KEY_ROOT, KEYSET_ROOT_B64
from harness.mosquitto import MosquittoFactory
from harness.processes import wait_until
from models.api import API_PREFIX
from sync.mosquitto import GateAccount, SiteRegistry

API = API_PREFIX


@pytest.fixture
def world(tmp_path: Path, mosquitto_factory: MosquittoFactory) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    upgrade(url)
    base_settings: dict[str, Any] = {
        "environment": "test",
        "database_url": url,
        "jwt_secret": "k" * 40,
        "signing_key_b64": "D" * 43 + "=",
        "keyset_root_key_b64": KEYSET_ROOT_B64,
    }
    bootstrap = create_app(Settings(**base_settings), expiry_every_s=0)
    with TestClient(bootstrap) as c:
        api = Api(c, bootstrap)
        site = api.as_(Role.ADMIN).post(f"{API}/sites", json={"code": "nanshan", "name": "南山"}).json()
        gate = api.as_(Role.ADMIN).post(f"{API}/sites/{site['id']}/gates", json={"code": "g1", "name": "北门"}).json()
    broker = mosquitto_factory(
        SiteRegistry("nanshan", [GateAccount("g1", gate["username"], gate["secret"])], "cloud", "cloud-pw-123456")
    )
    app = create_app(
        Settings(
            **base_settings,
            mqtt_host="127.0.0.1",
            mqtt_port=broker.port,
            mqtt_username="cloud",
            mqtt_password="cloud-pw-123456",
            sync_poll_seconds=0.2,
        ),
        expiry_every_s=0,
    )
    (tmp_path / "password").write_text(gate["secret"])
    config: dict[str, Any] = {
        "gate": {"gate_id": "g1", "site_id": "nanshan", "rescan_seconds": 0},
        "barrier": {"type": "modbus_tcp", "host": "127.0.0.1", "port": 1, "timeout_s": 0.2},
        "input_debounce_s": 0,
        "max_scan_age_s": 60,
        # The burst is the scanner at machine speed: every read waits for its decision, none is shed.
        "intake": {"queue_per_input": 1000, "rate_per_s": 10_000, "burst": 1000},
    }
    with live_server(app) as base:
        config["sync"] = {
            "site": "nanshan",
            "gate": "g1",
            "broker_host": "127.0.0.1",
            "broker_port": broker.port,
            "username": gate["username"],
            "password_file": str(tmp_path / "password"),
            "snapshot_url": base,
            "key_root": KEY_ROOT,
            "ack_timeout_s": 2,
        }
        gate_process = GateProcess(tmp_path, config)  # its store, scanner pty and log in tmp_path
        try:
            yield {"app": app, "gate": gate_process}
        finally:
            gate_process.kill()
            gate_process.scanner.close()


def test_kill_9_mid_burst_then_restart_loses_nothing_and_doubles_nothing(world: dict[str, Any]) -> None:
    gate: GateProcess = world["gate"]
    db = gate.db
    gate.launch()
    try:
        gate.wait_running(30)
        time.sleep(0.5)
        for i in range(300):
            gate.scanner.write(b"UNKNOWN%05d\r" % i)
            if i == 150:
                wait_until(lambda: GateStoreReader(db).entries() != [], "first decisions", 15)
        time.sleep(0.05)
        gate.kill()  # SIGKILL mid-burst: some decided, some queued, some in flight
    finally:
        gate.kill()
    decided_before = len(GateStoreReader(db).entries())
    assert decided_before > 0

    gate.launch()  # the same config, store and scanner again
    try:
        # Its signal handlers are in place once it runs: a SIGTERM before that would just kill it.
        gate.wait_running(30)  # its second "running"
        wait_until(lambda: GateStoreReader(db).outbox_depth() == 0, "outbox drained after restart", 30)
        gate.stop(20)  # SIGTERM
        assert gate.returncode == 0
    finally:
        gate.kill()

    journal = {str(e.event_id) for e in GateStoreReader(db).entries(own=True)}
    with world["app"].state.sessionmaker() as s:
        stored = [str(p.event_id) for p in s.query(GatePassage).all()]
    assert len(stored) == len(set(stored))  # nothing doubled
    assert set(stored) == journal  # nothing lost: every journaled decision reached the cloud
