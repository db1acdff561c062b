"""Which gates need a technician: each gate's last status and health, lag, in step, and the attention codes.

Statuses come in as the cloud's consumer takes them: parsed from the gate's status topic and payload
(`cloud.sync.inbound.parse`), stored by `cloud.sync.service.store` with an explicit clock; one scenario
goes through a real Mosquitto end to end, as does the feed head carrying the cloud's checksum.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from cloud.app import create_app
from cloud.db import utcnow
from cloud.deps import Role
from cloud.settings import Settings
from cloud.sync import checksums, inbound, service, snapshot
from cloud.sync.feed import mark_published
from cloud.sync.gate_status import site_sync_status
from cloud.sync.models import FeedChange
from harness.api import Api
from harness.mosquitto import AnonymousBroker
from harness.processes import wait_until
from models.ops import GateHealth
from models.sync import FeedHead, GateStatus
from sync import topics
from tests.cloud.api import next_weekday
from tests.cloud.paid_orders import sell_paid

SITE = "nanshan"
BOUND_S = 15.0  # a bound on waiting for the broker and the cloud, never an assertion about speed
HEALTHY = GateHealth(
    version="1.0", uptime_s=600, camera="ok", scanner="ok", oldest_unacked_s=4, disk_free_mb=20_000, tickets=10
)


def add_gate(api: Api, site_id: int, code: str) -> None:
    r = api.as_(Role.ADMIN).post(f"/api/v1/sites/{site_id}/gates", json={"code": code, "name": code.upper()})
    assert r.status_code == 201, r.text


def publish_feed(app: FastAPI, at: datetime) -> None:
    """The cloud's publisher has sent every change so far, the broker acknowledging them at `at`."""
    with app.state.sessionmaker() as session:
        ids = list(session.scalars(select(FeedChange.id).where(FeedChange.published_at.is_(None))))
        mark_published(session, ids, now=at)


def report(app: FastAPI, gate: str, payload: bytes, *, received: datetime) -> None:
    """The gate's status as the cloud's consumer takes it off the broker, received at `received`."""
    items = inbound.parse(topics.status(SITE, gate), payload)
    assert items, "a status the cloud refused"
    with app.state.sessionmaker() as session:
        assert service.store(session, items, now=received).statuses == 1


def status(gate: str, feed_seq: int, at: datetime, **kw: Any) -> bytes:
    kw.setdefault("health", HEALTHY)
    return GateStatus(site=SITE, gate=gate, state="online", feed_seq=feed_seq, at=at, **kw).model_dump_json().encode()


def gates_status(api: Api, site_id: int, **params: str) -> dict[str, Any]:
    r = api.as_(Role.GATE_TECH).get(f"/api/v1/sites/{site_id}/gates/status", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def gate_of(body: dict[str, Any], code: str) -> dict[str, Any]:
    return dict(next(g for g in body["gates"] if g["code"] == code))


def test_a_healthy_gate_needs_no_one_and_its_health_lag_and_figures_are_shown(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    add_gate(api, site["id"], "g1")
    add_gate(api, site["id"], "g2")  # head 2: a roster per gate
    now = utcnow()
    report(app, "g1", status("g1", 2, now, outbox_depth=3), received=now)
    body = gates_status(api, site["id"])
    g1 = gate_of(body, "g1")
    assert GateHealth.model_validate(g1["health"]) == HEALTHY
    assert (g1["lag"], g1["outbox_depth"], g1["attention"], g1["needs_technician"]) == (0, 3, [], False)
    g2 = gate_of(body, "g2")
    assert (g2["health"], g2["lag"], g2["attention"]) == (None, None, ["never_reported"])
    assert body["needing_technician"] == ["g2"]

    report(app, "g2", status("g2", 1, now, health=None), received=now)  # an older gate: no health, catching up
    g2 = gate_of(gates_status(api, site["id"]), "g2")
    assert (g2["health"], g2["lag"], g2["attention"], g2["needs_technician"]) == (None, 1, [], False)


AGO = timedelta(minutes=2)


@pytest.mark.parametrize(
    ("code", "health", "extra", "received_ago", "said_ago"),
    [
        pytest.param("silent", {}, {}, AGO, AGO, id="silent-online-but-no-status-for-two-minutes"),
        pytest.param("backlog", {"oldest_unacked_s": 301}, {}, timedelta(0), timedelta(0), id="backlog"),
        pytest.param("problem", {}, {"problem": "the broker refuses what I publish"}, timedelta(0), timedelta(0)),
        pytest.param("barrier_fault", {"barrier": "error", "barrier_error": "no answer from slave 1"}, {}, None, None),
        pytest.param("camera_error", {"camera": "error", "camera_error": "/dev/video0 gone"}, {}, None, None),
        pytest.param("scanner_error", {"scanner": "error", "scanner_error": "read timeout"}, {}, None, None),
        pytest.param("disk_low", {"disk_free_mb": 499}, {}, None, None),
        pytest.param("fire_alarm", {"fire_alarm": True, "keep_open": True}, {}, None, None),
        pytest.param("keep_open", {"keep_open": True}, {}, None, None),
    ],
)
def test_each_reason_a_gate_needs_a_technician_is_named(
    app: FastAPI,
    api: Api,
    site: dict[str, Any],
    code: str,
    health: dict[str, Any],
    extra: dict[str, Any],
    received_ago: timedelta | None,
    said_ago: timedelta | None,
) -> None:
    add_gate(api, site["id"], "g1")
    add_gate(api, site["id"], "ok")
    now = utcnow()
    report(app, "ok", status("ok", 2, now), received=now)
    kw: dict[str, Any] = {"feed_seq": 2, "health": HEALTHY.model_copy(update=health)} | extra
    said = now - (said_ago or timedelta(0))
    report(app, "g1", status("g1", at=said, **kw), received=now - (received_ago or timedelta(0)))
    body = gates_status(api, site["id"])
    expected = ["fire_alarm", "keep_open"] if code == "fire_alarm" else [code]  # free passage holds it open
    assert (gate_of(body, "g1")["attention"], gate_of(body, "g1")["needs_technician"]) == (expected, True)
    assert body["needing_technician"] == ["g1"]


def test_limits_are_not_reasons_until_passed(app: FastAPI, api: Api, site: dict[str, Any]) -> None:
    add_gate(api, site["id"], "g1")
    now = utcnow()
    edge = HEALTHY.model_copy(update={"oldest_unacked_s": 300, "disk_free_mb": 500})
    publish_feed(app, now)
    report(app, "g1", status("g1", 0, now - timedelta(seconds=50), health=edge), received=now - timedelta(seconds=80))
    assert gate_of(gates_status(api, site["id"]), "g1")["attention"] == []
    # Seen from later on (an explicit clock): silent after 90 s, behind once the change it lacks is 60 s old.
    with app.state.sessionmaker() as session:
        later = site_sync_status(session, site["id"], now=now + timedelta(seconds=11))
        assert later.gates[0].attention == ["silent"]
        later = site_sync_status(session, site["id"], now=now + timedelta(seconds=61))
    assert later.gates[0].attention == ["silent", "behind"]


def test_a_live_gate_stuck_below_the_head_is_behind_though_it_reports_on_time(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    add_gate(api, site["id"], "g1")  # feed: the roster, seq 1
    now = utcnow()
    report(app, "g1", status("g1", 0, now), received=now)  # just now, and still without seq 1
    with app.state.sessionmaker() as session:
        unsent = site_sync_status(session, site["id"], now=now + timedelta(seconds=61))
    assert unsent.gates[0].attention == []  # the cloud has not published seq 1 yet: no gate's fault
    publish_feed(app, now)
    with app.state.sessionmaker() as session:
        assert site_sync_status(session, site["id"], now=now).gates[0].attention == []  # it may yet catch up
        stuck = site_sync_status(session, site["id"], now=now + timedelta(seconds=61))
    assert stuck.gates[0].attention == ["behind"]  # its status is fresh (30 s heartbeats); the change is not


def test_an_offline_gate_is_named_with_what_it_last_said(app: FastAPI, api: Api, site: dict[str, Any]) -> None:
    add_gate(api, site["id"], "g1")
    now = utcnow()
    report(app, "g1", status("g1", 1, now, health=HEALTHY.model_copy(update={"keep_open": True})), received=now)
    report(app, "g1", b"offline", received=now)  # its bare Last Will
    g1 = gate_of(gates_status(api, site["id"]), "g1")
    assert (g1["state"], g1["attention"]) == ("offline", ["offline", "keep_open"])
    assert g1["health"]["keep_open"] is True


def test_in_step_comes_from_the_clouds_last_checksum_without_verify(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    for code in ("g1", "g2", "g3", "g4"):
        add_gate(api, site["id"], code)
    sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=2)
    with app.state.sessionmaker() as session:
        summed = snapshot.site_checksum(session, site["id"])  # as the periodic recompute does
        assert (checksums.cached(session, site["id"]) or pytest.fail("not kept")).checksum == summed.checksum
    seq, good = summed.seq, summed.checksum
    now = utcnow()
    report(app, "g1", status("g1", seq, now, checksum=good, checksum_seq=seq), received=now)
    report(app, "g2", status("g2", seq, now, checksum="0" * 64, checksum_seq=seq), received=now)
    report(app, "g3", status("g3", seq, now, checksum="0" * 64, checksum_seq=seq - 1), received=now)
    said_so = HEALTHY.model_copy(update={"in_step": False})  # its own comparison with a feed head's checksum
    report(app, "g4", status("g4", seq, now, checksum="1" * 64, checksum_seq=seq - 1, health=said_so), received=now)
    body = gates_status(api, site["id"])
    assert body["checksum"] is None, "nothing summed by this call"
    got = {g["code"]: (g["in_step"], g["attention"]) for g in body["gates"]}
    assert got == {
        "g1": (True, []),
        "g2": (False, ["not_in_step"]),
        "g3": (None, []),
        "g4": (False, ["not_in_step"]),
    }
    assert body["needing_technician"] == ["g2", "g4"]


# --- over a real broker -----------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[AnonymousBroker]:
    with AnonymousBroker(tmp_path / "mosquitto", startup_timeout=BOUND_S) as broker:
        yield broker


@pytest.fixture
def app(settings: Settings, request: pytest.FixtureRequest) -> FastAPI:
    """Overrides conftest's app: for a test with a `gate`, MQTT on its own broker, heads every 0.2 s and a
    site's checksum recomputed as soon as its feed moved; the same cloud without MQTT for the others."""
    if "gate" not in request.fixturenames:
        return create_app(settings, expiry_every_s=0)
    broker: AnonymousBroker = request.getfixturevalue("broker")
    update = {
        "mqtt_host": "127.0.0.1",
        "mqtt_port": broker.port,
        "sync_poll_seconds": 60.0,
        "sync_heartbeat_seconds": 0.2,
        "checksum_interval_s": 0.05,
    }
    return create_app(settings.model_copy(update=update), expiry_every_s=0)


class Gate:
    """A plain MQTT client standing in for a gate: publishes its status, listens to its site's feed head."""

    def __init__(self, broker: AnonymousBroker) -> None:
        self.heads: queue.Queue[FeedHead] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gate-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda _c, _u, msg: self.heads.put(FeedHead.model_validate_json(msg.payload))
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe(topics.head(SITE), qos=1)

    def publish_status(self, payload: bytes) -> None:
        self.client.publish(topics.status(SITE, "g1"), payload, qos=1, retain=True).wait_for_publish(10)

    def head_with(self, seq: int) -> FeedHead:
        """The next feed head whose checksum was taken at `seq` (heads keep coming: bounded by a deadline)."""
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            head = self.heads.get(timeout=BOUND_S)
            if head.checksum_seq == seq:
                return head
        raise AssertionError(f"no feed head with the checksum at seq {seq}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gate(app: FastAPI, client: TestClient, broker: AnonymousBroker) -> Iterator[Gate]:
    assert app.state.sync.subscribed.wait(BOUND_S), "the cloud never subscribed"
    g = Gate(broker)
    yield g
    g.close()


def test_a_gates_health_sent_over_the_broker_shows_who_needs_a_technician(
    api: Api, site: dict[str, Any], gate: Gate
) -> None:
    add_gate(api, site["id"], "g1")
    sick = HEALTHY.model_copy(update={"camera": "error", "camera_error": "no frame for 10 s", "keep_open": True})
    gate.publish_status(status("g1", 1, utcnow(), health=sick, outbox_depth=5))

    def g1() -> dict[str, Any] | None:
        body = gates_status(api, site["id"])
        return body if gate_of(body, "g1")["health"] is not None else None

    body = wait_until(g1, "the gate's health stored", BOUND_S)
    assert body is not None and body["needing_technician"] == ["g1"]
    got = gate_of(body, "g1")
    assert (got["attention"], got["outbox_depth"], got["lag"]) == (["camera_error", "keep_open"], 5, 0)
    assert got["health"]["camera_error"] == "no frame for 10 s"


def test_the_feed_head_carries_the_clouds_checksum_recomputed_when_the_feed_moved(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any], gate: Gate
) -> None:
    add_gate(api, site["id"], "g1")
    first = gate.head_with(1)  # the roster alone: summed by the recompute, no verify asked
    with app.state.sessionmaker() as session:
        assert first.checksum == snapshot.site_checksum(session, site["id"]).checksum
    sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=3)
    seq = gates_status(api, site["id"])["feed_seq"]
    moved = gate.head_with(seq)  # summed again by the recompute: the feed moved
    verified = gates_status(api, site["id"], verify="true")
    assert (verified["feed_seq"], verified["checksum"]) == (seq, moved.checksum)
    assert moved.checksum != first.checksum and (moved.site, moved.seq) == (SITE, seq)
