"""MQTT test clients: paho on its own network thread, connected and waited for, keeping what it receives.

`connect_client(broker, username, password, ...)` connects and waits for CONNACK, raising
`ConnectRefused` on a refusal; `BrokerClient` subscribes, publishes and expects messages.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from harness.mosquitto import MosquittoProcess

TIMEOUT = 5.0


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
