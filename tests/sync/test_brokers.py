"""Generated Mosquitto brokers, for real: who may log in, who may read and write what, TLS, the bridge."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import ssl
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from edge.store import GateStore
from edge.sync_port import StorePort
from harness.keys import KEY_ROOT
from harness.mosquitto import (
    CLOUD_USER,
    MosquittoFactory,
    MosquittoNotFound,
    MosquittoProcess,
    find_mosquitto,
    make_site,
    password_of,
)
from harness.mqtt import BrokerClient, ConnectRefused, MqttClientFactory
from harness.pki import make_pki
from harness.processes import free_port
from models.sync import GateStatus
from models.sync_config import SyncConfig
from sync import topics
from sync.gate import GateSync
from sync.mosquitto import BridgeTo, SiteRegistry, broker_accounts, render_acl, write_broker_config
from sync.mosquitto_passwd import hash_password, verify_password

SITE = "nanshan"
OTHER = "wanlong"


def gate_login(site: str, gate: str) -> tuple[str, str]:
    return f"{site}-{gate}", password_of(f"{site}-{gate}")


def cloud_login() -> tuple[str, str]:
    return CLOUD_USER, password_of(CLOUD_USER)


def status_json(site: str, gate: str, state: Literal["online", "offline"]) -> str:
    return GateStatus(site=site, gate=gate, state=state).model_dump_json()


# --- files ----------------------------------------------------------------------------------


def test_python_hash_is_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed (apt-get install mosquitto)")
    pwfile = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(pwfile), "gate-7", "sesame"], check=True, capture_output=True)
    user, hashed = pwfile.read_text().strip().split(":", 1)

    assert user == "gate-7"
    assert verify_password("sesame", hashed)
    assert not verify_password("sesame!", hashed)
    _, _, iterations, salt, _ = hashed.split("$")
    assert hash_password("sesame", iterations=int(iterations), salt=base64.b64decode(salt)) == hashed


def test_gate_acl_reads_its_site_and_writes_only_its_own_topics() -> None:
    gate1 = next(a for a in broker_accounts(make_site(SITE), "site") if a.username == f"{SITE}-g1")

    assert render_acl([gate1]).splitlines()[2:] == [
        "user nanshan-g1",
        "topic read sf/nanshan/feed",
        "topic read sf/nanshan/head",
        "topic read sf/nanshan/gate/+/events",
        "topic read sf/nanshan/gate/+/status",
        "topic read sf/nanshan/gate/g1/acks",
        "topic write sf/nanshan/gate/g1/events",
        "topic write sf/nanshan/gate/g1/status",
    ]


def test_bridged_site_broker_has_no_cloud_login_and_cloud_broker_has_no_gate_logins(tmp_path: Path) -> None:
    bridge = BridgeTo("cloud.example", 8883, "bridge-nanshan", "pw", cafile=tmp_path / "ca.pem")
    site = make_site(SITE, bridge=bridge)

    assert {a.username for a in broker_accounts(site, "site")} == {"nanshan-g1", "nanshan-g2"}
    assert {a.username for a in broker_accounts([site, make_site(OTHER)], "cloud")} == {
        CLOUD_USER,
        "bridge-nanshan",
        "wanlong-g1",
        "wanlong-g2",
    }
    conf = write_broker_config(site, tmp_path / "site").conf.read_text()
    assert "connection cloud-nanshan\naddress cloud.example:8883\n" in conf
    assert f"bridge_cafile {tmp_path / 'ca.pem'}\nbridge_tls_version tlsv1.2\n" in conf
    assert "topic sf/nanshan/feed in 1\n" in conf and "topic sf/nanshan/gate/+/events out 1\n" in conf


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda s: replace(s, cloud_username="has space"), id="username-with-space"),
        pytest.param(lambda s: replace(s, gates=[*s.gates, s.gates[0]]), id="gate-twice"),
        pytest.param(lambda s: replace(s, site="Nan Shan"), id="bad-site-code"),
        pytest.param(lambda s: replace(s, gates=[replace(s.gates[0], username=CLOUD_USER)]), id="clashing-login"),
        pytest.param(
            lambda s: replace(s, bridge=BridgeTo("h", 1, "b", "pw\nlistener 1 0.0.0.0")), id="newline-in-bridge-pw"
        ),
    ],
)
def test_registry_that_would_corrupt_the_files_is_refused(
    bad: Callable[[SiteRegistry], SiteRegistry], tmp_path: Path
) -> None:
    with pytest.raises(ValueError):
        write_broker_config(bad(make_site(SITE)), tmp_path)


def test_missing_binary_names_the_apt_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MosquittoNotFound, match=r"apt-get install .*mosquitto"):
        find_mosquitto(extra_dirs=())
    with pytest.raises(MosquittoNotFound):
        MosquittoProcess(make_site(SITE), binary=str(tmp_path / "mosquitto")).start()


# --- logins ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("nanshan-g1", "wrong", id="wrong-password"),
        pytest.param("nanshan-g1", None, id="no-password"),
        pytest.param("gate-999", "whatever", id="unknown-user"),
        pytest.param(None, None, id="anonymous"),
    ],
)
@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5], ids=["v311", "v5"])
def test_bad_logins_are_refused(
    mosquitto_factory: MosquittoFactory,
    mqtt_client: MqttClientFactory,
    username: str | None,
    password: str | None,
    protocol: MQTTProtocolVersion,
) -> None:
    broker = mosquitto_factory(make_site(SITE))
    with pytest.raises(ConnectRefused) as refused:
        mqtt_client(broker, username, password, protocol=protocol)
    assert refused.value.reason.getName() == "Not authorized"
    mqtt_client(broker, *gate_login(SITE, "g1"), protocol=protocol)  # the right password works


def test_a_gate_added_to_the_registry_logs_in_after_reload(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    broker = mosquitto_factory(make_site(SITE, ["g1"]))
    g1 = mqtt_client(broker, *gate_login(SITE, "g1"))
    with pytest.raises(ConnectRefused):
        mqtt_client(broker, *gate_login(SITE, "g2"))

    broker.reload(make_site(SITE, ["g1", "g2"]))

    g2 = mqtt_client(broker, *gate_login(SITE, "g2"))
    g2.subscribe(topics.all_events(SITE))
    g1.publish(topics.events(SITE, "g1"), "still connected")
    assert g2.expect().payload == b"still connected"


# --- what each login may read and write ---------------------------------------------------


def test_gate_events_reach_the_cloud_and_the_other_gates_of_the_site(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    broker = mosquitto_factory(make_site(SITE))
    cloud = mqtt_client(broker, *cloud_login())
    cloud.subscribe(topics.all_events(SITE))
    g2 = mqtt_client(broker, *gate_login(SITE, "g2"))
    g2.subscribe(topics.all_events(SITE))
    g1 = mqtt_client(broker, *gate_login(SITE, "g1"))
    event_id = str(uuid.uuid4())

    g1.publish(topics.events(SITE, "g1"), event_id)

    for reader in (cloud, g2):
        msg = reader.expect(topics.events(SITE, "g1"))
        assert msg.payload.decode() == event_id and msg.qos == 1


def _forgeries() -> list[object]:
    """(what gate g1 tries to publish, who could legitimately read it, and so would see it if allowed)."""
    return [
        pytest.param(topics.events(SITE, "g2"), "cloud", id="another-gates-events"),
        pytest.param(topics.status(SITE, "g2"), "cloud", id="another-gates-status"),
        pytest.param(topics.feed(SITE), "g2", id="the-feed"),
        pytest.param(topics.head(SITE), "g2", id="the-feed-head"),
        pytest.param(topics.acks(SITE, "g2"), "g2", id="another-gates-acks"),
        pytest.param(topics.events(OTHER, "g1"), "cloud", id="another-sites-events"),
    ]


@pytest.mark.parametrize(("forged_topic", "reader_name"), _forgeries())
def test_a_gate_cannot_publish_where_it_does_not_own_the_topic(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory, forged_topic: str, reader_name: str
) -> None:
    broker = mosquitto_factory([make_site(SITE), make_site(OTHER)], role="cloud")
    readers = {"cloud": mqtt_client(broker, *cloud_login()), "g2": mqtt_client(broker, *gate_login(SITE, "g2"))}
    reader = readers[reader_name]
    reader.subscribe(forged_topic, topics.all_events(SITE))
    g1 = mqtt_client(broker, *gate_login(SITE, "g1"))

    g1.publish(forged_topic, "forged")
    g1.publish(topics.events(SITE, "g1"), "sentinel")  # same connection, so it is routed after the forgery

    assert reader.expect(topics.events(SITE, "g1")).payload == b"sentinel"
    assert reader.received(forged_topic) == []


def test_over_mqtt5_the_gate_is_told_its_forged_publish_was_not_authorized(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    broker = mosquitto_factory(make_site(SITE))
    g1 = mqtt_client(broker, *gate_login(SITE, "g1"), protocol=MQTTProtocolVersion.MQTTv5)

    assert g1.publish(topics.events(SITE, "g2"), "forged").getName() == "Not authorized"
    own = g1.publish(topics.events(SITE, "g1"), "mine")
    assert not own.is_failure and own.getName() == "No matching subscribers"  # 0x10: stored, nobody listening


def test_a_gate_cannot_read_another_sites_feed_or_another_gates_acks(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    broker = mosquitto_factory([make_site(SITE), make_site(OTHER)], role="cloud")
    g1 = mqtt_client(broker, *gate_login(SITE, "g1"))
    # Mosquitto 2.0 grants every SUBSCRIBE and filters at delivery, so wildcards are tried too.
    g1.subscribe(topics.feed(OTHER), topics.acks(SITE, "g2"), "sf/#", "sf/+/feed")
    cloud = mqtt_client(broker, *cloud_login())

    cloud.publish(topics.feed(OTHER), "other site's change")
    cloud.publish(topics.acks(SITE, "g2"), "g2's ack")
    cloud.publish(topics.feed(SITE), "own site's change")

    assert g1.expect().payload == b"own site's change"
    assert g1.received() == []


def test_retained_status_then_last_will_offline_when_the_connection_dies(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    broker = mosquitto_factory(make_site(SITE))
    status_topic = topics.status(SITE, "g1")
    g1 = mqtt_client(
        broker,
        *gate_login(SITE, "g1"),
        client_id="gate-g1",
        will=(status_topic, status_json(SITE, "g1", "offline"), 1, True),
    )
    g1.publish(status_topic, status_json(SITE, "g1", "online"), retain=True)

    cloud = mqtt_client(broker, *cloud_login())
    cloud.subscribe(topics.all_status(SITE))
    online = cloud.expect(status_topic)
    assert online.retain and GateStatus.model_validate_json(online.payload).state == "online"

    g1.sever()

    assert GateStatus.model_validate_json(cloud.expect(status_topic).payload).state == "offline"
    later = mqtt_client(broker, *gate_login(SITE, "g2"))
    later.subscribe(topics.all_status(SITE))
    retained = later.expect(status_topic)
    assert retained.retain and GateStatus.model_validate_json(retained.payload).state == "offline"


def test_retained_status_and_a_persistent_session_survive_a_broker_restart_on_the_same_port(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    broker = mosquitto_factory(make_site(SITE))
    port = broker.port
    g1 = mqtt_client(broker, *gate_login(SITE, "g1"))
    g1.publish(topics.status(SITE, "g1"), status_json(SITE, "g1", "online"), retain=True)
    g2 = mqtt_client(broker, *gate_login(SITE, "g2"), client_id="gate-g2", clean_session=False)
    g2.subscribe(topics.feed(SITE))
    g2.close()
    cloud = mqtt_client(broker, *cloud_login())
    cloud.publish(topics.feed(SITE), "seq 1")  # queued for g2's offline session

    broker.restart()

    assert broker.port == port
    g2 = mqtt_client(broker, *gate_login(SITE, "g2"), client_id="gate-g2", clean_session=False)
    assert g2.session_present
    assert g2.expect(topics.feed(SITE)).payload == b"seq 1"
    g2.subscribe(topics.all_status(SITE))
    assert g2.expect(topics.status(SITE, "g1")).retain


def test_after_kill_9_the_broker_comes_back_on_the_same_port(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    broker = mosquitto_factory(make_site(SITE))
    port, pid = broker.port, broker.pid
    g1 = mqtt_client(broker, *gate_login(SITE, "g1"))

    broker.kill()
    assert g1.disconnected.wait(5) and not broker.running
    broker.start()

    assert broker.port == port and broker.pid != pid
    mqtt_client(broker, *gate_login(SITE, "g1"))


# --- TLS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ca", ["right", "wrong", "system"])
def test_tls_listener_is_trusted_only_with_the_sites_ca(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory, tmp_path: Path, ca: str
) -> None:
    pki = make_pki(tmp_path / "pki")
    broker = mosquitto_factory(make_site(SITE), tls=pki)
    choices: dict[str, bool | Path] = {
        "right": pki.cafile,
        "wrong": make_pki(tmp_path / "rogue").cafile,
        "system": True,
    }
    cafile = choices[ca]

    if ca != "right":
        with pytest.raises(ssl.SSLCertVerificationError):
            mqtt_client(broker, *gate_login(SITE, "g1"), tls=cafile)
        return
    g1 = mqtt_client(broker, *gate_login(SITE, "g1"), tls=cafile)
    assert g1.client.socket().version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
    cloud = mqtt_client(broker, *cloud_login())  # the plain listener serves the same broker
    cloud.subscribe(topics.all_events(SITE))
    g1.publish(topics.events(SITE, "g1"), "over tls")
    assert cloud.expect().payload == b"over tls"
    with pytest.raises(ConnectRefused):
        mqtt_client(broker, "nanshan-g1", "wrong", tls=cafile)


# --- the bridge: site broker <-> cloud broker ------------------------------------------------


def _bridged_pair(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> tuple[MosquittoProcess, MosquittoProcess, BrokerClient]:
    """A cloud broker and a site broker bridged to it; returns them with a persistent cloud consumer."""
    cloud_port = free_port()
    bridge = BridgeTo("127.0.0.1", cloud_port, "bridge-nanshan", password_of("bridge-nanshan"))
    site = make_site(SITE, bridge=bridge)
    cloud_broker = mosquitto_factory([site, make_site(OTHER)], role="cloud", name="cloud", port=cloud_port)
    consumer = mqtt_client(cloud_broker, *cloud_login(), client_id="cloud-consumer", clean_session=False)
    consumer.subscribe(topics.bridge_state(SITE), topics.all_events(SITE), topics.all_status(SITE))
    site_broker = mosquitto_factory(site, role="site", name="site")
    assert consumer.expect(topics.bridge_state(SITE)).payload == b"1"  # the bridge is up and subscribed
    return cloud_broker, site_broker, consumer


def test_bridge_carries_events_up_and_the_feed_and_acks_down(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    cloud_broker, site_broker, consumer = _bridged_pair(mosquitto_factory, mqtt_client)
    g1 = mqtt_client(site_broker, *gate_login(SITE, "g1"))
    g1.subscribe(topics.feed(SITE), topics.head(SITE), topics.acks(SITE, "g1"))

    g1.publish(topics.events(SITE, "g1"), "passage 1")
    g1.publish(topics.status(SITE, "g1"), status_json(SITE, "g1", "online"), retain=True)
    assert consumer.expect(topics.events(SITE, "g1")).payload == b"passage 1"
    assert consumer.expect(topics.status(SITE, "g1")).payload

    consumer.publish(topics.feed(SITE), "seq 1")
    consumer.publish(topics.acks(SITE, "g1"), "ack passage 1")
    consumer.publish(topics.head(SITE), "head 1", retain=True)
    assert g1.expect(topics.feed(SITE)).payload == b"seq 1"
    assert g1.expect(topics.head(SITE)).payload == b"head 1"
    assert g1.expect(topics.acks(SITE, "g1")).payload == b"ack passage 1"

    late = mqtt_client(cloud_broker, *cloud_login())  # retained status crossed the bridge as retained
    late.subscribe(topics.all_status(SITE))
    assert late.expect(topics.status(SITE, "g1")).retain
    with pytest.raises(ConnectRefused):  # gates log in at their site broker only
        mqtt_client(cloud_broker, *gate_login(SITE, "g1"))


def test_events_published_while_the_cloud_broker_is_down_arrive_after_it_restarts(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    cloud_broker, site_broker, consumer = _bridged_pair(mosquitto_factory, mqtt_client)
    g1 = mqtt_client(site_broker, *gate_login(SITE, "g1"))

    cloud_broker.stop()
    consumer.disconnected.wait(5)
    sent = [f"passage {i}" for i in range(200)]
    for payload in sent:
        g1.publish(topics.events(SITE, "g1"), payload)  # PUBACKed by the site broker, queued for the bridge
    cloud_broker.start()

    consumer = mqtt_client(cloud_broker, *cloud_login(), client_id="cloud-consumer", clean_session=False)
    assert consumer.session_present
    got = [consumer.expect(topics.events(SITE, "g1"), timeout=15).payload.decode() for _ in sent]
    assert got == sent  # in order; QoS 1 would allow duplicates, none happen on a clean stop


def test_feed_published_while_the_site_broker_is_down_reaches_the_gate_after_it_restarts(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    _cloud_broker, site_broker, consumer = _bridged_pair(mosquitto_factory, mqtt_client)
    g1 = mqtt_client(site_broker, *gate_login(SITE, "g1"), client_id="gate-g1", clean_session=False)
    g1.subscribe(topics.feed(SITE))
    g1.close()

    site_broker.stop()
    assert consumer.expect(topics.bridge_state(SITE)).payload == b"0"
    for seq in range(1, 51):
        consumer.publish(topics.feed(SITE), f"seq {seq}")  # queued at the cloud for the bridge's session
    site_broker.start()

    g1 = mqtt_client(site_broker, *gate_login(SITE, "g1"), client_id="gate-g1", clean_session=False)
    assert g1.session_present
    got = [g1.expect(topics.feed(SITE), timeout=15).payload.decode() for _ in range(50)]
    assert got == [f"seq {seq}" for seq in range(1, 51)]


def test_bridge_over_tls_trusts_the_cloud_ca(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "cloud-pki")
    tls_port = free_port()
    bridge = BridgeTo("localhost", tls_port, "bridge-nanshan", password_of("bridge-nanshan"), cafile=pki.cafile)
    site = make_site(SITE, bridge=bridge)
    cloud_broker = mosquitto_factory(site, role="cloud", tls=pki, tls_port=tls_port)
    consumer = mqtt_client(cloud_broker, *cloud_login(), tls=pki.cafile)
    consumer.subscribe(topics.bridge_state(SITE), topics.all_events(SITE))
    site_broker = mosquitto_factory(site, role="site")
    # A bridge's TLS handshake on a loaded machine can miss its first try; it retries after a second or more.
    assert consumer.expect(topics.bridge_state(SITE), timeout=15).payload == b"1"

    mqtt_client(site_broker, *gate_login(SITE, "g1")).publish(topics.events(SITE, "g1"), "via tls")

    assert consumer.expect(topics.events(SITE, "g1")).payload == b"via tls"


@pytest.mark.parametrize("ca", ["right", "wrong"])
def test_a_gates_sync_client_speaks_tls_to_its_site_broker_and_trusts_only_the_sites_ca(
    mosquitto_factory: MosquittoFactory,
    mqtt_client: MqttClientFactory,
    tmp_path: Path,
    ca: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The gate's own client (`GateSync`, as the daemon runs it), not a test client, over TLS."""
    pki = make_pki(tmp_path / "pki")
    broker = mosquitto_factory(make_site(SITE), tls=pki)
    assert broker.tls_port is not None
    cafile = pki.cafile if ca == "right" else make_pki(tmp_path / "rogue").cafile
    user, password = gate_login(SITE, "g1")
    config = SyncConfig(
        site=SITE,
        gate="g1",
        broker_host="localhost",
        broker_port=broker.tls_port,
        username=user,
        tls_ca=cafile,
        snapshot_url="https://localhost:9",  # nothing there: the gate keeps trying, harmlessly
        key_root=KEY_ROOT,
        reconnect_max_s=1,
    )
    watcher = mqtt_client(broker, *cloud_login())  # on the plain listener
    watcher.subscribe(topics.status(SITE, "g1"))
    store = GateStore(tmp_path / "gate.db")

    async def scenario() -> None:
        sync = GateSync(config, port=StorePort(store, gate_id="g1"), password=password, tick_s=0.1)
        sync.start()
        try:
            if ca == "right":
                msg = await asyncio.to_thread(watcher.expect, topics.status(SITE, "g1"))
                status = GateStatus.model_validate_json(msg.payload)
                assert (status.gate, status.state) == ("g1", "online")
                assert sync.connected
            else:
                await asyncio.sleep(2.0)
                assert not sync.connected
                with pytest.raises(AssertionError):
                    watcher.expect(topics.status(SITE, "g1"), timeout=0.1)
        finally:
            await sync.stop()

    caplog.set_level(logging.ERROR, logger="starfish.sync")
    asyncio.run(scenario())
    store.close()
    if ca == "wrong":
        assert any("over TLS" in r.getMessage() for r in caplog.records), "the log names the likely cause"
