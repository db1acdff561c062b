"""The cloud side of sync against a real Mosquitto: the feed going down, passages and status coming up, snapshots.

Every test that needs a broker starts its own `harness.mosquitto.AnonymousBroker` (anonymous, persistence
on) on a free loopback port; the ACL'd production config is `sync/mosquitto.py`'s business.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from cloud.app import create_app
from cloud.db import utcnow
from cloud.deps import Role
from cloud.settings import Settings
from cloud.sync import feed, inbound, service, snapshot
from cloud.sync.feed import trusted_key_set, trusted_keys
from cloud.sync.models import DeadLetter, FeedChange, GatePassage, QuarantinedEvent
from cloud.sync.mqtt import CloudSync
from cloud.tickets.models import Ticket
from cloud.tickets.service import wire_ticket
from harness.api import Api
from harness.mosquitto import AnonymousBroker
from harness.processes import wait_until
from harness.tickets import counted_passage
from models import PassageEvent, TicketStatus
from models import Ticket as WireTicket
from models.credential import public_key_b64
from models.keyset import verify_key_set
from models.sync import (
    EventAck,
    FeedHead,
    FeedMessage,
    GateStatus,
    KeySet,
    RefusedEvent,
    SnapshotHeader,
    SnapshotStatus,
    StatusChange,
    TicketUpsert,
    event_batch_json,
    ticket_set_checksum,
)
from sync import topics
from tests.cloud.api import make_product, next_weekday
from tests.cloud.paid_orders import add_holder, another_customer, pay, sell, sell_paid

BOUND_S = 15.0  # a bound on waiting for the broker and the cloud, never an assertion about speed
SITE = "nanshan"  # the conftest site's code


# --- a broker, MQTT peers, waiting ------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[AnonymousBroker]:
    with AnonymousBroker(tmp_path / "mosquitto", startup_timeout=BOUND_S) as broker:
        yield broker


class Peer:
    """A plain MQTT client standing in for a gate or a listener."""

    def __init__(self, broker: AnonymousBroker, *subscriptions: str, persistent: bool = False) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"peer-{uuid.uuid4().hex[:10]}", clean_session=not persistent
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if subscriptions:
            self.client.subscribe([(t, 1) for t in subscriptions])
            assert subscribed.wait(10)

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def next(self, timeout: float = 15.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers(broker: AnonymousBroker) -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(*subscriptions: str, persistent: bool = False) -> Peer:
        made.append(Peer(broker, *subscriptions, persistent=persistent))
        return made[-1]

    yield make
    for p in made:
        p.close()


# --- the cloud, with sync on ------------------------------------------------------------------------


@pytest.fixture
def poll_s() -> float:
    """The publisher's polling interval: long, so what arrives sooner was woken by the commit itself."""
    return 60.0


@pytest.fixture
def heartbeat_s() -> float:
    return 60.0


@pytest.fixture
def app(settings: Settings, broker: AnonymousBroker, poll_s: float, heartbeat_s: float) -> FastAPI:
    """Overrides conftest's app: the same cloud, with its MQTT loop on the test's broker."""
    update = {
        "mqtt_host": "127.0.0.1",
        "mqtt_port": broker.port,
        "sync_poll_seconds": poll_s,
        "sync_heartbeat_seconds": heartbeat_s,
    }
    return create_app(settings.model_copy(update=update), expiry_every_s=0)


@pytest.fixture
def sync(app: FastAPI, client: TestClient) -> CloudSync:
    cloud: CloudSync = app.state.sync
    assert cloud.subscribed.wait(10), "the cloud never subscribed"
    return cloud


def add_gate(api: Api, site_id: int, code: str) -> dict[str, Any]:
    r = api.as_(Role.ADMIN).post(f"/api/v1/sites/{site_id}/gates", json={"code": code, "name": code.upper()})
    assert r.status_code == 201, r.text
    return dict(r.json())


def ticket_ids(api: Api, order_id: int) -> list[int]:
    return [t["id"] for t in api.as_(Role.ADMIN).get(f"/api/v1/orders/{order_id}/tickets").json()]


def passage(ticket_id: int | str, gate: str = "g1", *, minutes_ago: float = 0, site: str = SITE) -> PassageEvent:
    return counted_passage(str(ticket_id), utcnow() - timedelta(minutes=minutes_ago), gate=gate, site=site)


def feed_messages(peer: Peer, n: int) -> list[FeedMessage]:
    return [FeedMessage.model_validate_json(peer.next().payload) for _ in range(n)]


def applied(listener: Peer, *, after: int, through: int) -> list[int]:
    """The sequence numbers a gate would apply, in arrival order: repeats skipped, gaps kept."""
    got: list[int] = []
    while after < through:
        seq = FeedMessage.model_validate_json(listener.next().payload).seq
        if seq > after:
            got.append(seq)
            after = seq
    return got


def ticket_of(message: FeedMessage) -> WireTicket:
    assert isinstance(message.change, TicketUpsert)
    return message.change.ticket


def keys_of(message: FeedMessage) -> dict[int, str]:
    assert isinstance(message.change, KeySet)
    return message.change.keys


def acked_ids(peer: Peer, until: set[uuid.UUID]) -> set[uuid.UUID]:
    """EventAcks received until every id of `until` was confirmed."""
    seen: set[uuid.UUID] = set()
    while not until <= seen:
        seen.update(EventAck.model_validate_json(peer.next().payload).event_ids)
    return seen


def passages(session: Session) -> list[GatePassage]:
    return list(session.scalars(select(GatePassage).order_by(GatePassage.at)))


# --- the feed, down ---------------------------------------------------------------------------------


def test_sold_tickets_reach_the_site_feed_in_sequence_and_are_marked_published(
    app: FastAPI, api: Api, sync: CloudSync, site: dict[str, Any], day_product: dict[str, Any], peers: Any
) -> None:
    listener = peers(topics.feed(SITE))
    orders = [sell_paid(app, api, site["id"], day_product["id"], next_weekday()) for _ in range(3)]

    got = feed_messages(listener, 3)
    assert [m.seq for m in got] == [1, 2, 3]
    assert {m.site for m in got} == {SITE}
    assert [m.change.kind for m in got] == ["ticket"] * 3
    sold = [ticket_ids(api, o["id"])[0] for o in orders]
    with app.state.sessionmaker() as session:
        assert [ticket_of(m) for m in got] == [wire_ticket(session.get(Ticket, t)) for t in sold]

    def all_published() -> bool:
        with app.state.sessionmaker() as session:
            return session.scalar(select(func.count()).where(FeedChange.published_at.is_(None))) == 0

    wait_until(all_published, "published_at set after the PUBACKs", BOUND_S)


def test_a_refund_puts_a_revocation_on_the_feed(
    app: FastAPI, api: Api, sync: CloudSync, site: dict[str, Any], day_product: dict[str, Any], peers: Any
) -> None:
    listener = peers(topics.feed(SITE))
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=2)
    first, _ = ticket_ids(api, order["id"])
    r = api.as_(Role.CASHIER).post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [first]})
    assert r.status_code == 201, r.text

    got = feed_messages(listener, 3)
    assert [(m.seq, m.change.kind) for m in got] == [(1, "ticket"), (2, "ticket"), (3, "status")]
    assert got[2].change.model_dump() == {
        "schema_version": 1,
        "kind": "status",
        "ticket_id": str(first),
        "status": TicketStatus.REVOKED,
        "reason": "refunded",
    }


def test_feed_sequence_stays_gapless_and_in_order_under_concurrent_sales(
    app: FastAPI, api: Api, sync: CloudSync, site: dict[str, Any], day_product: dict[str, Any], peers: Any
) -> None:
    listener = peers(topics.feed(SITE))
    orders = [sell(api, site["id"], day_product["id"], next_weekday(), quantity=2) for _ in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda o: pay(app, o["id"]), orders))

    with app.state.sessionmaker() as session:
        seqs = list(session.scalars(select(FeedChange.seq).where(FeedChange.site_id == site["id"])))
        upserted = {c["ticket"]["ticket_id"] for c in session.scalars(select(FeedChange.body))}
        sold = set(session.scalars(select(Ticket.id)))
    assert sorted(seqs) == list(range(1, 49))
    assert upserted == {str(t) for t in sold}
    assert [m.seq for m in feed_messages(listener, 48)] == list(range(1, 49))


@pytest.mark.parametrize("poll_s", [0.2])
def test_startup_puts_the_public_keys_on_each_feed_once_and_again_when_they_change(
    app: FastAPI, api: Api, sync: CloudSync, settings: Settings, site: dict[str, Any], peers: Any
) -> None:
    listener = peers(topics.feed(SITE))
    key = public_key_b64(settings.signing_key.public_key())
    retired = public_key_b64(Ed25519PrivateKey.generate().public_key())

    # Another process of the cloud starts twice, then once with a retired key kept: its commits reach
    # this one's publisher by polling (no after-commit hook across processes).
    for other in (settings, settings, settings.model_copy(update={"sync_previous_public_keys": {7: retired}})):
        with TestClient(create_app(other, expiry_every_s=0)):
            pass

    got = feed_messages(listener, 2)
    assert [(m.seq, m.change.kind) for m in got] == [(1, "keys"), (2, "keys")]
    assert [keys_of(m) for m in got] == [{settings.signing_key_id: key}, {settings.signing_key_id: key, 7: retired}]
    with app.state.sessionmaker() as session:
        assert session.scalar(select(func.count()).select_from(FeedChange)) == 2


def test_changes_committed_while_the_broker_is_down_are_published_when_it_is_back(
    app: FastAPI,
    api: Api,
    sync: CloudSync,
    broker: AnonymousBroker,
    site: dict[str, Any],
    day_product: dict[str, Any],
    peers: Any,
) -> None:
    listener = peers(topics.feed(SITE), persistent=True)  # a gate: its session outlives the restart
    sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    assert [m.seq for m in feed_messages(listener, 1)] == [1]

    broker.stop()
    wait_until(lambda: not sync.connected.is_set(), "the cloud noticing", BOUND_S)
    sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=2)
    broker.start()

    # QoS 1 is at least once: seq 1 may come again if the broker stopped before it saw the PUBACK.
    assert applied(listener, after=1, through=3) == [2, 3]

    def all_published() -> bool:
        with app.state.sessionmaker() as session:
            return session.scalar(select(func.count()).where(FeedChange.published_at.is_(None))) == 0

    wait_until(all_published, "published_at set after the restart", BOUND_S)


@pytest.mark.parametrize("heartbeat_s", [0.2])
def test_the_feed_head_goes_out_retained_as_a_heartbeat_and_counts_only_published_changes(
    app: FastAPI,
    api: Api,
    sync: CloudSync,
    broker: AnonymousBroker,
    site: dict[str, Any],
    day_product: dict[str, Any],
    peers: Any,
) -> None:
    sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=2)
    with app.state.sessionmaker() as session:
        head = feed.head_seq(session, site["id"])
    assert head >= 2

    def next_head(p: Peer) -> FeedHead:
        return FeedHead.model_validate_json(p.next().payload)

    retained = next_head(peers(topics.head(SITE)))  # a new subscriber gets the last head at once
    assert retained.site == SITE and retained.seq <= head
    listener = peers(topics.head(SITE))
    wait_until(lambda: next_head(listener).seq == head, "a heartbeat at the head", BOUND_S)
    beats = [next_head(listener) for _ in range(3)]
    assert [h.seq for h in beats] == [head] * 3, "heartbeats keep coming while nothing changes"
    assert beats[0].at < beats[1].at < beats[2].at

    # Changes committed while the broker is away are not published: the head does not claim them.
    broker.stop()
    wait_until(lambda: not sync.connected.is_set(), "the cloud noticing", BOUND_S)
    with app.state.sessionmaker() as session:
        feed.append_change(session, site["id"], StatusChange(ticket_id="1", status=TicketStatus.BLOCKED))
        session.commit()
        [(code, _epoch, seq, as_of)] = feed.published_heads(session, utcnow())
        blocked_at = session.scalar(select(func.max(FeedChange.created_at)))
        assert (code, seq, as_of) == (SITE, head, blocked_at), "as of just before the unpublished change"
    broker.start()
    after = peers(topics.head(SITE))
    wait_until(lambda: next_head(after).seq == head + 1, "the head after the restart", BOUND_S)


def test_a_new_feed_epoch_goes_out_on_the_feed_the_head_and_the_snapshot(
    app: FastAPI, api: Api, sync: CloudSync, site: dict[str, Any], day_product: dict[str, Any], peers: Any
) -> None:
    listener = peers(topics.feed(SITE))
    sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    [before] = feed_messages(listener, 1)
    with app.state.sessionmaker() as session:
        epoch = feed.new_epoch(session, site["id"])  # as `starfish cloud new-feed-epoch` does
        session.commit()
    assert epoch != before.epoch

    sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    [after] = feed_messages(listener, 1)
    assert (after.epoch, after.seq) == (epoch, before.seq + 1)
    with app.state.sessionmaker() as session:
        assert snapshot.build(session, site["id"], SITE, KeySet(keys={})).header.epoch == epoch
        assert {e for _, e, _, _ in feed.published_heads(session, utcnow())} == {epoch}


# --- passage events, up -----------------------------------------------------------------------------


def test_an_event_delivered_twice_is_stored_once_and_acknowledged_after_its_commit(
    app: FastAPI, api: Api, sync: CloudSync, site: dict[str, Any], day_product: dict[str, Any], peers: Any
) -> None:
    add_gate(api, site["id"], "g1")
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    (ticket,) = ticket_ids(api, order["id"])
    with app.state.sessionmaker() as session:  # sold at the window before the scan (the cloud checks)
        session.get_one(Ticket, ticket).issued_at = utcnow() - timedelta(hours=2)
        session.commit()
    gate = peers(topics.acks(SITE, "g1"))
    event = passage(ticket, minutes_ago=90)  # arrives late: it keeps its scan time

    gate.publish(topics.events(SITE, "g1"), event.model_dump_json())
    ack = EventAck.model_validate_json(gate.next().payload)
    with app.state.sessionmaker() as session:  # the ack came after the commit: the event is there
        assert ack.event_ids == [event.event_id]
        assert [p.event_id for p in passages(session)] == [event.event_id]
    gate.publish(topics.events(SITE, "g1"), event.model_dump_json())  # the gate did not hear the ack
    assert EventAck.model_validate_json(gate.next().payload).event_ids == [event.event_id]

    with app.state.sessionmaker() as session:
        (stored,) = passages(session)
        assert (stored.at, stored.code, stored.passed, stored.conflict) == (event.at, "ok", True, None)
        assert stored.received_at - stored.at > timedelta(minutes=89)
        t = session.get(Ticket, ticket)
        assert t is not None
        assert (t.entries_used, t.first_entry_at) == (1, event.at)
    r = api.as_(Role.CASHIER).post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [ticket]})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "ticket_used")


def test_a_single_use_ticket_admitted_offline_at_two_gates_is_stored_twice_and_the_second_flagged(
    app: FastAPI, api: Api, sync: CloudSync, site: dict[str, Any], peers: Any
) -> None:
    single = make_product(api, site["id"], code="single", name="单次票", entries=1)
    for code in ("g1", "g2"):
        add_gate(api, site["id"], code)
    (ticket,) = ticket_ids(api, sell_paid(app, api, site["id"], single["id"], next_weekday())["id"])
    acks = peers(topics.all_acks(SITE))
    at_a, at_b = passage(ticket, "g1", minutes_ago=5), passage(ticket, "g2", minutes_ago=4)

    # The later passage arrives first (gate B's link came back first): the later scan is still the conflict.
    peers().publish(topics.events(SITE, "g2"), at_b.model_dump_json())
    peers().publish(topics.events(SITE, "g1"), at_a.model_dump_json())
    acked_ids(acks, {at_a.event_id, at_b.event_id})

    with app.state.sessionmaker() as session:
        flagged = {p.event_id: p.conflict for p in passages(session)}
        t = session.get(Ticket, ticket)
        assert t is not None
        counts = (t.entries_used, t.status, t.first_entry_at)
    assert flagged == {at_a.event_id: None, at_b.event_id: "over_use"} or flagged == {
        at_b.event_id: None,
        at_a.event_id: "over_use",
    }
    assert counts == (2, "used", at_a.at)


def test_two_gates_in_one_batch_flag_the_later_scan(app: FastAPI, api: Api, site: dict[str, Any]) -> None:
    single = make_product(api, site["id"], code="single", name="单次票", entries=1)
    for code in ("g1", "g2"):
        add_gate(api, site["id"], code)
    (ticket,) = ticket_ids(api, sell_paid(app, api, site["id"], single["id"], next_weekday())["id"])
    later, earlier = passage(ticket, "g2", minutes_ago=1), passage(ticket, "g1", minutes_ago=2)
    batch = [
        m for e in (later, earlier) for m in inbound.parse(topics.events(SITE, e.gate_id), e.model_dump_json().encode())
    ]

    with app.state.sessionmaker() as session:
        stored = service.store(session, batch)
        assert (stored.new, stored.conflicts) == (2, 1)
        assert {p.event_id: p.conflict for p in passages(session)} == {
            earlier.event_id: None,
            later.event_id: "over_use",
        }
        assert {p.product_id for p in passages(session)} == {single["id"]}  # the entries-per-product report's


def test_a_passage_that_counts_nothing_is_stored_with_its_tickets_product(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    day = make_product(api, site["id"], code="day-2", name="日票")
    add_gate(api, site["id"], "g1")
    (ticket,) = ticket_ids(api, sell_paid(app, api, site["id"], day["id"], next_weekday())["id"])
    event = passage(ticket).model_copy(update={"counted": False})
    parsed = inbound.parse(topics.events(SITE, "g1"), event.model_dump_json().encode())
    with app.state.sessionmaker() as session:
        assert service.store(session, parsed).new == 1
        assert [(p.counted, p.product_id) for p in passages(session)] == [(False, day["id"])]


# A ticket number the site does not have ("12345") is quarantined instead: tests/cloud/test_security_events.py.
@pytest.mark.parametrize("ticket_id", ["²", "0", "99999999999999999999", "OTA-12345"])
def test_passages_of_tickets_the_cloud_does_not_know_are_stored_and_count_nothing(
    app: FastAPI, api: Api, site: dict[str, Any], ticket_id: str
) -> None:
    add_gate(api, site["id"], "g1")
    event = passage(ticket_id)
    parsed = inbound.parse(topics.events(SITE, "g1"), event.model_dump_json().encode())
    assert len(parsed) == 1
    with app.state.sessionmaker() as session:
        stored = service.store(session, parsed)
        assert (stored.new, stored.conflicts, dict(stored.acks)) == (1, 0, {(SITE, "g1"): [event.event_id]})
        assert [(p.ticket_id, p.product_id) for p in passages(session)] == [(ticket_id, None)]


def test_an_event_on_another_gates_topic_is_quarantined_logged_and_acknowledged(
    app: FastAPI,
    api: Api,
    sync: CloudSync,
    site: dict[str, Any],
    day_product: dict[str, Any],
    peers: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="starfish.cloud.sync")
    for code in ("g1", "g2"):
        add_gate(api, site["id"], code)
    (ticket,) = ticket_ids(api, sell_paid(app, api, site["id"], day_product["id"], next_weekday())["id"])
    gate = peers(topics.acks(SITE, "g1"))
    posing = passage(ticket, "g2")
    honest = passage(ticket, "g1")

    gate.publish(topics.events(SITE, "g1"), posing.model_dump_json())
    gate.publish(topics.events(SITE, "g1"), honest.model_dump_json())

    both = {honest.event_id, posing.event_id}  # the impostor is kept as evidence: g1 need not send it again
    assert acked_ids(gate, both) == both
    with app.state.sessionmaker() as session:
        assert [p.event_id for p in passages(session)] == [honest.event_id]
        assert [q.reason for q in session.scalars(select(QuarantinedEvent))] == ["gate_mismatch"]
    assert any(str(posing.event_id) in r.getMessage() and "quarantined" in r.getMessage() for r in caplog.records)


def test_a_backlog_batch_is_stored_and_acknowledged_event_by_event_and_an_impostor_in_it_quarantined_alone(
    app: FastAPI,
    api: Api,
    sync: CloudSync,
    site: dict[str, Any],
    day_product: dict[str, Any],
    peers: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="starfish.cloud.sync")
    for code in ("g1", "g2"):
        add_gate(api, site["id"], code)
    (ticket,) = ticket_ids(api, sell_paid(app, api, site["id"], day_product["id"], next_weekday())["id"])
    gate = peers(topics.acks(SITE, "g1"))
    honest = [passage(ticket, "g1", minutes_ago=m) for m in (3, 2, 1)]
    posing = passage(ticket, "g2")

    batch = event_batch_json([e.model_dump_json() for e in (honest[0], posing, *honest[1:])])
    gate.publish(topics.events(SITE, "g1"), batch)

    want = {e.event_id for e in (*honest, posing)}
    assert acked_ids(gate, want) == want
    with app.state.sessionmaker() as session:
        assert [p.event_id for p in passages(session)] == [e.event_id for e in honest]
        assert session.get(Ticket, ticket).entries_used == 3
    assert any(str(posing.event_id) in r.getMessage() and "quarantined" in r.getMessage() for r in caplog.records)


MALFORMED = [
    pytest.param(topics.events(SITE, "g1"), b"not json", id="not-json"),
    pytest.param(topics.events(SITE, "g1"), b"\xff\xfe\x00garbage", id="not-utf8"),
    pytest.param(topics.events(SITE, "g1"), b"", id="empty"),
    pytest.param(topics.events(SITE, "g1"), b"{}", id="empty-object"),
    pytest.param(topics.events(SITE, "g1"), b"[1, 2, 3]", id="a-list"),
    pytest.param(
        topics.events(SITE, "g1"), passage(1).model_dump_json().replace('"ok"', '"ok", "extra": 1'), id="unknown-field"
    ),
    pytest.param(
        topics.events(SITE, "g1"), passage(1).model_dump_json().replace('"in"', '"sideways"'), id="bad-direction"
    ),
    pytest.param(
        topics.events(SITE, "g1"), passage(1).model_copy(update={"code": "x" * 40}).model_dump_json(), id="long-code"
    ),
    pytest.param(topics.events(SITE, "g1"), b'{"schema_version": 1, "events": []}', id="empty-batch"),
    pytest.param(
        topics.events(SITE, "g1"),
        event_batch_json([passage(1).model_dump_json().replace('"ok"', "1"), passage(2).model_dump_json()[:-2]]),
        id="batch-of-malformed-events",
    ),
    pytest.param(topics.status(SITE, "g1"), b'{"state": "online"}', id="status-incomplete"),
    pytest.param(
        topics.status(SITE, "g1"),
        GateStatus(site=SITE, gate="g1", state="online").model_dump_json().replace('"feed_seq":0', '"feed_seq":-1'),
        id="status-negative-seq",
    ),
    pytest.param(
        topics.status(SITE, "g1"),
        GateStatus(site=SITE, gate="g1", state="online", outbox_depth=2**40).model_dump_json(),
        id="status-huge-outbox",
    ),
    pytest.param(topics.acks(SITE, "g1"), EventAck(event_ids=[]).model_dump_json(), id="an-ack-topic"),
    pytest.param("sf/nanshan/feed", b"{}", id="not-a-gate-topic"),
    pytest.param("sf/NANSHAN/gate/g1/events", passage(1).model_dump_json(), id="bad-site-code"),
]


@pytest.mark.parametrize(("topic", "payload"), MALFORMED)
def test_malformed_messages_are_refused_before_any_database_work(topic: str, payload: str | bytes) -> None:
    raw = payload.encode() if isinstance(payload, str) else payload
    assert inbound.parse(topic, raw) == []


def test_a_malformed_event_in_a_batch_is_dropped_alone(caplog: pytest.LogCaptureFixture) -> None:
    good = [passage(1), passage(2)]
    bodies = [good[0].model_dump_json(), good[1].model_dump_json().replace('"in"', '"up"'), good[1].model_dump_json()]
    with caplog.at_level(logging.WARNING, logger="starfish.cloud.sync"):
        parsed = inbound.parse(topics.events(SITE, "g1"), event_batch_json(bodies).encode())
    assert [m.event for m in parsed if isinstance(m, inbound.EventIn)] == good
    assert any("event 2 of 3" in r.getMessage() for r in caplog.records)


def test_malformed_messages_are_dropped_and_the_consumer_carries_on(
    app: FastAPI,
    api: Api,
    sync: CloudSync,
    site: dict[str, Any],
    day_product: dict[str, Any],
    peers: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="starfish.cloud.sync")
    add_gate(api, site["id"], "g1")
    (ticket,) = ticket_ids(api, sell_paid(app, api, site["id"], day_product["id"], next_weekday())["id"])
    gate = peers(topics.acks(SITE, "g1"))
    for param in MALFORMED:
        topic, payload = param.values
        gate.publish(str(topic), payload)
    gate.publish(topics.events(SITE, "ghost"), passage(ticket, "ghost").model_dump_json())  # no such gate
    good = passage(ticket)
    gate.publish(topics.events(SITE, "g1"), good.model_dump_json())

    assert acked_ids(gate, {good.event_id}) == {good.event_id}
    with app.state.sessionmaker() as session:
        assert [p.event_id for p in passages(session)] == [good.event_id]
    assert sum("dropped" in r.getMessage() for r in caplog.records) >= 8


def test_a_malformed_event_in_a_batch_is_kept_as_a_dead_letter_and_acknowledged_as_refused_with_the_good_ones(
    app: FastAPI, api: Api, sync: CloudSync, site: dict[str, Any], peers: Any
) -> None:
    add_gate(api, site["id"], "g1")
    good, bad = [passage("T-1"), passage("T-2")], passage("T-3")
    bodies = [good[0].model_dump_json(), bad.model_dump_json().replace('"in"', '"up"'), good[1].model_dump_json()]
    gate = peers(topics.acks(SITE, "g1"))

    gate.publish(topics.events(SITE, "g1"), event_batch_json(bodies))
    confirmed, refused = (EventAck.model_validate_json(gate.next().payload) for _ in range(2))

    # Two acks: a gate one release older takes the first and only fails to read the second.
    assert (confirmed.event_ids, confirmed.refused) == ([good[0].event_id, good[1].event_id], [])
    assert (refused.event_ids, refused.refused) == ([], [RefusedEvent(event_id=bad.event_id, reason="malformed")])
    with app.state.sessionmaker() as session:  # the ack came after the commit of both
        assert {p.event_id for p in passages(session)} == {e.event_id for e in good}
        assert list(session.scalars(select(DeadLetter.event_id))) == [bad.event_id]


def test_events_are_not_acknowledged_before_their_commit_and_come_again_after_a_crash(
    app: FastAPI,
    api: Api,
    sync: CloudSync,
    broker: AnonymousBroker,
    site: dict[str, Any],
    day_product: dict[str, Any],
    peers: Any,
) -> None:
    add_gate(api, site["id"], "g1")
    (ticket,) = ticket_ids(api, sell_paid(app, api, site["id"], day_product["id"], next_weekday())["id"])
    sync.stop()
    app.state.sync = None
    attempts: list[int] = []

    def database_down(session: Session, batch: Sequence[inbound.Inbound]) -> service.Stored:
        attempts.append(len(batch))
        raise OperationalError("INSERT INTO gate_passages", {}, Exception("connection refused"))

    factory = app.state.sessionmaker
    down = CloudSync(factory, host="127.0.0.1", port=broker.port, store=database_down).start()
    assert down.subscribed.wait(10)
    gate = peers(topics.acks(SITE, "g1"))
    event = passage(ticket)
    gate.publish(topics.events(SITE, "g1"), event.model_dump_json())
    wait_until(lambda: len(attempts) >= 2, "the store retried", BOUND_S)
    down.stop()  # a crash before any commit: nothing was acknowledged
    assert gate.messages.empty()

    up = CloudSync(factory, host="127.0.0.1", port=broker.port).start()  # same client id: same session
    try:
        assert acked_ids(gate, {event.event_id}) == {event.event_id}
        with app.state.sessionmaker() as session:
            assert [p.event_id for p in passages(session)] == [event.event_id]
    finally:
        up.stop()


def test_events_sent_while_the_cloud_was_away_arrive_when_it_returns(
    app: FastAPI,
    api: Api,
    sync: CloudSync,
    broker: AnonymousBroker,
    site: dict[str, Any],
    day_product: dict[str, Any],
    peers: Any,
) -> None:
    add_gate(api, site["id"], "g1")
    (ticket,) = ticket_ids(api, sell_paid(app, api, site["id"], day_product["id"], next_weekday())["id"])
    sync.stop()
    app.state.sync = None
    gate = peers(topics.acks(SITE, "g1"))
    events = [passage(ticket, minutes_ago=m) for m in (3, 2, 1)]
    for e in events:
        gate.publish(topics.events(SITE, "g1"), e.model_dump_json())

    back = CloudSync(app.state.sessionmaker, host="127.0.0.1", port=broker.port).start()
    try:
        acked_ids(gate, {e.event_id for e in events})
        with app.state.sessionmaker() as session:
            assert [p.event_id for p in passages(session)] == [e.event_id for e in events]
            assert session.get(Ticket, ticket).entries_used == 3
    finally:
        back.stop()


# --- gate status --------------------------------------------------------------------------------------


def test_gate_status_shows_online_state_feed_seq_outbox_depth_and_last_seen(
    app: FastAPI, api: Api, sync: CloudSync, site: dict[str, Any], peers: Any
) -> None:
    for code in ("g1", "g2"):
        add_gate(api, site["id"], code)
    gate = peers()
    reported = utcnow()
    online = GateStatus(site=SITE, gate="g1", state="online", feed_seq=3, outbox_depth=2, at=reported)
    gate.publish(topics.status(SITE, "g1"), online.model_dump_json(), retain=True)

    def status_of(code: str) -> dict[str, Any]:
        body = api.as_(Role.GATE_TECH).get(f"/api/v1/sites/{site['id']}/gates/status").json()
        assert (body["site_code"], body["feed_seq"]) == (SITE, 2)  # a gate roster per gate added
        return dict(next(g for g in body["gates"] if g["code"] == code))

    g1 = wait_until(lambda: (s := status_of("g1"))["state"] == "online" and s, "g1 online", BOUND_S)
    assert (g1["feed_seq"], g1["outbox_depth"]) == (3, 2)
    assert g1["last_seen"] is not None and g1["reported_at"] is not None
    assert status_of("g2") | {"gate_id": 0} == {
        "gate_id": 0,
        "code": "g2",
        "name": "G2",
        "state": "unknown",
        "feed_seq": None,
        "outbox_depth": None,
        "last_seen": None,
        "reported_at": None,
        "checksum": None,
        "checksum_seq": None,
        "problem": None,
        "in_step": None,
        "health": None,
        "lag": None,
        "attention": ["never_reported"],
        "needs_technician": True,
    }

    # Its Last Will, composed when it connected: older figures than the status above.
    will = GateStatus(
        site=SITE, gate="g1", state="offline", feed_seq=1, outbox_depth=0, at=reported - timedelta(hours=1)
    )
    gate.publish(topics.status(SITE, "g1"), will.model_dump_json(), retain=True)
    g1 = wait_until(lambda: (s := status_of("g1"))["state"] == "offline" and s, "g1 offline", BOUND_S)
    assert (g1["feed_seq"], g1["outbox_depth"]) == (3, 2)  # the last figures it reported

    back = GateStatus(site=SITE, gate="g1", state="online", feed_seq=4, outbox_depth=9, at=utcnow())
    gate.publish(topics.status(SITE, "g1"), back.model_dump_json(), retain=True)
    wait_until(lambda: status_of("g1")["state"] == "online", "g1 back online", BOUND_S)
    bye = back.model_copy(update={"state": "offline", "outbox_depth": 0, "at": utcnow() + timedelta(seconds=1)})
    gate.publish(topics.status(SITE, "g1"), bye.model_dump_json(), retain=True)  # a clean shutdown
    g1 = wait_until(lambda: (s := status_of("g1"))["state"] == "offline" and s, "g1 offline again", BOUND_S)
    assert (g1["feed_seq"], g1["outbox_depth"]) == (4, 0)

    gate.publish(topics.status(SITE, "g2"), b"offline", retain=True)  # a bare Last Will: state only
    g2 = wait_until(lambda: (s := status_of("g2"))["state"] == "offline" and s, "g2 offline", BOUND_S)
    assert (g2["feed_seq"], g2["outbox_depth"], g2["reported_at"]) == (0, 0, None)


def test_a_gate_that_says_its_name_is_wrong_shows_so_in_the_back_office_until_it_is_fixed(
    app: FastAPI, api: Api, sync: CloudSync, site: dict[str, Any], peers: Any
) -> None:
    add_gate(api, site["id"], "g1")
    gate = peers()
    problem = "the cloud's roster of site 'nanshan' (g2) does not name gate 'g1'"
    wrong = GateStatus(site=SITE, gate="g1", state="online", feed_seq=2, at=utcnow(), problem=problem)
    gate.publish(topics.status(SITE, "g1"), wrong.model_dump_json(), retain=True)

    def g1() -> dict[str, Any]:
        body = api.as_(Role.GATE_TECH).get(f"/api/v1/sites/{site['id']}/gates/status").json()
        return dict(next(g for g in body["gates"] if g["code"] == "g1"))

    wait_until(lambda: g1()["problem"] == problem, "the gate's problem shown", BOUND_S)
    fixed = wrong.model_copy(update={"problem": None, "at": utcnow() + timedelta(seconds=1)})
    gate.publish(topics.status(SITE, "g1"), fixed.model_dump_json(), retain=True)
    wait_until(lambda: g1()["problem"] is None, "the problem cleared", BOUND_S)


def test_gate_status_checksums_are_compared_with_the_clouds_on_request(
    app: FastAPI, api: Api, sync: CloudSync, site: dict[str, Any], day_product: dict[str, Any], peers: Any
) -> None:
    for code in ("g1", "g2", "g3"):
        add_gate(api, site["id"], code)
    sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=2)
    tech = api.as_(Role.GATE_TECH)
    url = f"/api/v1/sites/{site['id']}/gates/status"
    cloud = tech.get(url, params={"verify": "true"}).json()
    assert cloud["checksum"] is not None and tech.get(url).json()["checksum"] is None, "summed only on request"
    head = cloud["feed_seq"]
    with app.state.sessionmaker() as session:
        assert cloud["checksum"] == snapshot.build(session, site["id"], SITE, KeySet(keys={})).header.checksum

    gate = peers()
    reports = {
        "g1": (head, cloud["checksum"]),  # in step
        "g2": (head, "0" * 64),  # at the head, another ticket set
        "g3": (head - 1, cloud["checksum"]),  # taken before the last change: not comparable
    }
    for code, (seq, checksum) in reports.items():
        status = GateStatus(
            site=SITE, gate=code, state="online", feed_seq=head, at=utcnow(), checksum=checksum, checksum_seq=seq
        )
        gate.publish(topics.status(SITE, code), status.model_dump_json(), retain=True)

    def verified() -> dict[str, Any] | None:
        body = tech.get(url, params={"verify": "true"}).json()
        gates = {g["code"]: g for g in body["gates"]}
        return gates if all(g["checksum_seq"] is not None for g in gates.values()) else None

    gates = wait_until(verified, "the three statuses stored", BOUND_S)
    assert gates is not None
    assert {code: g["in_step"] for code, g in gates.items()} == {"g1": True, "g2": False, "g3": None}
    assert {code: (g["checksum_seq"], g["checksum"]) for code, g in gates.items()} == reports
    # The verified sum is kept: without verify the gates are compared with it, until the feed moves on.
    assert {g["code"]: g["in_step"] for g in tech.get(url).json()["gates"]} == {"g1": True, "g2": False, "g3": None}


# --- snapshots ----------------------------------------------------------------------------------------


def _snapshot(api: Api, code: str, auth: tuple[str, str] | None) -> httpx.Response:
    return api.client.get(f"/api/v1/sync/sites/{code}/snapshot", auth=auth)


def test_snapshot_streams_header_tickets_and_statuses_with_a_checksum_the_gate_can_recompute(
    app: FastAPI, api: Api, settings: Settings, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    gate = add_gate(api, site["id"], "g1")
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=12)  # ids 1..12: "10" < "2"
    refunded = ticket_ids(api, order["id"])[4]
    r = api.as_(Role.CASHIER).post(f"/api/v1/orders/{order['id']}/refunds", json={"ticket_ids": [refunded]})
    assert r.status_code == 201

    r = _snapshot(api, SITE, (gate["username"], gate["secret"]))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-ndjson"
    head, *lines = r.text.splitlines()
    header = SnapshotHeader.model_validate_json(head)
    tickets = [WireTicket.model_validate_json(x) for x in lines[: header.tickets]]
    statuses = [SnapshotStatus.model_validate_json(x) for x in lines[header.tickets :]]

    assert (header.site, header.seq, header.tickets, header.gates) == (SITE, 14, 12, ["g1"])  # 1 roster, 13 sales
    assert header.keys == trusted_keys(settings)
    verify_key_set(settings.keyset_root_key.public_key(), header.keys, header.keys_signature)
    assert header.checksum == ticket_set_checksum((t.ticket_id, t.status) for t in tickets)
    assert statuses == [SnapshotStatus(ticket_id=str(refunded), status=TicketStatus.REVOKED)]
    with app.state.sessionmaker() as session:
        assert tickets == sorted((wire_ticket(t) for t in session.scalars(select(Ticket))), key=lambda t: t.ticket_id)
    assert r.headers["x-starfish-feed-seq"] == "14"


def test_snapshot_of_an_empty_site_is_a_header_alone(api: Api, site: dict[str, Any]) -> None:
    gate = add_gate(api, site["id"], "g1")
    r = _snapshot(api, SITE, (gate["username"], gate["secret"]))
    assert r.status_code == 200
    (line,) = r.text.splitlines()
    header = SnapshotHeader.model_validate_json(line)
    assert (header.seq, header.tickets, header.checksum) == (1, 0, ticket_set_checksum([]))  # seq 1: the roster
    assert header.gates == ["g1"]


def test_snapshot_built_in_small_batches_is_the_same(
    app: FastAPI, api: Api, settings: Settings, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=11)
    keys = trusted_key_set(settings)

    def body(yield_per: int) -> tuple[SnapshotHeader, bytes]:
        with app.state.sessionmaker() as session:
            snap = snapshot.build(session, site["id"], SITE, keys, yield_per=yield_per)
            return snap.header, b"".join(snap.lines())

    assert body(3) == body(2000)


def test_snapshot_ticket_lines_are_the_bytes_the_wire_model_writes_for_every_kind_of_ticket(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    gate = add_gate(api, site["id"], "g1")
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=7)
    customer_id, _ = another_customer(api, app)
    holder = add_holder(app, customer_id, 'Zoë "the \\ skier" 李\u2028\x01')
    with app.state.sessionmaker() as session:
        t = list(session.scalars(select(Ticket).where(Ticket.order_id == order["id"]).order_by(Ticket.id)))
        t[0].kind, t[0].holder_id = "season", holder
        t[1].kind, t[1].entries, t[1].entries_used = "punch", 10, 3
        t[1].first_entry_at = utcnow().replace(microsecond=0)
        t[2].kind, t[2].window_minutes, t[2].first_entry_at = "time_window", 240, utcnow()
        t[3].status = "used"
        t[4].status = "refunded"
        t[5].status = "revoked"
        t[6].valid_from = t[6].valid_from.replace(microsecond=120)
        session.commit()

    r = _snapshot(api, SITE, (gate["username"], gate["secret"]))
    head, *lines = r.content.splitlines()
    header = SnapshotHeader.model_validate_json(head)
    with app.state.sessionmaker() as session:
        wire = sorted((wire_ticket(t) for t in session.scalars(select(Ticket))), key=lambda w: w.ticket_id)
    assert lines[: header.tickets] == [w.model_dump_json().encode() for w in wire]
    revoked = [SnapshotStatus.model_validate_json(x).ticket_id for x in lines[header.tickets :]]
    assert revoked == sorted([str(t[4].id), str(t[5].id)])


def test_a_snapshot_is_read_while_it_is_written_and_a_failed_write_fails_the_reader() -> None:
    spool = snapshot.Spool()
    spool.write(b"1\n")
    assert spool.read(0) == b"1\n"
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(spool.read, 2)  # nothing there yet: the reader waits for the writer
        spool.write(b"10\n")
        assert waiting.result(15) == b"10\n"
        waiting = pool.submit(spool.read, 5)
        spool.fail(RuntimeError("the database went away"))
        with pytest.raises(RuntimeError, match="could not be written"):
            waiting.result(15)
    spool.close()


def test_snapshot_refuses_wrong_missing_and_other_site_credentials(api: Api, site: dict[str, Any]) -> None:
    gate = add_gate(api, site["id"], "g1")
    r = api.as_(Role.ADMIN).post("/api/v1/sites", json={"code": "beidahu", "name": "北大湖"})
    elsewhere = add_gate(api, r.json()["id"], "g1")
    good = (gate["username"], gate["secret"])

    assert _snapshot(api, SITE, good).status_code == 200
    assert _snapshot(api, SITE, (gate["username"], "not-the-secret")).status_code == 401
    assert _snapshot(api, SITE, ("gate-999", gate["secret"])).status_code == 401
    assert _snapshot(api, SITE, ("admin", gate["secret"])).status_code == 401
    assert _snapshot(api, SITE, None).status_code == 401
    assert _snapshot(api, SITE, (elsewhere["username"], elsewhere["secret"])).status_code == 401
    assert _snapshot(api, "beidahu", good).status_code == 401
    assert _snapshot(api, "nowhere", good).status_code == 401
    assert api.as_(Role.ADMIN).get(f"/api/v1/sync/sites/{SITE}/snapshot").status_code == 401
    body = _snapshot(api, SITE, (gate["username"], "wrong")).json()
    assert body["error"]["code"] == "gate_not_authenticated"


@pytest.mark.parametrize(
    "ids",
    [
        pytest.param(["1", "2", "3"], id="one-digit"),
        pytest.param([str(i) for i in range(1, 25)], id="crossing-ten"),
        pytest.param(["5", "50", "500", "5000", "51", "6"], id="prefixes"),
        pytest.param([], id="empty"),
    ],
)
def test_incremental_checksum_equals_the_wire_contracts(ids: list[str]) -> None:
    statuses = [TicketStatus.REVOKED if int(i) % 3 == 0 else TicketStatus.VALID for i in ids]
    checksum = snapshot.Checksum()
    for ticket_id, status in sorted(zip(ids, statuses, strict=True)):
        checksum.add(ticket_id, status)
    assert checksum.hexdigest() == ticket_set_checksum(zip(ids, statuses, strict=True))


def test_incremental_checksum_refuses_ids_out_of_order() -> None:
    checksum = snapshot.Checksum()
    checksum.add("2", TicketStatus.VALID)
    with pytest.raises(ValueError, match="out of order"):
        checksum.add("10", TicketStatus.VALID)
