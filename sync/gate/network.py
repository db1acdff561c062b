"""The gate's end of the link: paho's network thread hands frozen values to the event loop, nothing more.

Owns the `MqttLink` (the paho client), the inbox the event loop reads, and, on the loop's side,
which connection is current and whether it is up: a message is acknowledged only on the
connection that delivered it, and only while that connection is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from models.sync_config import SyncConfig
from sync.link import Delivery, Login, MqttLink, Received

log = logging.getLogger("starfish.sync")

NOT_AUTHORIZED = 135  # MQTT v5 reason code of a PUBACK the broker's ACL refused


@dataclass(frozen=True, slots=True)
class Connected:
    gen: int
    session_present: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    gen: int
    reason: str


@dataclass(frozen=True, slots=True)
class Authorization:
    """The broker began (or stopped) refusing this gate's publishes as not authorized (reason 135)."""

    denied: bool
    reason: str


class Signal(enum.Enum):
    NUDGE = "nudge"
    TICK = "tick"
    STOP = "stop"


Item = Received | Connected | Disconnected | Authorization | Signal


class GateLink:
    """One gate's MQTT connection, seen from the event loop that owns the gate's sync state."""

    def __init__(
        self,
        config: SyncConfig,
        *,
        client_id: str,
        password: str | None,
        subscriptions: list[tuple[str, SubscribeOptions]],
    ) -> None:
        self.inbox: asyncio.Queue[Item] = asyncio.Queue()
        self.gen = 0  # the connection the loop last heard of
        self.connected = False
        self._subscriptions = subscriptions
        self._loop: asyncio.AbstractEventLoop | None = None
        login = Login(
            host=config.broker_host,
            port=config.broker_port,
            client_id=client_id,
            username=config.username,
            password=password,
            tls_ca=None if config.tls_ca is None else str(config.tls_ca),
            keepalive_s=config.keepalive_s,
            session_expiry_s=config.session_expiry_s,
            receive_maximum=config.receive_maximum,
            reconnect_max_s=config.reconnect_max_s,
        )
        # paho's own logger stays off: it reports every clean disconnect as an error.
        self.mqtt = MqttLink(
            login,
            log=log,
            prefix="sync: ",
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_message=self.post,
        )
        self.mqtt.client.on_publish = self._on_publish
        self._denied = False  # paho's network thread: the last PUBACK said not authorized

    @property
    def client(self) -> mqtt.Client:
        return self.mqtt.client

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.mqtt.start()

    async def close(self) -> None:
        self.connected = False
        await asyncio.to_thread(self.mqtt.stop)

    # --- paho's network thread ----------------------------------------------------------------

    def post(self, item: Item) -> None:
        """Hand `item` to the event loop (safe from any thread)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
            loop.call_soon_threadsafe(self.inbox.put_nowait, item)

    def _on_connect(self, client: mqtt.Client, gen: int, session_present: bool) -> None:
        client.subscribe(self._subscriptions)
        self.post(Connected(gen, session_present))

    def _on_disconnect(self, gen: int, rc: ReasonCode) -> None:
        self.post(Disconnected(gen, str(rc)))

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, rc: ReasonCode, _p: Properties | None) -> None:
        # A gate publishes only on its own topics: a refusal there means its login is another gate's.
        if rc.is_failure and rc.value != NOT_AUTHORIZED:
            return  # another trouble (a quota, a size): nothing to do with the gate's name
        if rc.is_failure != self._denied:
            self._denied = rc.is_failure
            self.post(Authorization(rc.is_failure, str(rc)))

    # --- the event loop -------------------------------------------------------------------------

    def up(self, item: Connected) -> None:
        self.gen = item.gen
        self.connected = True

    def down(self, item: Disconnected) -> bool:
        """The connection went down; False if it was an older one than the current."""
        if item.gen != self.gen or not self.connected:
            return False
        self.connected = False
        return True

    def ack(self, delivery: Delivery) -> None:
        if delivery.generation == self.gen and self.connected:
            self.mqtt.ack(delivery)  # which also holds it to paho's own count: the loop may lag a reconnect

    def reject(self, item: Received, why: str) -> None:
        log.warning("sync: dropped a message on %s: %s", item.topic, why)
        self.ack(item.delivery)

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> mqtt.MQTTMessageInfo | None:
        """QoS 1; None while not connected (the caller publishes again once it is)."""
        if not self.connected:
            return None
        return self.mqtt.client.publish(topic, payload, qos=1, retain=retain)
