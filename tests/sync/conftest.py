"""Broker fixtures for sync tests: real Mosquitto brokers on free loopback ports, paho-mqtt clients.

`mosquitto_factory(sites, role=...)` starts a broker from a registry (stopped at teardown);
`mqtt_client(broker, username, password, ...)` connects and waits for CONNACK, raising
`ConnectRefused` on a refusal. `make_site` and `make_pki` build registries and test certificates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from harness.mosquitto import MosquittoProcess
from sync.mosquitto import BridgeTo, GateAccount, Role, SiteRegistry, TlsFiles

if TYPE_CHECKING:
    from tests.sync.test_gate_sync import Broker, SnapshotServer

CLOUD_USER = "cloud"
TIMEOUT = 5.0


def password_of(username: str) -> str:
    """The password `make_site` gives each account: tests log in without carrying secrets around."""
    return f"pw-{username}-s3cret"


def make_site(site: str, gates: Sequence[str] = ("g1", "g2"), *, bridge: BridgeTo | None = None) -> SiteRegistry:
    """A registry for `site`: gate `<g>` logs in as `<site>-<g>` (the cloud uses gate-<id>)."""
    accounts = [GateAccount(gate=g, username=f"{site}-{g}", password=password_of(f"{site}-{g}")) for g in gates]
    return SiteRegistry(site, accounts, CLOUD_USER, password_of(CLOUD_USER), bridge=bridge)


def make_pki(directory: Path, *, name: str = "Starfish test CA") -> TlsFiles:
    """A fresh CA and a server certificate for localhost / 127.0.0.1 signed by it (EC P-256)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.cafile.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.keyfile.chmod(0o600)
    return files


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT, *, interval: float = 0.02) -> None:
    """Poll until condition holds; a generous bound so a broken setup fails rather than hangs.

    `interval`: longer for a condition that costs the peers something (a snapshot, a file opened).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout}s: {what}")
        time.sleep(interval)


class ConnectRefused(Exception):
    """The broker answered CONNACK with a failure reason code."""

    def __init__(self, reason: ReasonCode) -> None:
        super().__init__(f"connection refused: {reason}")
        self.reason = reason


class BrokerClient:
    """A connected paho client on its own network thread, keeping what it receives."""

    def __init__(self, client: mqtt.Client, name: str) -> None:
        self.client = client
        self.name = name
        self.session_present = False
        self._cond = threading.Condition()
        self._messages: list[mqtt.MQTTMessage] = []
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._pubacks: dict[int, ReasonCode] = {}
        self.disconnected = threading.Event()
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: list[ReasonCode], _p: Properties | None) -> None:
        with self._cond:
            self._subacks[mid] = codes
            self._cond.notify_all()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties) -> None:
        with self._cond:
            self._pubacks[mid] = reason

    def _on_disconnect(self, *_args: Any) -> None:
        self.disconnected.set()

    def subscribe(self, *topic_filters: str, qos: int = 1, timeout: float = TIMEOUT) -> list[ReasonCode]:
        """Subscribe and wait for SUBACK; the broker's reason code per filter (>= 0x80: refused)."""
        rc, mid = self.client.subscribe([(t, qos) for t in topic_filters])
        assert rc == mqtt.MQTT_ERR_SUCCESS and mid is not None, f"{self.name}: subscribe failed: {rc}"
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacks, timeout):
                raise AssertionError(f"{self.name}: no SUBACK for {topic_filters}")
            return self._subacks.pop(mid)

    def publish(
        self, topic: str, payload: str | bytes, *, qos: int = 1, retain: bool = False, timeout: float = TIMEOUT
    ) -> ReasonCode:
        """Publish and, for QoS > 0, wait for PUBACK; its reason code (MQTT 3.1.1: always Success)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise AssertionError(f"{self.name}: {topic} not acknowledged within {timeout}s")
        with self._cond:
            return self._pubacks.pop(info.mid)

    def expect(self, topic: str | None = None, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        """The oldest message received (on `topic`), waiting for one; it is taken off the list."""
        with self._cond:
            found = self._cond.wait_for(lambda: self._first(topic) is not None, timeout)
            if not found:
                seen = [m.topic for m in self._messages]
                raise AssertionError(f"{self.name}: nothing on {topic or 'any topic'} within {timeout}s; has {seen}")
            msg = self._first(topic)
            assert msg is not None
            self._messages.remove(msg)
            return msg

    def _first(self, topic: str | None) -> mqtt.MQTTMessage | None:
        return next((m for m in self._messages if topic is None or m.topic == topic), None)

    def received(self, topic: str | None = None) -> list[mqtt.MQTTMessage]:
        with self._cond:
            return [m for m in self._messages if topic is None or m.topic == topic]

    def sever(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a crash or a cut cable would (the Will fires)."""
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # first: it also wakes the network thread at once
        self.client.loop_stop()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


class MqttClientFactory(Protocol):
    def __call__(
        self,
        broker: MosquittoProcess,
        username: str | None,
        password: str | None = ...,
        *,
        client_id: str = ...,
        clean_session: bool = ...,
        protocol: MQTTProtocolVersion = ...,
        will: tuple[str, str | bytes, int, bool] | None = ...,
        tls: bool | Path = ...,
        timeout: float = ...,
    ) -> BrokerClient: ...


class MosquittoFactory(Protocol):
    def __call__(
        self,
        sites: SiteRegistry | Sequence[SiteRegistry],
        *,
        role: Role = ...,
        name: str | None = ...,
        port: int | None = ...,
        tls: TlsFiles | None = ...,
        tls_port: int | None = ...,
    ) -> MosquittoProcess: ...


def connect_client(
    broker: MosquittoProcess,
    username: str | None,
    password: str | None = None,
    *,
    client_id: str = "",
    clean_session: bool = True,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    will: tuple[str, str | bytes, int, bool] | None = None,
    tls: bool | Path = False,
    timeout: float = TIMEOUT,
) -> BrokerClient:
    """Connect and wait for CONNACK. `tls`: a CA file, or True for the system CAs (TLS listener).

    Raises `ConnectRefused` on a refused CONNACK, `ssl.SSLError` when the certificate does not verify.
    """
    v5 = protocol == MQTTProtocolVersion.MQTTv5
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else clean_session,
        protocol=protocol,
        reconnect_on_failure=False,
    )
    name = client_id or username or "anonymous"
    wrapped = BrokerClient(client, name)
    if username is not None:
        client.username_pw_set(username, password)
    if will is not None:
        topic, payload, qos, retain = will
        client.will_set(topic, payload, qos=qos, retain=retain)
    port = broker.port
    if tls is not False:
        client.tls_set(ca_certs=None if tls is True else str(tls), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        port = broker.tls_port
    assert port is not None, "broker not started"

    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, _p: Any) -> None:
        result["reason"], result["session_present"] = reason, flags.session_present
        done.set()

    client.on_connect = on_connect
    properties = None
    if v5 and not clean_session:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
    client.connect(
        broker.connect_host,
        port,
        keepalive=10,
        clean_start=clean_session if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
    )
    client.loop_start()
    deadline = time.monotonic() + timeout
    while not done.wait(0.02) and not wrapped.disconnected.is_set() and time.monotonic() < deadline:
        pass
    if "reason" not in result:
        client.loop_stop()
        raise AssertionError(f"{name}: no CONNACK from {broker.connect_host}:{port} (closed, or over {timeout}s)")
    reason: ReasonCode = result["reason"]
    if reason.is_failure:
        client.loop_stop()
        raise ConnectRefused(reason)
    wrapped.session_present = bool(result["session_present"])
    return wrapped


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
    brokers: list[MosquittoProcess] = []

    def start(
        sites: SiteRegistry | Sequence[SiteRegistry],
        *,
        role: Role = "site",
        name: str | None = None,
        port: int | None = None,
        tls: TlsFiles | None = None,
        tls_port: int | None = None,
    ) -> MosquittoProcess:
        name = name or f"{role}-{len(brokers)}"
        workdir = tmp_path / "brokers" / name
        broker = MosquittoProcess(sites, role=role, workdir=workdir, port=port, tls=tls, tls_port=tls_port)
        brokers.append(broker)
        return broker.start()

    yield start
    for b in brokers:
        b.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A plain anonymous Mosquitto (`tests.sync.test_gate_sync.Broker`), for the gate-sync tests."""
    from tests.sync.test_gate_sync import Broker

    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def snapshots() -> Iterator[SnapshotServer]:
    """The fake cloud's snapshot endpoint (`tests.sync.test_gate_sync.SnapshotServer`)."""
    from tests.sync.test_gate_sync import SnapshotServer

    s = SnapshotServer()
    yield s
    s.close()
