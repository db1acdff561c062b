"""Issue 8, brokers: a login takes over no session but its own, and oversized messages stop at the
brokers and at every reader, against real Mosquitto brokers started from the generated config."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from cloud.db import make_engine, make_sessionmaker
from cloud.migrate import upgrade
from cloud.sync import inbound, service
from cloud.sync.mqtt import CloudSync
from edge.store import GateStore
from edge.sync_port import StorePort
from harness.mosquitto import CLOUD_USER, MosquittoFactory, MosquittoProcess, make_site, password_of
from harness.mqtt import TIMEOUT, MqttClientFactory
from harness.processes import free_port, wait_until
from models.credential import public_key_b64
from models.messages import Direction, GateConfig, Outcome, PassageEvent, TicketStatus
from models.sync import (
    EVENT_BATCH_MAX,
    MAX_MESSAGE_BYTES,
    EventAck,
    FeedHead,
    FeedMessage,
    GateConfigChange,
    GateStatus,
    KeySet,
    SnapshotStatus,
    StatusChange,
    event_batch_json,
    parse_events,
)
from models.sync_config import SyncConfig
from sync import topics
from sync.gate import GateSync
from sync.mosquitto import (
    MAX_PACKET_BYTES,
    BridgeTo,
    Role,
    SiteRegistry,
    write_broker_config,
)

pytestmark = pytest.mark.security

SITE = "nanshan"
OTHER = "wanlong"
CLOUD_CLIENT_ID = "starfish-cloud"  # what the cloud presents (STARFISH_MQTT_CLIENT_ID's default)
NOW = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
HUGE = 20 * 1024 * 1024


def login(username: str) -> tuple[str, str]:
    return username, password_of(username)


def registry(role: Role) -> list[SiteRegistry]:
    """What the broker of `role` serves: gates of a site without a site broker log in at the cloud broker."""
    gates = ("g1", "g2", "g3")
    return [make_site(SITE, gates)] if role == "site" else [make_site(SITE, gates), make_site(OTHER)]


def passage(gate: str, *, code: str = "ok", ticket_id: str | None = "T-1001") -> PassageEvent:
    return PassageEvent(
        gate_id=gate,
        site_id=SITE,
        at=NOW,
        direction=Direction.IN,
        outcome=Outcome.ADMIT,
        code=code,
        ticket_id=ticket_id,
        passed=True,
        counted=True,
        credential="signed",
    )


def with_code(event: PassageEvent, code: str) -> bytes:
    """The event's JSON with a code no model would let through (as an attacker writes it)."""
    body = json.loads(event.model_dump_json())
    body["code"] = code
    return json.dumps(body).encode()


# --- a login cannot take over another client's session ------------------------------------------


# (who is attacked, the client id it presents, its login, the topic it reads, who publishes there)
VICTIMS = [
    pytest.param(("gate-nanshan-g2", f"{SITE}-g2", topics.feed(SITE), CLOUD_USER), id="another-gate"),
    pytest.param((CLOUD_CLIENT_ID, CLOUD_USER, topics.events(SITE, "g2"), f"{SITE}-g2"), id="the-cloud"),
]
Victim = tuple[str, str, str, str]


def attacks(client_id: str, username: str) -> list[tuple[str, str]]:
    """(client id presented, login used): the id the real client sends, then the login the broker keys it by;
    one attacking login each, so neither finds the other's (its own) session."""
    return [(client_id, f"{SITE}-g1"), (username, f"{SITE}-g3")]


@pytest.mark.parametrize("role", ["site", "cloud"])
@pytest.mark.parametrize("victim", VICTIMS)
def test_a_gate_login_presenting_another_clients_id_does_not_kick_it_off(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory, role: Role, victim: Victim
) -> None:
    client_id, username, topic, publisher_login = victim
    broker = mosquitto_factory(registry(role), role=role)
    real = mqtt_client(broker, *login(username), client_id=client_id, clean_session=False)
    real.subscribe(topic)
    publisher = mqtt_client(broker, *login(publisher_login))

    for presented, attacker_login in attacks(client_id, username):
        attacker = mqtt_client(broker, *login(attacker_login), client_id=presented, clean_session=False)
        publisher.publish(topic, f"after {presented} logged in as {attacker_login}")

        assert real.expect(topic).payload.decode() == f"after {presented} logged in as {attacker_login}"
        assert not attacker.session_present
        attacker.close()

    assert not real.disconnected.is_set()
    assert f"Client {username} already connected" not in broker.log_text()


@pytest.mark.parametrize("role", ["site", "cloud"])
@pytest.mark.parametrize("victim", VICTIMS)
def test_a_gate_login_presenting_another_clients_id_gets_neither_its_session_nor_its_queued_messages(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory, role: Role, victim: Victim
) -> None:
    client_id, username, topic, publisher_login = victim
    broker = mosquitto_factory(registry(role), role=role)
    real = mqtt_client(broker, *login(username), client_id=client_id, clean_session=False)
    real.subscribe(topic)
    real.close()  # away: its session keeps what comes for it
    publisher = mqtt_client(broker, *login(publisher_login))
    publisher.publish(topic, "queued for the real client")

    for presented, attacker_login in attacks(client_id, username):
        attacker = mqtt_client(broker, *login(attacker_login), client_id=presented, clean_session=False)
        attacker.subscribe(topic)
        publisher.publish(topic, f"sentinel for {presented}")

        assert not attacker.session_present
        # A session's queued message would have been delivered before anything published later.
        assert attacker.expect().payload.decode() == f"sentinel for {presented}"
        attacker.close()

    real = mqtt_client(broker, *login(username), client_id=client_id, clean_session=False)
    assert real.session_present
    assert real.expect(topic).payload == b"queued for the real client"


def test_a_login_presenting_the_bridges_client_ids_does_not_kick_the_bridge_off(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    cloud_port = free_port()
    site = make_site(SITE, bridge=BridgeTo("127.0.0.1", cloud_port, "bridge-nanshan", password_of("bridge-nanshan")))
    cloud_broker = mosquitto_factory([site, make_site(OTHER)], role="cloud", name="cloud", port=cloud_port)
    consumer = mqtt_client(cloud_broker, *login(CLOUD_USER), client_id=CLOUD_CLIENT_ID, clean_session=False)
    consumer.subscribe(topics.bridge_state(SITE), topics.all_events(SITE))
    site_broker = mosquitto_factory(site, role="site", name="site")
    assert consumer.expect(topics.bridge_state(SITE)).payload == b"1"
    g1 = mqtt_client(site_broker, *login(f"{SITE}-g1"))

    for broker, attacker_login in ((cloud_broker, f"{OTHER}-g1"), (site_broker, f"{SITE}-g2")):
        for presented in (topics.bridge_clientid(SITE), f"{topics.bridge_clientid(SITE)}-local"):
            mqtt_client(broker, *login(attacker_login), client_id=presented).close()
            g1.publish(topics.events(SITE, "g1"), f"{presented} at {broker.role}")

            assert consumer.expect(topics.events(SITE, "g1")).payload.decode() == f"{presented} at {broker.role}"

    assert "already connected" not in cloud_broker.log_text() + site_broker.log_text()
    assert consumer.received(topics.bridge_state(SITE)) == []  # the bridge never went down


def _shared_login(site: SiteRegistry) -> SiteRegistry:
    g1, g2 = site.gates
    return replace(site, gates=[g1, replace(g2, username=g1.username, password=g1.password)])


@pytest.mark.parametrize(
    "shared",
    [
        pytest.param(_shared_login, id="two-gates"),
        pytest.param(
            lambda s: replace(s, gates=[replace(s.gates[0], username=CLOUD_USER, password=s.cloud_password)]),
            id="a-gate-and-the-cloud",
        ),
        pytest.param(
            lambda s: replace(s, bridge=BridgeTo("h", 1, s.gates[0].username, s.gates[0].password)),
            id="a-gate-and-the-bridge",
        ),
    ],
)
@pytest.mark.parametrize("role", ["site", "cloud"])
def test_a_registry_giving_two_clients_one_login_is_refused(
    shared: Callable[[SiteRegistry], SiteRegistry], role: Role, tmp_path: Path
) -> None:
    """They would take turns at one session: each connection would end the other's."""
    with pytest.raises(ValueError, match="one client per login"):
        write_broker_config(shared(make_site(SITE)), tmp_path, role=role)


# --- message size -------------------------------------------------------------------------------


def largest_event_batch() -> bytes:
    """The longest EventBatch a gate may send: EVENT_BATCH_MAX events, every field at its bound,
    every character of the ids 4 bytes of UTF-8."""
    wide = "\U0001f3bf"
    event = PassageEvent(
        gate_id=wide * 64,
        site_id=wide * 64,
        at=datetime(2025, 1, 15, 9, 30, 0, 123456, tzinfo=UTC),
        direction=Direction.OUT,
        outcome=Outcome.ADMIT,
        code=wide * 32,
        ticket_id=wide * 64,
        passed=False,
        counted=False,
        credential="signed",
    )
    return event_batch_json([event.model_dump_json()] * EVENT_BATCH_MAX).encode()


def largest_feed_messages() -> list[bytes]:
    wide = "\U0001f3bf"
    config = GateConfig(
        gate_id=wide * 64, site_id=wide * 64, allowed_products=frozenset(f"{i:04d}" + wide * 60 for i in range(1000))
    )
    changes: list[Any] = [
        GateConfigChange(gate_id=wide * 64, config=config),
        KeySet(keys={2**31 + i: "A" * 64 for i in range(64)}),
        StatusChange(ticket_id=wide * 64, status=TicketStatus.REVOKED, reason=wide * 200),
    ]
    return [
        FeedMessage(site=wide * 64, epoch=wide * 32, seq=2**62, at=NOW, change=c).model_dump_json().encode()
        for c in changes
    ]


def test_the_largest_legitimate_messages_fit_the_limits_with_room_to_spare() -> None:
    biggest = max([largest_event_batch(), *largest_feed_messages()], key=len)
    ack = EventAck(event_ids=[uuid.uuid4() for _ in range(EVENT_BATCH_MAX)]).model_dump_json().encode()

    assert len(parse_events(largest_event_batch())) == EVENT_BATCH_MAX
    assert len(biggest) < MAX_MESSAGE_BYTES * 0.6 and len(ack) < MAX_MESSAGE_BYTES
    assert MAX_MESSAGE_BYTES < MAX_PACKET_BYTES < 2 * MAX_MESSAGE_BYTES


@pytest.mark.parametrize("role", ["site", "cloud"])
def test_a_broker_disconnects_a_client_publishing_over_the_size_limit_and_delivers_nothing_of_it(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory, role: Role
) -> None:
    broker = mosquitto_factory(registry(role), role=role)
    cloud = mqtt_client(broker, *login(CLOUD_USER))
    cloud.subscribe(topics.all_events(SITE))
    g1 = mqtt_client(broker, *login(f"{SITE}-g1"))

    g1.client.publish(topics.events(SITE, "g1"), b"x" * HUGE, qos=1)

    assert g1.disconnected.wait(TIMEOUT)
    assert f"Client {SITE}-g1 disconnected due to oversize packet" in broker.log_text()
    again = mqtt_client(broker, *login(f"{SITE}-g1"))
    again.publish(topics.events(SITE, "g1"), "sentinel")
    assert cloud.expect().payload == b"sentinel"  # the oversized one would have come first


def test_the_largest_legitimate_event_batch_crosses_site_broker_bridge_and_cloud_broker(
    mosquitto_factory: MosquittoFactory, mqtt_client: MqttClientFactory
) -> None:
    cloud_port = free_port()
    site = make_site(SITE, bridge=BridgeTo("127.0.0.1", cloud_port, "bridge-nanshan", password_of("bridge-nanshan")))
    cloud_broker = mosquitto_factory(site, role="cloud", name="cloud", port=cloud_port)
    consumer = mqtt_client(cloud_broker, *login(CLOUD_USER))
    consumer.subscribe(topics.bridge_state(SITE), topics.all_events(SITE))
    site_broker = mosquitto_factory(site, role="site", name="site")
    assert consumer.expect(topics.bridge_state(SITE)).payload == b"1"
    batch = largest_event_batch()

    mqtt_client(site_broker, *login(f"{SITE}-g1")).publish(topics.events(SITE, "g1"), batch)

    assert consumer.expect(topics.events(SITE, "g1")).payload == batch


def _unlimited_broker(sites: Sequence[SiteRegistry], role: Role, workdir: Path) -> MosquittoProcess:
    """A broker as an older config left it, with no size limit: what reaches the readers then."""
    return MosquittoProcess(sites, role=role, workdir=workdir, max_packet_size=None)


@pytest.mark.parametrize("limit", ["generated-config", "broker-without-limit"])
def test_a_20_mb_code_in_a_peer_event_never_reaches_the_gates_journal(
    mosquitto_factory: MosquittoFactory,
    mqtt_client: MqttClientFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    limit: str,
) -> None:
    if limit == "generated-config":
        broker = mosquitto_factory(make_site(SITE))
    else:
        broker = _unlimited_broker([make_site(SITE)], "site", tmp_path / "unlimited").start()
    store = GateStore(tmp_path / "gate.db")
    config = SyncConfig(
        site=SITE,
        gate="g1",
        broker_host=broker.connect_host,
        broker_port=broker.port or 0,
        username=f"{SITE}-g1",
        snapshot_url="http://127.0.0.1:9",  # nothing there: the gate keeps trying, harmlessly
        key_root=public_key_b64(Ed25519PrivateKey.generate().public_key()),
        reconnect_max_s=1,
    )
    watcher = mqtt_client(broker, *login(CLOUD_USER))
    watcher.subscribe(topics.status(SITE, "g1"))
    huge, long, fine = passage("g2", ticket_id="T-HUGE"), passage("g2", ticket_id="T-LONG"), passage("g2")

    async def scenario() -> None:
        port = StorePort(store, gate_id="g1")
        sync = GateSync(config, port=port, password=password_of(f"{SITE}-g1"), clock=lambda: NOW, tick_s=0.1)
        sync.start()
        try:
            await asyncio.to_thread(watcher.expect, topics.status(SITE, "g1"))  # online: its subscriptions are in
            g2 = await asyncio.to_thread(mqtt_client, broker, *login(f"{SITE}-g2"))
            g2.client.publish(topics.events(SITE, "g2"), with_code(huge, "X" * HUGE), qos=1)
            if limit == "generated-config":
                assert await asyncio.to_thread(g2.disconnected.wait, TIMEOUT)
                g2 = await asyncio.to_thread(mqtt_client, broker, *login(f"{SITE}-g2"))
            await asyncio.to_thread(g2.publish, topics.events(SITE, "g2"), with_code(long, "X" * 10_000))
            await asyncio.to_thread(g2.publish, topics.events(SITE, "g2"), fine.model_dump_json())
            for _ in range(int(TIMEOUT / 0.02)):
                if any(e.event_id == fine.event_id for e in store.entries()):
                    break
                await asyncio.sleep(0.02)
        finally:
            await sync.stop()

    caplog.set_level(logging.WARNING, logger="starfish.sync")
    asyncio.run(scenario())
    try:
        assert [e.event_id for e in store.entries()] == [fine.event_id]
        assert all(len(e.code) <= 32 for e in store.entries())
    finally:
        store.close()
        broker.close()
    if limit == "generated-config":
        assert f"Client {SITE}-g2 disconnected due to oversize packet" in broker.log_text()
    else:
        assert any(
            f"dropped a message of {len(with_code(huge, 'X' * HUGE))} bytes on {topics.events(SITE, 'g2')}"
            in r.getMessage()
            for r in caplog.records
        ), [r.getMessage() for r in caplog.records]
    assert any("code" in r.getMessage() and "at most 32" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]


def test_the_cloud_consumer_drops_an_oversized_message_unread_and_stores_the_next(
    mqtt_client: MqttClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    upgrade(url)
    engine = make_engine(url)
    stored: list[inbound.Inbound] = []

    def store(session: Session, batch: Sequence[inbound.Inbound]) -> service.Stored:
        stored.extend(batch)
        out = service.Stored()
        for item in batch:
            if isinstance(item, inbound.EventIn):
                out.acks[(item.site, item.gate)].append(item.event.event_id)
        return out

    huge, fine = passage("g1", ticket_id="T-HUGE"), passage("g1")
    payload = with_code(huge, "X" * HUGE)
    caplog.set_level(logging.WARNING, logger="starfish.cloud.sync")
    with _unlimited_broker(registry("cloud"), "cloud", tmp_path / "broker") as broker:
        assert broker.port is not None
        cloud = CloudSync(
            make_sessionmaker(engine),
            host=broker.connect_host,
            port=broker.port,
            username=CLOUD_USER,
            password=password_of(CLOUD_USER),
            store=store,
        ).start()
        try:
            assert cloud.subscribed.wait(TIMEOUT)
            g1 = mqtt_client(broker, *login(f"{SITE}-g1"))
            g1.publish(topics.events(SITE, "g1"), payload)
            g1.publish(topics.events(SITE, "g1"), fine.model_dump_json())
            wait_until(lambda: any(isinstance(i, inbound.EventIn) for i in stored), "the next event stored")
        finally:
            cloud.stop()
    engine.dispose()

    assert [i.event.event_id for i in stored if isinstance(i, inbound.EventIn)] == [fine.event_id]
    assert any(
        f"dropped a message of {len(payload)} bytes on {topics.events(SITE, 'g1')}" in r.getMessage()
        for r in caplog.records
    )


# --- model bounds -------------------------------------------------------------------------------


def _event(**kw: Any) -> dict[str, Any]:
    return json.loads(passage("g2").model_dump_json()) | kw


def _status(**kw: Any) -> dict[str, Any]:
    return {"site": SITE, "gate": "g1", "state": "online"} | kw


def _feed(**kw: Any) -> dict[str, Any]:
    change = {"kind": "status", "ticket_id": "T-1", "status": "revoked"}
    return {"site": SITE, "seq": 1, "at": NOW.isoformat(), "change": change} | kw


def _change(**kw: Any) -> dict[str, Any]:
    return _feed(change={"kind": "status", "ticket_id": "T-1", "status": "revoked"} | kw)


def _keys(n: int) -> dict[str, Any]:
    return _feed(change={"kind": "keys", "keys": {str(i): "A" * 44 for i in range(n)}})


def _products(n: int) -> dict[str, Any]:
    config = {"gate_id": "g1", "site_id": SITE, "allowed_products": [f"p{i}" for i in range(n)]}
    return _feed(change={"kind": "gate_config", "gate_id": "g1", "config": config})


# (model, what fits, what is one too long): the first must pass, the second be refused.
BOUNDS: list[Any] = [
    pytest.param(PassageEvent, _event(code="c" * 32), _event(code="c" * 33), id="event-code"),
    pytest.param(PassageEvent, _event(ticket_id="t" * 64), _event(ticket_id="t" * 65), id="event-ticket-id"),
    pytest.param(PassageEvent, _event(gate_id="g" * 64), _event(gate_id="g" * 65), id="event-gate-id"),
    pytest.param(PassageEvent, _event(site_id="s" * 64), _event(site_id="s" * 65), id="event-site-id"),
    pytest.param(FeedMessage, _change(reason="r" * 200), _change(reason="r" * 201), id="status-change-reason"),
    pytest.param(FeedMessage, _change(ticket_id="t" * 64), _change(ticket_id="t" * 65), id="status-change-ticket"),
    pytest.param(FeedMessage, _feed(site="s" * 64), _feed(site="s" * 65), id="feed-site"),
    pytest.param(FeedMessage, _feed(epoch="e" * 32), _feed(epoch="e" * 33), id="feed-epoch"),
    pytest.param(FeedMessage, _keys(64), _keys(65), id="key-set-size"),
    pytest.param(FeedMessage, _products(1000), _products(1001), id="gate-config-products"),
    pytest.param(
        FeedHead,
        {"site": "s" * 64, "seq": 0, "at": NOW.isoformat()},
        {"site": "s" * 65, "seq": 0, "at": NOW.isoformat()},
        id="head-site",
    ),
    pytest.param(GateStatus, _status(gate="g" * 64), _status(gate="g" * 65), id="status-gate"),
    pytest.param(GateStatus, _status(site="s" * 64), _status(site="s" * 65), id="status-site"),
    pytest.param(GateStatus, _status(outbox_depth=0), _status(outbox_depth=-1), id="status-outbox-depth"),
    pytest.param(
        EventAck,
        {"event_ids": [str(uuid.uuid4()) for _ in range(EVENT_BATCH_MAX)]},
        {"event_ids": [str(uuid.uuid4()) for _ in range(EVENT_BATCH_MAX + 1)]},
        id="ack-size",
    ),
    pytest.param(
        SnapshotStatus,
        {"ticket_id": "t" * 64, "status": "valid"},
        {"ticket_id": "t" * 65, "status": "valid"},
        id="snapshot-ticket-id",
    ),
]


@pytest.mark.parametrize(("model", "fits", "too_long"), BOUNDS)
def test_wire_models_refuse_over_long_fields_and_take_the_longest_legitimate_ones(
    model: type[BaseModel], fits: dict[str, Any], too_long: dict[str, Any]
) -> None:
    model.model_validate_json(json.dumps(fits))
    with pytest.raises(ValidationError):
        model.model_validate_json(json.dumps(too_long))


def test_a_batch_keeps_its_good_events_and_leaves_out_an_over_long_one() -> None:
    good, bad = passage("g2"), passage("g2", ticket_id="T-2")
    batch = event_batch_json([good.model_dump_json(), with_code(bad, "X" * 1000).decode()])
    refused: list[str] = []

    assert [e.event_id for e in parse_events(batch, refused)] == [good.event_id]
    assert len(refused) == 1 and "code" in refused[0]
