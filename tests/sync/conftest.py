"""Broker fixtures for sync tests: real Mosquitto brokers on free loopback ports, paho-mqtt clients.

`mosquitto_factory(sites, role=...)` starts a broker from a registry (`harness.mosquitto.Brokers`,
stopped at teardown); `mqtt_client(broker, username, password, ...)` connects as
`harness.mqtt.connect_client` does. Registries and certificates: `harness.mosquitto.make_site`,
`harness.pki.make_pki`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.mosquitto import AnonymousBroker, Brokers, MosquittoFactory, MosquittoProcess
from harness.mqtt import BrokerClient, MqttClientFactory, connect_client

# The shared gate-sync helpers assert too: their failures read like the tests' own.
pytest.register_assert_rewrite("tests.sync.gate_sync_kit")

if TYPE_CHECKING:
    from tests.sync.gate_sync_kit import SnapshotServer


@pytest.fixture
def mqtt_client() -> Iterator[MqttClientFactory]:
    """Connect test clients (see `connect_client`); all are disconnected at teardown."""
    clients: list[BrokerClient] = []

    def connect(broker: MosquittoProcess, username: str | None, password: str | None = None, **kw: Any) -> BrokerClient:
        c = connect_client(broker, username, password, **kw)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        with contextlib.suppress(Exception):  # a severed client or a stopped broker: nothing to close
            c.close()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[MosquittoFactory]:
    """Start Mosquitto brokers from a registry, each in tmp_path/brokers/<name>; stopped at teardown."""
    brokers = Brokers(tmp_path / "brokers")
    yield brokers.start
    brokers.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[AnonymousBroker]:
    """A plain anonymous Mosquitto (`harness.mosquitto.AnonymousBroker`), for the gate-sync tests."""
    with AnonymousBroker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def snapshots() -> Iterator[SnapshotServer]:
    """The fake cloud's snapshot endpoint (`tests.sync.gate_sync_kit.SnapshotServer`)."""
    from tests.sync.gate_sync_kit import SnapshotServer

    s = SnapshotServer()
    yield s
    s.close()
