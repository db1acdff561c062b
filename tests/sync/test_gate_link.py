"""The gate's link acknowledges a message only on the connection that brought it."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from harness.keys import KEY_ROOT
from models.sync_config import SyncConfig
from sync.gate.network import Connected, GateLink
from sync.link import Delivery


def link_with_recorded_acks() -> tuple[GateLink, list[int]]:
    config = SyncConfig(
        site="nanshan", gate="g1", broker_host="127.0.0.1", snapshot_url="http://127.0.0.1:9", key_root=KEY_ROOT
    )
    link = GateLink(config, client_id="gate-nanshan-g1", password=None, subscriptions=[])
    acked: list[int] = []

    def record(mid: int, qos: int) -> mqtt.MQTTErrorCode:
        acked.append(mid)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    link.mqtt.client.ack = record  # type: ignore[method-assign]
    return link, acked


def test_a_message_of_the_current_connection_is_acknowledged() -> None:
    link, acked = link_with_recorded_acks()
    link.mqtt.generation = 1  # paho's thread: connected
    link.up(Connected(1, session_present=True))  # the loop heard of it

    link.ack(Delivery(1, 7, 1))

    assert acked == [7]


def test_a_message_of_an_old_connection_is_not_acknowledged_on_a_new_one_the_loop_has_not_heard_of() -> None:
    link, acked = link_with_recorded_acks()
    link.mqtt.generation = 1
    link.up(Connected(1, session_present=True))
    link.mqtt.generation = 2  # paho reconnected while the loop was busy (e.g. installing a snapshot)

    link.ack(Delivery(1, 7, 1))  # its id 7 may name another message on connection 2

    assert acked == []
