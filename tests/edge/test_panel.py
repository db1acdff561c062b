"""The running gate as its technician page sees it (`edge.panel.DaemonPanel`), in process.

Actions against the fake barrier and, where the wire matters, the simulated Modbus relay board;
the scanner's health through a real pty; the reload through a real YAML file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.barrier import FakeBarrier, ModbusBarrier
from drivers.scanner import SerialScanner
from edge.config import parse_config
from edge.daemon import GateDaemon
from edge.panel import DaemonPanel
from edge.reload import MASK, config_view
from edge.store import GateStore, GateStoreReader
from edge.web.port import DecisionView
from harness.gates import ScannerPty
from harness.processes import eventually
from harness.relay_sim import RelayBoardSim
from harness.tickets import NOW, make_ticket, sign
from models import ProductKind
from models.credential import public_key_b64

TECH = "li.wei"
WHY = "checking the turnstile after the morning's jam"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> Any:
        return self.now


def config_data(tmp_path: Path, key: Ed25519PrivateKey, **barrier: Any) -> dict[str, Any]:
    return {
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


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def build(
    tmp_path: Path, key: Ed25519PrivateKey, barrier: Any, data: dict[str, Any] | None = None, **kw: Any
) -> tuple[GateDaemon, Clock]:
    data = data or config_data(tmp_path, key)
    path = write_config(tmp_path / "gate.yaml", data)
    cfg = parse_config(data)
    clock = Clock()
    daemon = GateDaemon(cfg, store=GateStore(cfg.store.path), barrier=barrier, clock=clock, config_path=path, **kw)
    return daemon, clock


async def running(
    daemon: GateDaemon, body: Callable[[DaemonPanel], Awaitable[None]], sim: RelayBoardSim | None = None
) -> None:
    """Run the daemon for `body`, then stop it (and the relay board simulator, if any)."""
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: daemon.panel is not None and daemon.controller.healthy, "the barrier connected", 5)
        assert daemon.panel is not None
        await body(daemon.panel)
    finally:
        daemon.request_stop()
        try:
            await asyncio.wait_for(task, 10)
        finally:
            if sim is not None:
                await sim.stop()


async def relay_gate(
    tmp_path: Path, key: Ed25519PrivateKey, *, passage_timeout_s: float
) -> tuple[RelayBoardSim, GateDaemon]:
    """A gate on the simulated relay board (Modbus TCP on loopback) with a passage sensor and a fire alarm."""
    sim = RelayBoardSim(passage_input=0, fire_alarm_input=1, passage_delay_s=0.05, passage_hold_s=0.1)
    port = await sim.start_tcp()
    barrier = ModbusBarrier(transport="tcp", port=port, open_coil=0, passage_input=0, fire_alarm_input=1)
    daemon, _ = build(
        tmp_path, key, barrier, config_data(tmp_path, key, port=port, passage_timeout_s=passage_timeout_s)
    )
    return sim, daemon


def actions(tmp_path: Path) -> list[tuple[str, str, str, bool, str]]:
    return [
        (a.username, a.action, a.justification, a.ok, a.detail)
        for a in reversed(GateStoreReader(tmp_path / "gate.db").actions())
    ]


def token(key: Ed25519PrivateKey, ticket_id: str = "1001") -> bytes:
    return sign(key, make_ticket(ProductKind.PUNCH, ticket_id=ticket_id)).encode()


def test_a_skier_scanned_during_a_test_open_is_admitted_and_counted_the_test_gives_way(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    async def scenario() -> None:
        sim, daemon = await relay_gate(tmp_path, signing_key, passage_timeout_s=8.0)

        async def body(panel: DaemonPanel) -> None:
            sim.skier_passes = False  # nobody walks through for the test
            test = asyncio.create_task(panel.act("test_open", username=TECH, justification=WHY))
            await eventually(lambda: sim.open_count == 1, "the test opened the barrier", 5)
            sim.skier_passes = True  # then a skier scans and walks through
            handled = await daemon.handle(token(signing_key), "scanner")
            result = await test
            assert (result.ok, result.details) == (True, {"ended": "gave_way", "passed": False})
            assert "as an admission" in result.en  # not "nobody passed": the skier did, counted
            assert (handled.entry.passed, handled.entry.counted) == (True, True)  # the passage is the skier's
            assert sim.open_count == 2  # opened again for the admission, not left to the test's pulse

        await running(daemon, body, sim)

    asyncio.run(scenario())
    assert actions(tmp_path) == [(TECH, "test_open", WHY, True, "gave_way")]


def test_a_test_open_nobody_walks_through_does_not_hide_a_faulty_sensors_streak(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    async def scenario() -> None:
        sim, daemon = await relay_gate(tmp_path, signing_key, passage_timeout_s=0.3)

        async def body(panel: DaemonPanel) -> None:
            sim.skier_passes = False  # the sensor never reports a passage
            for i in range(2):
                await daemon.handle(token(signing_key, f"100{i}"), "scanner")
            assert daemon.controller.sensor_timeouts_in_a_row == 2
            await panel.act("test_open", username=TECH, justification=WHY)  # nobody walks through the test
            assert daemon.controller.sensor_timeouts_in_a_row == 2  # the admissions' streak stands

        await running(daemon, body, sim)

    asyncio.run(scenario())


def test_a_test_open_cut_off_by_the_gate_stopping_still_ends_and_is_journaled(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    async def scenario() -> None:
        sim, daemon = await relay_gate(tmp_path, signing_key, passage_timeout_s=1.0)

        async def body(panel: DaemonPanel) -> None:
            sim.skier_passes = False
            request = asyncio.create_task(panel.act("test_open", username=TECH, justification=WHY))
            await eventually(lambda: sim.open_count == 1, "the test opened the barrier", 5)
            request.cancel()  # the page's request is cut off, as the server stopping does after its grace

        await running(daemon, body, sim)  # stops the daemon right after

    asyncio.run(scenario())
    assert actions(tmp_path) == [(TECH, "test_open", WHY, True, "timeout")]


def test_test_open_pulses_the_relay_board_and_is_journaled_as_an_action_not_a_passage(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    async def scenario() -> None:
        sim, daemon = await relay_gate(tmp_path, signing_key, passage_timeout_s=1.0)

        async def body(panel: DaemonPanel) -> None:
            result = await panel.act("test_open", username=TECH, justification=WHY)
            assert (result.ok, result.code, result.details) == (True, "done", {"ended": "sensor", "passed": True})
            assert (sim.open_count, sim.passage_count) == (1, 1)

            sim.skier_passes = False  # a skier admitted now stands in the turnstile until the timeout
            admission = asyncio.create_task(daemon.handle(token(signing_key), "scanner"))
            await eventually(lambda: daemon.controller.busy, "the admission's passage started", 5)
            refused = await panel.act("test_open", username=TECH, justification=WHY)
            assert (refused.ok, refused.code) == (False, "busy")
            handled = await admission
            assert handled.entry.resolution == "timeout"
            assert sim.open_count == 2  # the refused test did not open the barrier

        await running(daemon, body, sim)

    asyncio.run(scenario())
    assert actions(tmp_path) == [(TECH, "test_open", WHY, True, "sensor"), (TECH, "test_open", WHY, False, "busy")]
    reader = GateStoreReader(tmp_path / "gate.db")
    assert [e.ticket_id for e in reader.entries()] == ["1001"]  # the test-open opened no ticket's entry
    assert reader.outbox_ids() == [reader.entries()[0].event_id]  # and sends the cloud nothing of its own


def test_keep_open_holds_the_barrier_and_gives_free_passage_until_turned_off(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    barrier = FakeBarrier()
    daemon, clock = build(tmp_path, signing_key, barrier)

    async def body(panel: DaemonPanel) -> None:
        on = await panel.act("keep_open", username=TECH, justification=WHY, on=True)
        assert (on.ok, barrier.hold_open, panel.vitals().keep_open) == (True, True, True)
        health = panel.health()
        assert health is not None and health.keep_open  # what the status tells the cloud
        free = await daemon.handle(token(signing_key), "scanner")
        assert (free.entry.code, free.entry.counted, barrier.pulses) == ("emergency", False, 0)

        off = await panel.act("keep_open", username=TECH, justification=WHY, on=False)
        assert (off.ok, barrier.hold_open, panel.vitals().keep_open) == (True, False, False)
        clock.now += timedelta(seconds=5)
        normal = await daemon.handle(token(signing_key), "scanner")
        assert (normal.entry.code, normal.entry.counted, barrier.pulses) == ("ok", True, 1)

    asyncio.run(running(daemon, body))
    assert [(a, ok) for _, a, _, ok, _ in actions(tmp_path)] == [("keep_open_on", True), ("keep_open_off", True)]


def test_resync_on_a_gate_without_sync_is_refused_and_journaled(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    daemon, _ = build(tmp_path, signing_key, FakeBarrier())

    async def body(panel: DaemonPanel) -> None:
        result = await panel.act("resync", username=TECH, justification=WHY)
        assert (result.ok, result.code) == (False, "no_sync")

    asyncio.run(running(daemon, body))
    assert actions(tmp_path) == [(TECH, "resync", WHY, False, "no_sync")]


def test_reload_of_an_invalid_file_keeps_the_running_config(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    daemon, _ = build(tmp_path, signing_key, FakeBarrier())
    before = daemon.config

    async def body(panel: DaemonPanel) -> None:
        data = config_data(tmp_path, signing_key)
        data["gate"]["passback_seconds"] = 5
        data["barrier"]["pulse_ms"] = "long"
        write_config(tmp_path / "gate.yaml", data)
        result = await panel.act("reload_config", username=TECH, justification=WHY)
        assert (result.ok, result.code) == (False, "invalid_config")
        assert "barrier.modbus_tcp.pulse_ms" in (result.details or {})["errors"]
        assert daemon.config is before and daemon.service.config.passback_seconds == 60

    asyncio.run(running(daemon, body))
    [(_, action, _, ok, detail)] = actions(tmp_path)
    assert (action, ok) == ("reload_config", False) and detail.startswith("invalid_config")


def test_reload_applies_a_rule_change_at_once_and_names_what_needs_a_restart(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    daemon, clock = build(tmp_path, signing_key, FakeBarrier())

    async def body(panel: DaemonPanel) -> None:
        assert (await daemon.handle(token(signing_key), "scanner")).entry.code == "ok"
        clock.now += timedelta(seconds=10)
        assert (await daemon.handle(token(signing_key), "scanner")).entry.code == "passback"

        data = config_data(tmp_path, signing_key)
        data["gate"]["passback_seconds"] = 5
        data["barrier"]["host"] = "192.0.2.10"
        write_config(tmp_path / "gate.yaml", data)
        result = await panel.act("reload_config", username=TECH, justification=WHY)
        assert (result.ok, result.code) == (False, "restart_needed")
        assert result.details == {"applied": ["gate.passback_seconds"], "restart_needed": ["barrier.host"]}
        assert (daemon.config.gate.passback_seconds, daemon.config.barrier.host) == (5, "127.0.0.1")

        clock.now += timedelta(seconds=10)
        assert (await daemon.handle(token(signing_key), "scanner")).entry.code == "ok"  # 10 s > the new 5 s

        again = await panel.act("reload_config", username=TECH, justification=WHY)
        assert (again.code, again.details) == ("restart_needed", {"applied": [], "restart_needed": ["barrier.host"]})

    asyncio.run(running(daemon, body))


def test_the_config_view_masks_every_secret_and_describes_the_fields(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    secret_file = tmp_path / "gate.secret"
    secret_file.write_text("hunter2-broker-password\n", encoding="utf-8")
    data = config_data(tmp_path, signing_key)
    argon = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
    data |= {
        "camera": {"source": "rtsp://admin:camera-pass-9@192.0.2.30/stream1"},
        "face": {"key_env": "STARFISH_FACE_KEY_SECRET_NAME"},
        "sync": {
            "site": "nanshan",
            "gate": "g1",
            "broker_host": "127.0.0.1",
            "password_file": str(secret_file),
            "password_env": "GATE_PASSWORD_VARIABLE",
            "snapshot_url": "http://127.0.0.1:8000",
            "key_root": public_key_b64(signing_key.public_key()),
        },
        "web": {
            "bind": "192.0.2.20",
            "tls_cert": "/etc/starfish/web.pem",
            "tls_key": "/etc/starfish/web-private.key",
            "break_glass": {"username": "gate-tech", "password_hash": argon},
            "metrics_token_file": "/etc/starfish/metrics-token-file",
        },
    }
    view = config_view(parse_config(data))
    text = json.dumps(view)
    for secret in (
        argon,
        str(secret_file),
        "GATE_PASSWORD_VARIABLE",
        "STARFISH_FACE_KEY_SECRET_NAME",
        "web-private.key",
        "metrics-token-file",
        "camera-pass-9",
    ):
        assert secret not in text, secret
    cfg = view["config"]
    assert cfg["web"]["break_glass"] == {"username": "gate-tech", "password_hash": MASK}
    assert (cfg["web"]["tls_key"], cfg["web"]["metrics_token_env"]) == (MASK, None)  # unset stays visibly unset
    assert (cfg["web"]["bind"], cfg["web"]["tls_cert"]) == ("192.0.2.20", "/etc/starfish/web.pem")
    assert (cfg["sync"]["password_file"], cfg["face"]["key_env"], cfg["face"]["key_file"]) == (MASK, MASK, None)
    assert cfg["camera"]["source"] == f"rtsp://{MASK}@192.0.2.30/stream1"  # the login in a URL, not the host
    assert view["descriptions"]["web.break_glass.password_hash"].startswith("argon2id hash")
    assert view["descriptions"]["barrier.passage_timeout_s"] == "How long to wait for somebody to pass"


def test_a_page_watching_sees_an_admission_when_decided_and_again_when_its_passage_ended(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    daemon, _ = build(tmp_path, signing_key, FakeBarrier())
    seen: list[DecisionView] = []

    async def body(panel: DaemonPanel) -> None:
        queue = panel.subscribe()
        handled = await daemon.handle(token(signing_key), "scanner")
        seen.extend([queue.get_nowait(), queue.get_nowait()])
        assert queue.empty()
        panel.unsubscribe(queue)
        await daemon.handle(token(signing_key, "1002"), "scanner")
        assert queue.empty()
        recent = await panel.recent(10)
        assert [(d.ticket_id, d.input) for d in recent] == [("1002", None), ("1001", None)]  # newest first
        page = await panel.search(ticket="1001", since=None, until=None, limit=10)
        assert [d.event_id for d in page.decisions] == [str(handled.entry.event_id)]

    asyncio.run(running(daemon, body))
    decided, ended = seen
    assert decided.event_id == ended.event_id
    assert (decided.input, decided.ticket_id, decided.outcome, decided.passed, decided.ended) == (
        "scanner",
        "1001",
        "admit",
        None,
        None,
    )
    assert (ended.passed, ended.ended, ended.reason_en, ended.reason_zh) == (True, "sensor", *_reasons("ok"))


def _reasons(code: str) -> tuple[str, str]:
    from edge.reasons import reason

    return reason(code, "en"), reason(code, "zh")


@pytest.mark.timeout(60)
def test_an_unplugged_scanner_shows_as_an_error_with_its_last_error(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    pty = ScannerPty()
    scanner = SerialScanner(port=pty.path, reopen_delay_s=0.2)
    daemon, _ = build(tmp_path, signing_key, FakeBarrier(), scanner=scanner)

    async def body(panel: DaemonPanel) -> None:
        pty.scan(token(signing_key).decode())
        await eventually(lambda: GateStoreReader(tmp_path / "gate.db").entries(), "the scan was journaled", 10)
        assert panel.vitals().scanner.state == "ok" and panel.health() is not None
        pty.unplug()
        await eventually(lambda: panel.vitals().scanner.state == "error", "the scanner shows an error", 10)
        vitals = panel.vitals()
        assert vitals.scanner.last_error and vitals.scanner.last_error_at is not None
        health = vitals.health()
        assert (health.scanner, health.scanner_error, health.camera) == ("error", vitals.scanner.last_error, "absent")

    try:
        asyncio.run(running(daemon, body))
    finally:
        pty.close()


def test_the_daemon_serves_its_page_and_metrics_and_runs_on_without_them_when_the_port_is_taken(
    tmp_path: Path, signing_key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    import httpx

    from harness.processes import free_port

    monkeypatch.setenv("GATE_METRICS_TOKEN", "s3cret-metrics-token")
    data = config_data(tmp_path, signing_key)
    data["web"] = {"bind": "127.0.0.1", "port": free_port(), "metrics_token_env": "GATE_METRICS_TOKEN"}
    daemon, _ = build(tmp_path, signing_key, FakeBarrier(), data)
    base = f"http://127.0.0.1:{data['web']['port']}"

    async def served(panel: DaemonPanel) -> None:
        await daemon.handle(token(signing_key), "scanner")
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/api/session")).status_code == 401
            scrape = await http.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
        assert scrape.status_code == 200
        assert 'starfish_gate_decisions_total{credential="signed",outcome="admit",reason="ok"} 1.0' in scrape.text

    asyncio.run(running(daemon, served))

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        data["web"]["port"] = taken.getsockname()[1]
        data["store"]["path"] = str(tmp_path / "second.db")
        daemon, _ = build(tmp_path, signing_key, FakeBarrier(), data)

        async def unserved(panel: DaemonPanel) -> None:
            assert (await daemon.handle(token(signing_key), "scanner")).entry.code == "ok"

        asyncio.run(running(daemon, unserved))
    assert any("technician page is OFF" in r.getMessage() for r in caplog.records)
