"""One MQTT v5 connection as both sync clients (the gate's and the cloud's) hold it.

A persistent session (``clean_start`` false, a session expiry), a Receive Maximum, manual
acknowledgement, paho's own reconnect with backoff. The link owns the paho client, the
connection generation and the telling of refusals; its callbacks run on paho's network thread
and only hand over: `on_connect(client, generation, session_present)`, `on_disconnect(generation,
reason)` and `on_message(Received)`. A message over `MAX_MESSAGE_BYTES` is acknowledged and
dropped there, never handed over. A PUBACK must go back on the connection that delivered the
message (`Received.generation`): a message id means nothing on the next one.

MQTT v5 because its Receive Maximum lets a client hold messages unacknowledged (a gate during a
snapshot, the cloud while a batch commits) without the broker's ``max_inflight_messages`` cap
of v3.1.1 clients (20 by default in Mosquitto).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from models.sync import MAX_MESSAGE_BYTES

UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What acknowledging one message takes: on the connection that delivered it only."""

    generation: int
    mid: int
    qos: int


@dataclass(frozen=True, slots=True)
class Received:
    """One message as paho delivered it, frozen for the thread that owns what it carries."""

    topic: str
    payload: bytes
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class Login:
    """Where and as whom a link connects."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 1000
    reconnect_max_s: int = 30


class MqttLink:
    """The paho client of one login; `start()` connects (retrying in the background), `stop()` ends it."""

    def __init__(
        self,
        login: Login,
        *,
        log: logging.Logger,
        prefix: str = "",
        on_connect: Callable[[mqtt.Client, int, bool], None],
        on_disconnect: Callable[[int, ReasonCode], None],
        on_message: Callable[[Received], None],
        paho_log: logging.Logger | None = None,
    ) -> None:
        self.login = login
        self._log = log
        self._prefix = prefix  # before each line this link logs ("sync: ")
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        self._on_message_cb = on_message
        # Written by paho's network thread only.
        self.generation = 0
        self._last_refusal = ""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=login.client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        # A bug in a callback is logged by the callback; it must not end the network loop.
        client.suppress_exceptions = True
        if paho_log is not None:
            client.enable_logger(paho_log)
        if login.username is not None:
            client.username_pw_set(login.username, login.password)
        if login.tls_ca:
            client.tls_set(ca_certs=login.tls_ca)
        client.max_inflight_messages_set(100)
        client.reconnect_delay_set(1, login.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    def start(self) -> None:
        """Connect in the background (paho retries while the broker is away) and run the network thread."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.login.session_expiry_s
        props.ReceiveMaximum = self.login.receive_maximum
        self.client.connect_async(
            self.login.host, self.login.port, self.login.keepalive_s, clean_start=False, properties=props
        )
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and end the network thread (blocking: call it from a worker thread on a loop)."""
        self.client.disconnect()
        self.client.loop_stop()

    def ack(self, delivery: Delivery) -> None:
        """Send the PUBACK (any thread: paho locks), only on the connection `delivery` came on: a message id
        means nothing on the next one, and may name another message there."""
        if delivery.generation == self.generation:
            self.client.ack(delivery.mid, delivery.qos)

    @property
    def where(self) -> str:
        return f"{self.login.host}:{self.login.port}"

    # --- paho's network thread: hand over, touch nothing ---------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if rc.is_failure:
            if str(rc) != self._last_refusal:  # once per cause, not at every retry
                self._log.error(
                    "%sbroker %s refused %s (user %s): %s",
                    self._prefix,
                    self.where,
                    self.login.client_id,
                    self.login.username,
                    rc,
                )
                self._last_refusal = str(rc)
            return
        self._last_refusal = ""
        self.generation += 1
        self._on_connect_cb(client, self.generation, flags.session_present)

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        # paho keeps the cause to itself (refused, unreachable, TLS); say it once per outage.
        if self._last_refusal != UNREACHABLE:
            tls = " over TLS (check tls_ca and the host name)" if self.login.tls_ca else ""
            self._log.error("%scannot reach broker %s%s; retrying", self._prefix, self.where, tls)
            self._last_refusal = UNREACHABLE

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: mqtt.DisconnectFlags, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self._on_disconnect_cb(self.generation, rc)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self._log.warning("%sdropped a message whose topic is not UTF-8", self._prefix)
            client.ack(msg.mid, msg.qos)
            return
        if len(msg.payload) > MAX_MESSAGE_BYTES:  # never parsed, never stored: acknowledged and gone
            self._log.warning(
                "%sdropped a message of %d bytes on %s: over %d",
                self._prefix,
                len(msg.payload),
                topic,
                MAX_MESSAGE_BYTES,
            )
            client.ack(msg.mid, msg.qos)
            return
        try:
            self._on_message_cb(Received(topic, bytes(msg.payload), Delivery(self.generation, msg.mid, msg.qos)))
        except Exception:
            self._log.exception("%scould not hand over a message on %s", self._prefix, topic)
