"""What the gate-sync tests share: a fake cloud (snapshot server and MQTT peers) and a gate's `GateSync`.

`SnapshotServer` serves `SnapshotState` as the cloud's NDJSON snapshot over HTTP Basic auth;
`Peer`/`peer` is a paho client on its own thread (the cloud, a crashing gate, a status watcher);
`gate_sync` builds a gate's `GateSync` on a `GateStore` against an `AnonymousBroker`
(`harness.mosquitto`, the `broker` fixture) and `running` starts and stops it. Used by
tests/sync/test_gate_sync.py, test_gate_identity.py, test_gate_refused_events.py,
test_security_keys.py and test_security_peer_events.py; the fixtures are in conftest.py.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.store import GateStore, JournalEntry
from edge.sync_port import StorePort
from harness.keys import KEY_ROOT, KEYSET_ROOT
from harness.mosquitto import AnonymousBroker
from harness.processes import eventually
from harness.tickets import NOW, make_ticket
from models import Direction, Outcome, ProductKind, Ticket, TicketStatus
from models.credential import public_key_b64
from models.keyset import sign_key_set
from models.ops import TechnicianAccount
from models.sync import (
    EventAck,
    FeedMessage,
    SnapshotFace,
    SnapshotHeader,
    SnapshotStatus,
    TicketSetChecksum,
    parse_events,
)
from models.sync_config import SyncConfig
from sync import topics
from sync.gate import GateSync

SITE = "nanshan"
USER, PASSWORD = "nanshan-g1", "gate-s3cret"
DEADLINE = 10.0


def sync_config(broker: AnonymousBroker, snapshot_base: str, gate: str = "g1", **overrides: Any) -> SyncConfig:
    return SyncConfig(
        site=SITE,
        gate=gate,
        broker_host="127.0.0.1",
        broker_port=broker.port,
        username=USER,
        snapshot_url=snapshot_base,
        key_root=KEY_ROOT,
        **overrides,
    )


# --- the fake cloud ---------------------------------------------------------------------------


@dataclass
class SnapshotState:
    seq: int = 0
    tickets: list[Ticket] = field(default_factory=list)
    statuses: dict[str, TicketStatus] = field(default_factory=dict)
    keys: dict[int, str] = field(default_factory=lambda: {1: key_b64()})  # the cloud always sends its keys
    key_root: Ed25519PrivateKey = KEYSET_ROOT  # who signs `keys`
    corrupt: bool = False
    epoch: str = ""
    faces: list[SnapshotFace] = field(default_factory=list)  # none: a header without `faces`, as an older cloud's
    faces_announced: int | None = None  # what the header claims, when not len(faces)
    extra_lines: list[str] = field(default_factory=list)  # sent after the face lines
    technicians: list[TechnicianAccount] | None = None  # none: a header without `technicians`, as an older cloud's

    def checksum(self) -> str:
        checksum = TicketSetChecksum()
        for ticket_id, status in sorted((t.ticket_id, self.statuses.get(t.ticket_id, t.status)) for t in self.tickets):
            checksum.add(ticket_id, status)
        for face in sorted(self.faces, key=lambda f: f.ticket_id):
            checksum.add_face(face.ticket_id, face.holder_id, face.sealed)
        return checksum.hexdigest()

    def ndjson(self) -> bytes:
        header = SnapshotHeader(
            site=SITE,
            epoch=self.epoch,
            seq=self.seq,
            tickets=len(self.tickets),
            checksum="0" * 64 if self.corrupt else self.checksum(),
            keys=self.keys,
            keys_signature=sign_key_set(self.key_root, self.keys),
            faces=self.faces_announced if self.faces_announced is not None else (len(self.faces) or None),
            technicians=self.technicians,
        )
        lines = [header.model_dump_json()]
        lines += [t.model_dump_json() for t in self.tickets]
        lines += [SnapshotStatus(ticket_id=k, status=v).model_dump_json() for k, v in self.statuses.items()]
        lines += [f.model_dump_json() for f in self.faces] + self.extra_lines
        return ("\n".join(lines) + "\n").encode()


class SnapshotServer:
    """GET /api/v1/sync/sites/<site>/snapshot with HTTP Basic auth, streamed line by line."""

    def __init__(self) -> None:
        self.state = SnapshotState()
        self.served: list[int] = []  # seq of every snapshot served
        self.refused = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    server.refused += 1
                    self.send_error(401)
                    return
                if self.path != f"/api/v1/sync/sites/{SITE}/snapshot":
                    self.send_error(404)
                    return
                body = server.state.ndjson()
                server.served.append(server.state.seq)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for line in body.splitlines(keepends=True):
                    self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        Handler.protocol_version = "HTTP/1.1"
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Peer:
    """A paho client on its own thread: the cloud, a crashing gate, or a status watcher."""

    def __init__(
        self, broker: AnonymousBroker, client_id: str = "", *, persistent: bool = False, manual_ack: bool = False
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack
        )
        self.messages: list[mqtt.MQTTMessage] = []
        self.auto_ack_events = False
        self.subscriptions: list[str] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", broker.port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        if not self._connected.wait(DEADLINE):
            raise AssertionError("peer did not connect")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        for t in self.subscriptions:
            client.subscribe(t, qos=1)
        self._connected.set()

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)
        if self.auto_ack_events and msg.topic.endswith("/events"):
            ids = [e.event_id for e in parse_events(msg.payload)]
            gate = msg.topic.split("/")[3]
            client.publish(topics.acks(SITE, gate), EventAck(event_ids=ids).model_dump_json(), qos=1)

    def subscribe(self, topic: str) -> None:
        self.subscriptions.append(topic)
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(DEADLINE), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(DEADLINE)
        assert info.is_published()

    def feed(self, seq: int, change: Any, site: str = SITE, epoch: str = "") -> None:
        message = FeedMessage(site=site, epoch=epoch, seq=seq, at=NOW, change=change)
        self.publish(topics.feed(SITE), message.model_dump_json())

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def peer(broker: AnonymousBroker, *subscribe: str, client_id: str = "", persistent: bool = False) -> Iterator[Peer]:
    p = Peer(broker, client_id, persistent=persistent)
    for t in subscribe:
        p.subscribe(t)
    try:
        yield p
    finally:
        p.close()


@contextlib.asynccontextmanager
async def running(sync: GateSync, *, settled: bool = True) -> AsyncIterator[GateSync]:
    sync.start()
    try:
        if settled:
            await eventually(lambda: sync.connected and not sync.resyncing, "gate connected and in step")
        yield sync
    finally:
        await sync.stop()


def gate_sync(store: GateStore, broker: AnonymousBroker, snapshots: SnapshotServer | str, **kw: Any) -> GateSync:
    base = snapshots if isinstance(snapshots, str) else snapshots.base
    service = kw.pop("service", None)
    faces = kw.pop("faces", None)
    health = kw.pop("health", None)
    gate = kw.pop("gate", "g1")
    clock = kw.pop("clock", None)
    return GateSync(
        sync_config(broker, base, gate, **kw),
        port=StorePort(store, gate_id=gate, service=service, faces=faces, health=health),
        password=PASSWORD,
        tick_s=0.1,
        **({} if clock is None else {"clock": clock}),
    )


def key_b64() -> str:
    return public_key_b64(Ed25519PrivateKey.generate().public_key())


def voucher(ticket_id: str, code: str, **kw: Any) -> Ticket:
    return make_ticket(ProductKind.DAY, ticket_id=ticket_id, code=code, **kw)


# --- up: a gate's journal and the events it publishes ----------------------------------------


def journal_passage(store: GateStore, ticket_id: str, gate_id: str = "g1") -> uuid.UUID:
    entry = JournalEntry(
        event_id=uuid.uuid4(),
        at=NOW,
        gate_id=gate_id,
        site_id=SITE,
        direction=Direction.IN,
        ticket_id=ticket_id,
        credential="signed",
        outcome=Outcome.ADMIT,
        code="ok",
        passed=True,
        counted=True,
        resolution="sensor",
    )
    store.record(entry)
    return entry.event_id


def event_ids(messages: list[mqtt.MQTTMessage]) -> list[uuid.UUID]:
    return [e.event_id for m in messages for e in parse_events(m.payload)]
