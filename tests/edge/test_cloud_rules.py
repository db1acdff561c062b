"""The cloud's rules for a gate, in its store and in force (`GateService.config`): they win over the file's
rules as one set, the gate keeps its own ids, direction and time zone, keep-open is on when either side says
so, a withdrawal brings the file's rules back, and rules naming another gate are refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from edge.gate import GateService
from edge.store import GateStore, apply_change
from edge.store.feed import save_cloud_rules
from harness.tickets import NOW
from models import Direction, GateConfig, ProductKind
from models.sync import GateConfigChange

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
    save_cloud_rules(store, CLOUD.model_copy(update={"site_id": "beidahu"}), NOW)
    service.reload_rules()
    assert service.config == gate
    assert service.rules.source == "local"
    assert service.rules.problem is not None and "beidahu/g1" in service.rules.problem
