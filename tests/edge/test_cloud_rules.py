"""The cloud's rules for a gate, in its store and in force (`GateService.config`): they win over the file's
rules as one set, the gate keeps its own ids, direction and time zone, keep-open is on when either side says
so, a withdrawal brings the file's rules back, and rules naming another gate are refused. A snapshot's rules
(or their absence) are committed with its tickets and feed position, never apart; a YAML reload leaves the
barrier as the rules in force say."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.barrier import FakeBarrier
from edge import store as edge_store
from edge.config import parse_config
from edge.daemon import GateDaemon
from edge.gate import GateService
from edge.reload import reload_config
from edge.store import GateStore, SnapshotStaging, apply_change
from edge.store.feed import cloud_rules
from edge.sync_port import StorePort
from harness.processes import eventually
from harness.tickets import NOW, make_ticket
from models import Direction, GateConfig, ProductKind
from models.credential import public_key_b64
from models.sync import GateConfigChange, SnapshotHeader, TicketUpsert

CLOUD = GateConfig(
    gate_id="g1",
    site_id="nanshan",
    direction=Direction.OUT,  # the cloud's registry may say otherwise than the installation
    timezone="Asia/Urumqi",
    allowed_kinds=frozenset({ProductKind.DAY}),
    allowed_products=frozenset({"7"}),
    rescan_seconds=1,
    passback_seconds=60,
    daily_limit=2,
)


@pytest.fixture
def service(store: GateStore, gate: GateConfig) -> GateService:
    return GateService(store=store, config=gate)


def feed(store: GateStore, seq: int, change: GateConfigChange, service: GateService) -> None:
    apply_change(store, change, seq, gate="g1", fresh=NOW + timedelta(seconds=seq))
    service.reload_rules()  # what the sync port does after this gate's config changed


def test_the_clouds_rules_win_and_the_gate_keeps_its_identity_then_a_withdrawal_restores_the_file(
    store: GateStore, gate: GateConfig, service: GateService
) -> None:
    told: list[GateConfig] = []
    service.on_rules = told.append
    feed(store, 1, GateConfigChange(gate_id="g1", config=CLOUD), service)
    assert service.config == gate.model_copy(
        update={
            "allowed_kinds": CLOUD.allowed_kinds,
            "allowed_products": CLOUD.allowed_products,
            "rescan_seconds": 1,
            "passback_seconds": 60,
            "daily_limit": 2,
        }
    )
    assert (service.rules.source, service.rules.since) == ("cloud", NOW + timedelta(seconds=1))
    assert told == [service.config]

    feed(store, 2, GateConfigChange(gate_id="g1", config=CLOUD), service)
    assert service.rules.since == NOW + timedelta(seconds=1), "the same rules again: in force since the first"
    assert len(told) == 1, "nothing changed"

    feed(store, 3, GateConfigChange(gate_id="g2", config=CLOUD.model_copy(update={"gate_id": "g2"})), service)
    assert service.rules.source == "cloud" and service.config.daily_limit == 2, "another gate's rules"

    feed(store, 4, GateConfigChange(gate_id="g1", config=None), service)
    assert (service.config, service.rules.source, service.rules.since) == (gate, "local", None)
    assert told[-1] == gate


def test_a_file_reload_under_cloud_rules_changes_only_what_the_cloud_does_not_set(
    store: GateStore, gate: GateConfig, service: GateService
) -> None:
    feed(store, 1, GateConfigChange(gate_id="g1", config=CLOUD), service)
    service.config = gate.model_copy(update={"passback_seconds": 5, "direction": Direction.OUT})
    assert (service.config.passback_seconds, service.config.direction) == (60, Direction.OUT)
    assert GateService(store=store, config=gate).config.daily_limit == 2, "a restarted gate runs by them at once"


@pytest.mark.parametrize(
    ("cloud_open", "local_open", "in_force"),
    [
        pytest.param(True, False, True, id="the-cloud-holds-it-open"),
        pytest.param(False, True, True, id="the-file-or-technician-holds-it-open"),
        pytest.param(False, False, False, id="nobody"),
    ],
)
def test_keep_open_is_on_when_either_side_says_so(
    store: GateStore, gate: GateConfig, service: GateService, cloud_open: bool, local_open: bool, in_force: bool
) -> None:
    service.config = gate.model_copy(update={"emergency_open": local_open})
    feed(
        store,
        1,
        GateConfigChange(gate_id="g1", config=CLOUD.model_copy(update={"emergency_open": cloud_open})),
        service,
    )
    assert service.config.emergency_open is in_force
    assert service.cloud_keep_open is cloud_open


def test_stored_rules_naming_another_site_or_gate_are_refused_and_the_file_rules_stay(
    store: GateStore, gate: GateConfig, service: GateService
) -> None:
    feed(store, 1, GateConfigChange(gate_id="g1", config=CLOUD.model_copy(update={"site_id": "beidahu"})), service)
    assert service.config == gate
    assert service.rules.source == "local"
    assert service.rules.problem is not None and "beidahu/g1" in service.rules.problem


KEEP_OPEN = CLOUD.model_copy(update={"emergency_open": True})


def stage(store: GateStore, *ticket_ids: str) -> str:
    """Stage a snapshot of these day tickets in the store's file; its checksum."""
    staging = SnapshotStaging(Path(store.path))
    try:
        rows = [make_ticket(ProductKind.DAY, ticket_id=t, code=f"DAY-{t}") for t in ticket_ids]
        staging.add_tickets([(t.ticket_id, t.code, t.status.value, t.model_dump_json()) for t in rows])
        return staging.finish()
    finally:
        staging.close()


def header(seq: int, checksum: str, rules: GateConfig | None) -> SnapshotHeader:
    return SnapshotHeader(site="nanshan", seq=seq, tickets=1, checksum=checksum, keys={}, gate_config=rules)


def test_a_snapshot_brings_its_rules_and_one_without_rules_withdraws_a_keep_open(
    store: GateStore, gate: GateConfig, service: GateService
) -> None:
    told: list[GateConfig] = []
    service.on_rules = told.append
    port = StorePort(store, gate_id="g1", service=service)
    feed(store, 1, GateConfigChange(gate_id="g1", config=KEEP_OPEN), service)
    assert service.config.emergency_open and told[-1].emergency_open

    # The withdrawal was feed change 2, which this gate missed; the snapshot at 5 is after it: no rules.
    port.install_snapshot(header(5, stage(store, "a"), None), fresh=NOW + timedelta(seconds=5))
    assert (edge_store.feed_seq(store), cloud_rules(store)) == (5, None)
    assert (service.config, service.rules.source) == (gate, "local")
    assert told[-1].emergency_open is False, "the daemon is told to release the barrier"

    at = NOW + timedelta(seconds=9)
    port.install_snapshot(header(9, stage(store, "b"), CLOUD), fresh=at)
    assert (edge_store.feed_seq(store), cloud_rules(store)) == (9, (CLOUD, at))
    assert (service.rules.source, service.config.daily_limit) == ("cloud", 2)
    assert store.ticket("b") is not None and store.ticket("a") is None


def test_a_crash_after_the_swap_rolls_back_the_tickets_the_feed_position_and_the_rules_together(
    store: GateStore, gate: GateConfig, service: GateService, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_change(store, TicketUpsert(ticket=make_ticket(ticket_id="old", code="DAY-old")), 1, gate="g1", fresh=NOW)
    feed(store, 2, GateConfigChange(gate_id="g1", config=KEEP_OPEN), service)
    checksum = stage(store, "new")
    from edge.store import snapshot

    put = snapshot.put_cloud_rules

    def put_then_power_cut(*args: Any) -> None:
        put(*args)  # the rules are cleared in the transaction...
        raise OSError("power cut")  # ...which never commits

    monkeypatch.setattr(snapshot, "put_cloud_rules", put_then_power_cut)
    with pytest.raises(OSError, match="power cut"):
        edge_store.install_snapshot(store, seq=7, keys={}, checksum=checksum, fresh=NOW, gate_config=None)
    restarted = GateStore(Path(store.path))  # what the gate finds when it comes back
    try:
        assert edge_store.feed_seq(restarted) == 2, "still at the old position: the feed resends the withdrawal"
        assert cloud_rules(restarted) == (KEEP_OPEN, NOW + timedelta(seconds=2))
        assert restarted.ticket("old") is not None and restarted.ticket("new") is None
    finally:
        restarted.close()

    monkeypatch.undo()  # the next attempt installs the staging the crash left whole
    edge_store.install_snapshot(store, seq=7, keys={}, checksum=checksum, fresh=NOW, gate_config=None)
    assert (edge_store.feed_seq(store), cloud_rules(store), store.ticket("old")) == (7, None, None)


def test_a_reload_dropping_the_files_keep_open_leaves_the_barrier_the_cloud_holds_open(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    data: dict[str, Any] = {
        "gate": {"gate_id": "g1", "site_id": "nanshan", "emergency_open": True},
        "store": {"path": str(tmp_path / "gate.db")},
        "barrier": {"type": "modbus_tcp", "host": "127.0.0.1", "passage_timeout_s": 0.3},  # a FakeBarrier is passed
        "trusted_keys": {1: public_key_b64(signing_key.public_key())},
    }
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    store = GateStore(tmp_path / "gate.db")
    apply_change(store, GateConfigChange(gate_id="g1", config=KEEP_OPEN), 1, gate="g1", fresh=NOW)
    barrier = FakeBarrier()
    daemon = GateDaemon(parse_config(data), store=store, barrier=barrier, clock=lambda: NOW, config_path=path)

    async def body() -> None:
        await eventually(lambda: barrier.hold_open, "the barrier held open", 5.0)
        data["gate"]["emergency_open"] = False
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        result = await reload_config(daemon)
        assert (result.ok, result.details) == (True, {"applied": ["gate.emergency_open"], "restart_needed": []})
        assert daemon.service.config.emergency_open, "the cloud still holds it open"
        assert (daemon.controller.keep_open, barrier.hold_open) == (True, True)

        apply_change(store, GateConfigChange(gate_id="g1", config=None), 2, gate="g1", fresh=NOW)
        daemon.service.reload_rules()  # the cloud withdrew it: now nobody holds it open
        await eventually(lambda: not barrier.hold_open, "the barrier released", 5.0)

    async def main() -> None:
        task = asyncio.create_task(daemon.run())
        try:
            await body()
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 10)

    try:
        asyncio.run(main())
    finally:
        store.close()
