"""Sync's part of the technician page, against a real Mosquitto and the fake cloud of gate_sync_kit.py:
technician accounts coming down (feed and snapshot), the gate's health going up in its retained status,
whether the gate is in step with the cloud's checksum, and a resync a technician asks for."""

from __future__ import annotations

import asyncio
import time

from argon2 import PasswordHasher

from edge.store import GateStore
from harness.mosquitto import AnonymousBroker
from harness.processes import eventually
from harness.tickets import NOW
from models.ops import GateHealth, TechnicianAccount
from models.sync import FeedHead, GateStatus, Technicians
from sync import topics
from tests.sync.gate_sync_kit import SITE, SnapshotServer, gate_sync, peer, running, voucher

HASH = PasswordHasher().hash("piste-patrol-7")


def tech(username: str) -> TechnicianAccount:
    return TechnicianAccount(username=username, password_hash=HASH)


# --- technicians down ---------------------------------------------------------------------------


def test_a_technicians_change_on_the_feed_replaces_the_gates_list(
    store: GateStore, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                assert not store.has_technician_list(), "an older cloud's snapshot names no technicians"
                cloud.feed(1, Technicians(accounts=[tech("li.wei"), tech("wang.fang")]))
                await eventually(lambda: sync.feed_seq == 1, "the technicians applied")
                assert store.technicians() == {"li.wei": HASH, "wang.fang": HASH}
                assert store.has_technician_list()

                cloud.feed(2, Technicians(accounts=[tech("wang.fang")]))  # li.wei disabled in the cloud
                await eventually(lambda: sync.feed_seq == 2, "the shorter list applied")
                assert store.technicians() == {"wang.fang": HASH}

    asyncio.run(scenario())


def test_a_snapshot_brings_the_technician_list_to_a_new_gate(
    store: GateStore, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    snapshots.state.seq = 4
    snapshots.state.technicians = [tech("zhao.lei")]

    async def scenario() -> None:
        async with running(gate_sync(store, broker, snapshots)):
            assert snapshots.served == [4]

    asyncio.run(scenario())
    assert store.technicians() == {"zhao.lei": HASH}
    assert store.has_technician_list()


# --- health up ----------------------------------------------------------------------------------


def test_the_gates_health_reaches_its_retained_status_and_a_device_fault_goes_out_within_seconds(
    store: GateStore, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    health = [GateHealth(version="1.4.0", uptime_s=60, camera="ok", scanner="ok", tickets=0)]
    status_topic = topics.status(SITE, "g1")

    def statuses(watcher_messages: list[bytes | bytearray]) -> list[GateStatus]:
        return [GateStatus.model_validate_json(m) for m in watcher_messages]

    async def scenario() -> None:
        with peer(broker, status_topic) as watcher:
            # The refresh is an hour away: a status that comes now comes because something changed.
            sync = gate_sync(store, broker, snapshots, health=lambda: health[-1], status_interval_s=3600)
            async with running(sync):

                def reported() -> list[GateStatus]:
                    return [s for s in statuses([m.payload for m in watcher.on(status_topic)]) if s.state == "online"]

                first = await eventually(lambda: [s for s in reported() if s.health is not None], "a status")
                assert first[-1].health == health[0]
                health.append(health[-1].model_copy(update={"uptime_s": 61}))
                health.append(
                    health[-1].model_copy(update={"barrier": "error", "barrier_error": "modbus: no answer from unit 1"})
                )
                faulty = await eventually(
                    lambda: [s for s in reported() if s.health and s.health.barrier == "error"], "the fault reported"
                )
                assert faulty[0].health == health[-1]
                health.append(health[-1].model_copy(update={"fire_alarm": True}))
                await eventually(lambda: [s for s in reported() if s.health and s.health.fire_alarm], "the fire alarm")

        retained = GateStatus.model_validate_json(watcher.on(status_topic)[-1].payload)
        assert retained.state == "offline" and retained.health is not None and retained.health.fire_alarm

    asyncio.run(scenario())


def test_a_gate_whose_health_cannot_be_read_still_reports_its_status(
    store: GateStore, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    def broken() -> GateHealth:
        raise OSError("statvfs: no such device")

    async def scenario() -> None:
        with peer(broker, topics.status(SITE, "g1")) as watcher:
            async with running(gate_sync(store, broker, snapshots, health=broken)):
                await eventually(lambda: watcher.on(topics.status(SITE, "g1")), "a status")
        status = GateStatus.model_validate_json(watcher.on(topics.status(SITE, "g1"))[0].payload)
        assert status.health is None and status.state == "online"

    asyncio.run(scenario())


# --- in step with the cloud ---------------------------------------------------------------------------


def test_the_gate_is_in_step_when_its_checksum_at_the_clouds_seq_is_the_clouds(
    store: GateStore, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    snapshots.state.seq = 3
    snapshots.state.tickets = [voucher("1001", "VOUCHER-1001")]
    good = snapshots.state.checksum()

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:

                def head(checksum: str | None, checksum_seq: int | None) -> None:
                    message = FeedHead(site=SITE, seq=3, at=NOW, checksum=checksum, checksum_seq=checksum_seq)
                    cloud.publish(topics.head(SITE), message.model_dump_json(), retain=True)

                assert sync.in_step is None, "the cloud has announced no checksum yet"
                head(good, 3)
                await eventually(lambda: sync.in_step is True, "in step at seq 3")
                head(good, 2)  # the cloud summed before its last change; the gate never summed at 2
                await eventually(lambda: sync.in_step is None, "not comparable at seq 2")
                head("f" * 64, 3)
                await eventually(lambda: sync.in_step is False, "out of step at seq 3")
                head(None, None)  # a cloud that does not say
                await eventually(lambda: sync.in_step is None, "unknown again")

    asyncio.run(scenario())


# --- a technician's resync, and the broker's last word -----------------------------------------------


def test_a_resync_asked_for_fetches_a_snapshot_unless_one_is_under_way(
    store: GateStore, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    async def scenario() -> None:
        async with running(gate_sync(store, broker, snapshots)) as sync:
            assert snapshots.served == [0]
            snapshots.state.seq = 9
            snapshots.state.tickets = [voucher("1001", "VOUCHER-1001")]
            assert sync.request_resync("technician li.wei: ticket 1001 missing at this gate")
            assert not sync.request_resync("asked twice"), "a snapshot is already under way"
            await eventually(lambda: sync.feed_seq == 9 and not sync.resyncing, "the snapshot installed")
            assert snapshots.served == [0, 9]
            assert store.ticket("1001") is not None

    asyncio.run(scenario())


def test_the_last_message_age_counts_from_anything_the_broker_sent(
    store: GateStore, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                assert sync.last_message_age_s(time.monotonic()) is None, "nothing came from the broker yet"
                sent = time.monotonic()
                cloud.publish(topics.head(SITE), FeedHead(site=SITE, seq=0, at=NOW).model_dump_json(), retain=True)
                await eventually(lambda: sync.last_message_age_s(time.monotonic()) is not None, "the head heard")
                later = time.monotonic() + 100
                age = sync.last_message_age_s(later)
                assert age is not None and later - time.monotonic() <= age <= later - sent

    asyncio.run(scenario())
