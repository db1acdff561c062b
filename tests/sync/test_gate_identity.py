"""One name for a gate: a gate configured as one gate but logged in (or rostered) as another says so."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from edge.store import GateStore
from edge.sync_port import StorePort
from harness.keys import KEY_ROOT
from harness.mosquitto import CLOUD_USER, AnonymousBroker, MosquittoFactory, make_site, password_of
from harness.mqtt import MqttClientFactory
from harness.processes import eventually
from models.sync import GateRoster, GateStatus
from models.sync_config import SyncConfig
from sync import topics
from sync.gate import GateSync
from tests.sync.gate_sync_kit import (
    SITE,
    Peer,
    SnapshotServer,
    gate_sync,
    journal_passage,
    peer,
    running,
)


@pytest.mark.parametrize(
    ("login_gate", "wrong"),
    [
        pytest.param("g1", False, id="its-own-login"),
        pytest.param("g2", True, id="another-gates-login"),
    ],
)
def test_a_gate_whose_login_may_not_publish_as_its_configured_id_says_so(
    mosquitto_factory: MosquittoFactory,
    mqtt_client: MqttClientFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    login_gate: str,
    wrong: bool,
) -> None:
    broker = mosquitto_factory(make_site(SITE))  # its ACL lets login nanshan-g2 publish only as gate g2
    username = f"{SITE}-{login_gate}"
    config = SyncConfig(
        site=SITE,
        gate="g1",
        broker_host=broker.connect_host,
        broker_port=broker.port or 0,
        username=username,
        snapshot_url="http://127.0.0.1:9",  # nothing there: the gate keeps trying, harmlessly
        key_root=KEY_ROOT,
        reconnect_max_s=1,
    )
    cloud = mqtt_client(broker, CLOUD_USER, password_of(CLOUD_USER))
    cloud.subscribe(topics.events(SITE, "g1"))
    store = GateStore(tmp_path / "gate.db")
    journal_passage(store, "2001")

    async def scenario() -> str | None:
        sync = GateSync(config, port=StorePort(store, gate_id="g1"), password=password_of(username), tick_s=0.1)
        async with running(sync, settled=False):
            await eventually(lambda: sync.connected, "the gate connected")
            if wrong:
                await eventually(lambda: sync.problem is not None, "the gate noticed its login is another gate's")
            else:
                await asyncio.to_thread(cloud.expect, topics.events(SITE, "g1"))  # its event went through
            return sync.problem

    caplog.set_level(logging.ERROR, logger="starfish.sync")
    problem = asyncio.run(scenario())
    store.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    if not wrong:
        assert problem is None and errors == []
        return
    assert problem is not None
    for name in ("'g1'", f"'{SITE}'", f"'{username}'", "Not authorized"):
        assert name in problem
    assert [m for m in errors if "'g1'" in m and f"'{username}'" in m], errors


def last_status(watcher: Peer, topic: str) -> GateStatus:
    seen = watcher.on(topic)
    if not seen:
        return GateStatus(site=SITE, gate="g1", state="offline")
    return GateStatus.model_validate_json(seen[-1].payload)


def test_a_gate_the_clouds_roster_does_not_name_says_so_and_stops_once_it_does(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = GateStore(tmp_path / "gate.db")

    async def scenario() -> None:
        status = topics.status(SITE, "g1")
        with peer(broker, status) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                assert sync.problem is None, "no roster yet: nothing known to be wrong"
                cloud.feed(1, GateRoster(gates=["g2", "g3"]))
                await eventually(lambda: sync.problem is not None, "the roster without g1 noticed")
                assert "'g1'" in (sync.problem or "") and "g2, g3" in (sync.problem or "")
                await eventually(lambda: last_status(cloud, status).problem == sync.problem, "its status says so")
                cloud.feed(2, GateRoster(gates=["g1", "g2", "g3"]))
                await eventually(lambda: sync.problem is None, "named at last")
                await eventually(lambda: last_status(cloud, status).problem is None, "its status clears")

    caplog.set_level(logging.ERROR, logger="starfish.sync")
    asyncio.run(scenario())
    store.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "roster" in errors[0] and f"'{SITE}'" in errors[0]
