"""The gate side of sync against a real Mosquitto, real paho clients and a real HTTP snapshot.

Each test runs its own plain broker (anonymous, persistent) and, where the scenario has a
cloud, a fake one: a paho client publishing the feed and acknowledging events, and a tiny HTTP
server serving the snapshot. Gates run `GateSync` on an asyncio loop that owns their store.
The fake cloud and the gate helpers are shared with the other gate-sync tests: gate_sync_kit.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from drivers.barrier import FakeBarrier
from edge import store as edge_store
from edge.config import parse_config
from edge.daemon import GateDaemon
from edge.gate import GateService
from edge.store import GateStore
from harness.keys import KEY_ROOT, KEYSET_ROOT
from harness.mosquitto import AnonymousBroker
from harness.processes import REPO, ChildProcess, eventually, free_port, wait_until
from harness.tickets import NOW, make_ticket, sign
from models import GateConfig, Outcome, PassageEvent, Ticket, TicketStatus
from models.credential import public_key_b64
from models.keyset import sign_key_set
from models.sync import (
    EventAck,
    FeedHead,
    FeedMessage,
    GateConfigChange,
    GateStatus,
    KeySet,
    SnapshotHeader,
    StatusChange,
    TicketUpsert,
    ticket_set_checksum,
)
from models.sync_config import stale_feed
from sync import topics
from sync.snapshot_client import TicketLines, fetch_snapshot, snapshot_url
from tests.sync.gate_sync_kit import (
    DEADLINE,
    PASSWORD,
    SITE,
    USER,
    Peer,
    SnapshotServer,
    SnapshotState,
    event_ids,
    gate_sync,
    journal_passage,
    key_b64,
    peer,
    running,
    sync_config,
    voucher,
)

# --- down: the feed ---------------------------------------------------------------------------


def test_feed_changes_apply_in_order_and_each_is_acknowledged_after_its_commit(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    key = key_b64()
    config = GateConfig(gate_id="g1", site_id=SITE, passback_seconds=10)

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                assert snapshots.served == [0], "an empty gate starts from a snapshot"
                cloud.feed(1, TicketUpsert(ticket=voucher("1001", "VOUCHER-1001")))
                cloud.feed(2, StatusChange(ticket_id="1001", status=TicketStatus.BLOCKED, reason="lost card"))
                cloud.feed(3, KeySet(keys={7: key}, signature=sign_key_set(KEYSET_ROOT, {7: key})))
                cloud.feed(4, GateConfigChange(gate_id="g1", config=config))
                cloud.feed(5, GateConfigChange(gate_id="g2", config=config.model_copy(update={"gate_id": "g2"})))
                cloud.feed(6, TicketUpsert(ticket=voucher("1002", "VOUCHER-1002")))
                await eventually(lambda: sync.feed_seq == 6, "feed applied up to 6")
            cloud.feed(7, StatusChange(ticket_id="1002", status=TicketStatus.REVOKED))

    asyncio.run(scenario())
    assert edge_store.feed_seq(store) == 6
    assert store.status("1001") is TicketStatus.BLOCKED
    blocked = store.ticket_by_code("VOUCHER-1001")
    assert blocked is not None and blocked.status is TicketStatus.BLOCKED
    assert store.ticket("1002") is not None
    assert list(store.keys()) == [7]
    assert GateConfig.model_validate_json(store.get_meta(edge_store.GATE_CONFIG) or "") == config
    # Everything applied was acknowledged: the session hands the next client only what came later.
    with peer(broker, client_id="gate-nanshan-g1", persistent=True) as same_gate:
        wait_until(lambda: bool(same_gate.messages), "the session's queued message", DEADLINE, interval=0.01)
        time.sleep(0.2)  # anything unacknowledged would have come before it anyway
        seqs = [FeedMessage.model_validate_json(m.payload).seq for m in same_gate.on(topics.feed(SITE))]
    assert seqs == [7]
    store.close()


def test_a_feed_message_not_acknowledged_before_a_crash_is_redelivered_and_applied(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")

    async def first_start() -> None:
        async with running(gate_sync(store, broker, snapshots)):
            pass  # the session now holds the gate's subscriptions

    asyncio.run(first_start())
    with peer(broker) as cloud:
        # The gate's process receives seq 1 and dies before committing it: no PUBACK is ever sent.
        crashing = Peer(broker, "gate-nanshan-g1", persistent=True, manual_ack=True)
        cloud.feed(1, TicketUpsert(ticket=voucher("1001", "VOUCHER-1001")))
        wait_until(
            lambda: bool(crashing.on(topics.feed(SITE))), "the crashing gate received seq 1", DEADLINE, interval=0.01
        )
        crashing.close()
    assert store.ticket("1001") is None

    async def restart() -> None:
        async with running(gate_sync(store, broker, snapshots)) as sync:
            await eventually(lambda: sync.feed_seq == 1, "seq 1 redelivered and applied")

    asyncio.run(restart())
    assert store.ticket("1001") is not None
    assert snapshots.served == [0], "a redelivery is no gap: no second snapshot"
    store.close()


def test_a_repeated_sequence_number_is_ignored(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                cloud.feed(1, TicketUpsert(ticket=voucher("1001", "VOUCHER-1001", product_id="day")))
                cloud.feed(1, TicketUpsert(ticket=voucher("1001", "VOUCHER-1001", product_id="forged")))
                cloud.feed(2, TicketUpsert(ticket=voucher("1002", "VOUCHER-1002")))
                await eventually(lambda: sync.feed_seq == 2, "feed at 2")

    asyncio.run(scenario())
    first = store.ticket("1001")
    assert first is not None and first.product_id == "day"
    assert snapshots.served == [0]
    store.close()


def test_a_gap_fetches_a_verified_snapshot_and_the_feed_resumes_after_it(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    key = key_b64()

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                cloud.feed(1, TicketUpsert(ticket=voucher("1001", "VOUCHER-1001")))
                await eventually(lambda: sync.feed_seq == 1, "feed at 1")
                # Changes 2..5 never reach the gate; the cloud's snapshot has them.
                snapshots.state = SnapshotState(
                    seq=5,
                    tickets=[
                        voucher("1001", "VOUCHER-1001"),
                        voucher("1003", "VOUCHER-1003"),
                        voucher("1004", "V-1004"),
                    ],
                    statuses={"1003": TicketStatus.REVOKED, "9999": TicketStatus.BLOCKED},
                    keys={1: key},
                )
                cloud.feed(6, TicketUpsert(ticket=voucher("1006", "VOUCHER-1006")))
                await eventually(lambda: sync.feed_seq == 6, "snapshot at 5, then 6 from the buffer")
                cloud.feed(7, StatusChange(ticket_id="1004", status=TicketStatus.BLOCKED))
                await eventually(lambda: sync.feed_seq == 7, "feed continues at 7")

    asyncio.run(scenario())
    assert snapshots.served == [0, 5]
    assert store.ticket("1001") is not None and store.ticket("1006") is not None
    assert store.status("1003") is TicketStatus.REVOKED
    assert store.status("9999") is TicketStatus.BLOCKED, "a revoked signed ticket needs no cache entry"
    assert store.status("1004") is TicketStatus.BLOCKED
    assert list(store.keys()) == [1]
    expected = SnapshotState(
        tickets=[*snapshots.state.tickets, voucher("1006", "VOUCHER-1006")],
        statuses={"1003": TicketStatus.REVOKED, "1004": TicketStatus.BLOCKED},
    )
    assert edge_store.ticket_checksum(store) == expected.checksum()
    store.close()


def test_the_clouds_feed_head_keeps_a_quiet_feed_fresh_but_an_old_retained_head_does_not(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    snapshots.state = SnapshotState(seq=3, tickets=[voucher("1001", "VOUCHER-1001")])
    clock = Clock()
    head = topics.head(SITE)

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots, clock=clock, max_feed_age_s=60)) as sync:
                assert sync.fresh_at == NOW, "the snapshot made the feed fresh"
                clock.now = NOW + timedelta(hours=2)  # a quiet night: no change since
                assert sync.feed_stale(clock.now)
                cloud.publish(head, FeedHead(site=SITE, seq=3, at=clock.now).model_dump_json(), retain=True)
                await eventually(lambda: sync.fresh_at == clock.now, "the heartbeat made the feed fresh again")
                assert not sync.feed_stale(clock.now + timedelta(seconds=59))
                # The link to the cloud is cut: the site broker still hands out the last retained head.
                clock.now += timedelta(hours=1)
                cloud.publish(
                    head, FeedHead(site=SITE, seq=3, at=clock.now - timedelta(hours=1)).model_dump_json(), retain=True
                )
                cloud.publish(head, b"{not a head")
                await asyncio.sleep(0.3)
                assert sync.feed_stale(clock.now), "an old head does not pass for a fresh feed"
                assert sync.feed_seq == 3

    asyncio.run(scenario())
    store.close()


def test_a_gate_stuck_below_the_clouds_feed_head_fetches_a_snapshot(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    """The last change before a quiet spell was lost: no later message shows the gap, the head does."""
    store = GateStore(tmp_path / "gate.db")
    snapshots.state = SnapshotState(seq=1, tickets=[voucher("1001", "VOUCHER-1001")])

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots, feed_gap_grace_s=0.5)) as sync:
                cloud.publish(topics.head(SITE), FeedHead(site=SITE, seq=1, at=NOW).model_dump_json(), retain=True)
                await asyncio.sleep(0.8)
                assert snapshots.served == [1], "a gate at the head fetches nothing"
                # Change 2 never reaches the gate; the cloud announces it as published.
                snapshots.state = SnapshotState(
                    seq=2, tickets=[voucher("1001", "VOUCHER-1001"), voucher("1002", "VOUCHER-1002")]
                )
                cloud.publish(topics.head(SITE), FeedHead(site=SITE, seq=2, at=NOW).model_dump_json(), retain=True)
                await eventually(lambda: sync.feed_seq == 2, "the snapshot fetched after the grace period")
                assert sync.head_seq == 2

    asyncio.run(scenario())
    assert snapshots.served == [1, 2]
    assert store.ticket("1002") is not None
    store.close()


def test_a_feed_started_again_under_a_new_epoch_sends_the_gate_to_a_snapshot_of_the_new_run(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    """The cloud's database was restored from an older backup: its sequence numbers go back."""
    store = GateStore(tmp_path / "gate.db")
    snapshots.state = SnapshotState(seq=5, epoch="a", tickets=[voucher("1001", "VOUCHER-1001")])

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                assert (sync.epoch, sync.feed_seq) == ("a", 5)
                cloud.feed(6, TicketUpsert(ticket=voucher("1006", "VOUCHER-1006")), epoch="a")
                await eventually(lambda: sync.feed_seq == 6, "the feed goes on in its run")
                snapshots.state = SnapshotState(
                    seq=2, epoch="b", tickets=[voucher("1001", "VOUCHER-1001"), voucher("1002", "VOUCHER-1002")]
                )
                # Seq 3 is below the gate's 6: without the epoch it would pass for a repeat.
                cloud.feed(3, TicketUpsert(ticket=voucher("1003", "VOUCHER-1003")), epoch="b")
                await eventually(lambda: sync.feed_seq == 3 and not sync.resyncing, "the new run's snapshot, then 3")
                assert sync.epoch == "b"
                cloud.feed(7, TicketUpsert(ticket=voucher("1007", "VOUCHER-1007")), epoch="a")  # a straggler
                cloud.feed(4, TicketUpsert(ticket=voucher("1004", "VOUCHER-1004")), epoch="b")
                await eventually(lambda: sync.feed_seq == 4, "the new run goes on")

    asyncio.run(scenario())
    assert snapshots.served[:2] == [5, 2]
    assert [t for t in ("1001", "1002", "1003", "1004", "1006", "1007") if store.ticket(t) is not None] == [
        "1001",
        "1002",
        "1003",
        "1004",
    ], "the old run's tickets after the backup are gone, as in the cloud"
    assert edge_store.feed_epoch(store) == "b"
    store.close()


def test_a_snapshot_whose_checksum_does_not_match_is_refused_and_fetched_again(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    snapshots.state = SnapshotState(seq=3, tickets=[voucher("1001", "VOUCHER-1001")], corrupt=True)

    async def scenario() -> None:
        async with running(gate_sync(store, broker, snapshots), settled=False) as sync:
            await eventually(lambda: len(snapshots.served) >= 1, "a first snapshot served")
            assert store.ticket_count() == 0 and sync.feed_seq == 0
            snapshots.state.corrupt = False
            await eventually(lambda: sync.feed_seq == 3, "the good snapshot installed")

    asyncio.run(scenario())
    assert store.ticket("1001") is not None
    assert edge_store.ticket_checksum(store) == snapshots.state.checksum()
    store.close()


def test_an_empty_gate_loads_the_snapshot_then_follows_the_feed(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    key = key_b64()
    tickets = [voucher(str(1000 + i), f"VOUCHER-{1000 + i}") for i in range(50)]
    snapshots.state = SnapshotState(seq=10, tickets=tickets, statuses={"1007": TicketStatus.REVOKED}, keys={3: key})

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                assert sync.feed_seq == 10
                cloud.feed(9, StatusChange(ticket_id="1001", status=TicketStatus.REVOKED))  # older than the snapshot
                cloud.feed(11, StatusChange(ticket_id="1002", status=TicketStatus.BLOCKED))
                await eventually(lambda: sync.feed_seq == 11, "feed at 11")

    asyncio.run(scenario())
    assert store.ticket_count() == 50
    assert store.status("1001") is None and store.status("1002") is TicketStatus.BLOCKED
    assert store.status("1007") is TicketStatus.REVOKED
    assert list(store.keys()) == [3]
    assert store.get_meta(edge_store.SNAPSHOT_CHECKSUM) == snapshots.state.checksum()
    store.close()


def test_malformed_messages_are_logged_acknowledged_and_dropped_and_the_feed_goes_on(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = GateStore(tmp_path / "gate.db")
    feed = topics.feed(SITE)

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                cloud.publish(feed, b"{not json")
                cloud.publish(feed, b"\xff\xfe")
                cloud.publish(
                    feed, json.dumps({"site": SITE, "seq": 1, "at": NOW.isoformat(), "change": {"kind": "x"}})
                )
                cloud.feed(1, TicketUpsert(ticket=voucher("6666", "VOUCHER-6666")), site="other")
                cloud.publish(topics.acks(SITE, "g1"), b'{"event_ids": ["not-a-uuid"]}')
                cloud.publish(topics.events(SITE, "g2"), b'{"event_id": 42}')
                cloud.feed(1, TicketUpsert(ticket=voucher("1001", "VOUCHER-1001")))
                await eventually(lambda: sync.feed_seq == 1, "the valid message applied")
                assert sync.connected

    with caplog.at_level("WARNING", logger="starfish.sync"):
        asyncio.run(scenario())
    dropped = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
    assert len(dropped) == 6
    assert sum(feed in m for m in dropped) == 4
    assert any("site 'other'" in m for m in dropped)
    assert store.ticket("6666") is None and store.ticket("1001") is not None
    assert snapshots.served == [0], "a dropped message does not count as a gap"
    store.close()


# --- up: events -------------------------------------------------------------------------------


def test_the_outbox_is_published_and_emptied_only_by_the_clouds_acknowledgements(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    queued = [journal_passage(store, str(2000 + i)) for i in range(5)]
    events = topics.events(SITE, "g1")

    async def scenario() -> None:
        with peer(broker, events) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                await eventually(lambda: len(event_ids(cloud.on(events))) == 5, "the queued events published")
                assert event_ids(cloud.on(events)) == queued, "in journal order"
                assert len(cloud.on(events)) == 1, "a backlog goes up as one batch"
                assert store.outbox_depth() == 5, "published is not confirmed"
                late = journal_passage(store, "2999")
                sync.nudge()
                await eventually(lambda: len(cloud.on(events)) == 2, "a nudged event published")
                assert PassageEvent.model_validate_json(cloud.on(events)[-1].payload).event_id == late, "alone"
                cloud.publish(topics.acks(SITE, "g1"), EventAck(event_ids=queued[:3]).model_dump_json())
                await eventually(lambda: store.outbox_depth() == 3, "three confirmed")
                assert [e.event_id for e in store.outbox()] == [*queued[3:], late]
                cloud.publish(topics.acks(SITE, "g1"), EventAck(event_ids=[*queued[3:], late]).model_dump_json())
                await eventually(lambda: store.outbox_depth() == 0, "all confirmed")

    asyncio.run(scenario())
    store.close()


def test_events_the_cloud_did_not_confirm_are_published_again_after_a_reconnect(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    queued = [journal_passage(store, str(2000 + i)) for i in range(3)]
    events = topics.events(SITE, "g1")

    async def scenario() -> None:
        with peer(broker, events, client_id="cloud", persistent=True) as cloud:
            async with running(gate_sync(store, broker, snapshots, reconnect_max_s=1)) as sync:
                await eventually(lambda: len(event_ids(cloud.on(events))) == 3, "published once")
                broker.stop()
                await eventually(lambda: not sync.connected, "the gate noticed")
                broker.start()
                await eventually(lambda: len(event_ids(cloud.on(events))) >= 6, "published again after the reconnect")
                assert set(event_ids(cloud.on(events))) == set(queued), "the same events: the cloud dedupes"
                assert store.outbox_depth() == 3
                cloud.auto_ack_events = True
                cloud.publish(topics.acks(SITE, "g1"), EventAck(event_ids=queued).model_dump_json())
                await eventually(lambda: store.outbox_depth() == 0, "confirmed at last")

    asyncio.run(scenario())
    store.close()


# --- across: gates agree offline ----------------------------------------------------------------


def test_a_single_use_ticket_passed_at_gate_a_is_denied_used_up_at_gate_b_without_the_cloud(
    tmp_path: Path, broker: AnonymousBroker
) -> None:
    no_cloud = f"http://127.0.0.1:{free_port()}/"
    ticket = voucher("3001", "VOUCHER-3001", entries=1)
    stores = {g: GateStore(tmp_path / f"{g}.db") for g in ("a", "b")}
    services = {
        g: GateService(store=s, config=GateConfig(gate_id=g, site_id=SITE, passback_seconds=0))
        for g, s in stores.items()
    }
    for s in stores.values():
        s.upsert_tickets([ticket])

    async def scenario() -> None:
        # Their clocks read NOW: a peer's passage dated ahead of a gate's clock is not believed.
        gate_a = gate_sync(stores["a"], broker, no_cloud, gate="a", service=services["a"], clock=lambda: NOW)
        gate_b = gate_sync(stores["b"], broker, no_cloud, gate="b", service=services["b"], clock=lambda: NOW)
        async with running(gate_a, settled=False), running(gate_b, settled=False):
            await eventually(lambda: gate_a.connected and gate_b.connected, "both gates on the site broker")
            ev = services["a"].evaluate("VOUCHER-3001", NOW)
            assert ev.decision.admit and ev.decision.code == "ok"
            entry = services["a"].journal(ev, NOW)
            services["a"].complete(entry, passed=True, how="sensor")
            gate_a.nudge()
            await eventually(lambda: bool(stores["b"].history("3001", "b").passages), "gate b learnt the passage")
            later = NOW + timedelta(seconds=2)
            denied = services["b"].evaluate("VOUCHER-3001", later)
            assert (denied.decision.admit, denied.decision.code) == (False, "used_up")
            # And a's own journal was not taken for a remote passage.
            assert len(stores["a"].history("3001", "a").passages) == 1

    asyncio.run(scenario())
    remote = stores["b"].entries()
    assert [(e.gate_id, e.passed, e.resolution) for e in remote] == [("a", True, edge_store.REMOTE)]
    assert stores["b"].outbox_depth() == 0, "another gate's passage is never uploaded from here"
    for s in stores.values():
        s.close()


# --- status ---------------------------------------------------------------------------------------

GATE_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from edge.store import GateStore
    from edge.store import save_fresh_at
    from edge.sync_port import StorePort
    from models.sync_config import SyncConfig
    from sync.gate import GateSync
    from datetime import datetime, UTC

    store = GateStore(sys.argv[1])
    store.set_meta("sync.feed_seq", "42")
    config = SyncConfig(site="nanshan", gate="g1", broker_host="127.0.0.1", broker_port=int(sys.argv[2]),
                        snapshot_url="http://127.0.0.1:9/", keepalive_s=5, key_root=sys.argv[3])

    async def main():
        sync = GateSync(config, port=StorePort(store, gate_id="g1"), tick_s=0.1)
        await sync.run()

    asyncio.run(main())
    """
)


def test_the_gate_status_is_retained_online_and_its_last_will_says_offline_when_it_dies(
    tmp_path: Path, broker: AnonymousBroker
) -> None:
    status = topics.status(SITE, "g1")
    gate = ChildProcess(
        "gate",
        [sys.executable, "-c", GATE_PROCESS, str(tmp_path / "gate.db"), str(broker.port), KEY_ROOT],
        tmp_path / "gate.log",
        {"PYTHONPATH": str(REPO)},
    )
    gate.launch()
    try:
        with peer(broker, status) as watcher:
            gate.wait_until(lambda: bool(watcher.on(status)), "the gate's online status", DEADLINE, interval=0.01)
            online = GateStatus.model_validate_json(watcher.on(status)[-1].payload)
            assert (online.state, online.feed_seq, online.outbox_depth) == ("online", 42, 0)
            gate.kill()  # SIGKILL: no clean disconnect, the broker sends the Last Will
            wait_until(lambda: len(watcher.on(status)) >= 2, "the Last Will", DEADLINE, interval=0.01)
            offline = GateStatus.model_validate_json(watcher.on(status)[-1].payload)
            assert (offline.state, offline.feed_seq) == ("offline", 42)
        with peer(broker, status) as late_watcher:  # retained: whoever looks later sees it too
            wait_until(lambda: bool(late_watcher.on(status)), "the retained status", DEADLINE, interval=0.01)
            retained = late_watcher.on(status)
            assert retained[0].retain
            assert GateStatus.model_validate_json(retained[0].payload).state == "offline"
    finally:
        gate.kill()


def test_the_status_carries_the_ticket_set_checksum_and_the_feed_seq_it_was_taken_at(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    snapshots.state = SnapshotState(seq=4, tickets=[voucher("1001", "VOUCHER-1001")])
    status = topics.status(SITE, "g1")

    def last_status(watcher: Peer) -> GateStatus:
        seen = watcher.on(status)
        return (
            GateStatus.model_validate_json(seen[-1].payload)
            if seen
            else GateStatus(site=SITE, gate="g1", state="offline")
        )

    async def scenario() -> None:
        with peer(broker, status) as watcher, peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots, checksum_interval_s=0.3)) as sync:
                await eventually(lambda: last_status(watcher).checksum_seq == 4, "the snapshot's checksum")
                assert last_status(watcher).checksum == snapshots.state.checksum()
                cloud.feed(5, TicketUpsert(ticket=voucher("1002", "VOUCHER-1002")))
                cloud.feed(6, StatusChange(ticket_id="1001", status=TicketStatus.REVOKED))
                await eventually(lambda: last_status(watcher).checksum_seq == 6, "summed again after the changes")
                assert sync.feed_seq == 6
                assert last_status(watcher).checksum == edge_store.ticket_checksum(store)
                assert last_status(watcher).checksum != snapshots.state.checksum()

    asyncio.run(scenario())
    store.close()


def test_a_clean_stop_publishes_offline_and_a_start_online(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    journal_passage(store, "2001")
    status = topics.status(SITE, "g1")

    async def scenario() -> None:
        with peer(broker, status) as watcher:
            async with running(gate_sync(store, broker, snapshots)):
                await eventually(lambda: bool(watcher.on(status)), "online status")
                online = GateStatus.model_validate_json(watcher.on(status)[-1].payload)
                assert (online.state, online.outbox_depth) == ("online", 1)
            await eventually(
                lambda: GateStatus.model_validate_json(watcher.on(status)[-1].payload).state == "offline",
                "offline status",
            )

    asyncio.run(scenario())
    store.close()


# --- in the daemon ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def test_a_gate_daemon_uploads_its_passages_and_refuses_plain_codes_once_its_feed_is_stale(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    signing_key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("STARFISH_SYNC_PASSWORD", PASSWORD)
    vouchers = [voucher("1001", "VOUCHER-1001"), voucher("1002", "VOUCHER-1002")]
    snapshots.state = SnapshotState(seq=4, tickets=vouchers, keys={1: public_key_b64(signing_key.public_key())})
    config = parse_config(
        {
            "gate": {"gate_id": "g1", "site_id": SITE},
            "store": {"path": str(tmp_path / "gate.db")},
            "barrier": {"type": "modbus_tcp", "host": "127.0.0.1", "passage_timeout_s": 0.3},
            "sync": sync_config(broker, snapshots.base, max_feed_age_s=60).model_dump(exclude_defaults=True),
        }
    )
    store = GateStore(config.store.path)
    clock = Clock()
    daemon = GateDaemon(config, store=store, barrier=FakeBarrier(passage_input=False), clock=clock)
    events = topics.events(SITE, "g1")

    async def scenario() -> None:
        with peer(broker, events) as cloud:
            cloud.auto_ack_events = True
            task = asyncio.create_task(daemon.run())
            try:
                await eventually(lambda: edge_store.has_feed_position(store), "the snapshot installed")
                admitted = await daemon.handle(b"VOUCHER-1001", "scanner")
                assert (admitted.entry.code, admitted.entry.passed) == ("ok", True)
                await eventually(lambda: len(cloud.on(events)) == 1, "the passage uploaded")
                await eventually(lambda: store.outbox_depth() == 0, "and confirmed")
                clock.now += timedelta(seconds=61)
                stale = await daemon.handle(b"VOUCHER-1002", "scanner")
                assert (stale.entry.outcome, stale.entry.code) == (Outcome.DENY, "stale_feed")
                signed = await daemon.handle(sign(signing_key, make_ticket(ticket_id="1003")).encode(), "scanner")
                assert signed.entry.code == "ok", "a signed ticket needs no fresh feed"
            finally:
                daemon.request_stop()
                await asyncio.wait_for(task, DEADLINE)

    asyncio.run(scenario())
    store.close()


# --- the freshness guard and the checksum ---------------------------------------------------------


@pytest.mark.parametrize(
    ("last_fresh", "now", "stale"),
    [
        pytest.param(None, NOW, True, id="never-synced"),
        pytest.param(NOW, NOW, False, id="just-synced"),
        pytest.param(NOW - timedelta(seconds=600), NOW, False, id="at-the-limit"),
        pytest.param(NOW - timedelta(seconds=601), NOW, True, id="past-the-limit"),
        pytest.param(NOW + timedelta(seconds=30), NOW, False, id="clock-stepped-back"),
    ],
)
def test_stale_feed(last_fresh: datetime | None, now: datetime, stale: bool) -> None:
    assert stale_feed(last_fresh, now, 600) is stale


def test_the_store_checksum_is_the_contracts_checksum(store: GateStore) -> None:
    tickets = [voucher(tid, f"CODE-{i:04d}") for i, tid in enumerate(["b", "a", "Ä", "a-1", "10", "9"])]
    for seq, t in enumerate(tickets, start=1):
        edge_store.apply_change(store, TicketUpsert(ticket=t), seq, gate="g1", fresh=NOW)
    edge_store.apply_change(store, StatusChange(ticket_id="Ä", status=TicketStatus.REVOKED), 7, gate="g1", fresh=NOW)
    store.set_status("9", TicketStatus.BLOCKED)  # a block the store took outside the feed still counts
    expected = {t.ticket_id: t.status for t in tickets} | {"Ä": TicketStatus.REVOKED, "9": TicketStatus.BLOCKED}
    assert edge_store.ticket_checksum(store) == ticket_set_checksum(expected.items())


# --- snapshots: staging and install -------------------------------------------------------------


def fetch(snapshots: SnapshotServer, staging: Path) -> SnapshotHeader:
    return fetch_snapshot(
        url=snapshot_url(snapshots.base, SITE),
        site=SITE,
        open_sink=lambda: edge_store.SnapshotStaging(staging),
        auth=(USER, PASSWORD),
        timeout_s=DEADLINE,
    )


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(SnapshotState(tickets=[voucher("1001", "V-1001"), voucher("1002", "V-1002")]), id="in-id-order"),
        pytest.param(SnapshotState(tickets=[voucher("1002", "V-1002"), voucher("1001", "V-1001")]), id="out-of-order"),
        pytest.param(
            SnapshotState(
                tickets=[voucher("1001", "V-1001"), voucher("1002", "V-1002", status=TicketStatus.REVOKED)],
                statuses={"1001": TicketStatus.BLOCKED, "1002": TicketStatus.REVOKED},
            ),
            id="a-status-line-overrides-a-ticket",
        ),
    ],
)
def test_a_staged_snapshot_is_verified_and_installed_whatever_the_order_of_its_lines(
    tmp_path: Path, store: GateStore, snapshots: SnapshotServer, state: SnapshotState
) -> None:
    snapshots.state = state
    header = fetch(snapshots, Path(store.path))  # staged beside the store's tables, as a gate stages it
    edge_store.install_snapshot(store, seq=header.seq, keys={}, checksum=header.checksum, fresh=NOW)
    assert edge_store.ticket_checksum(store) == header.checksum == state.checksum()
    assert store.ticket_count() == len(state.tickets)
    if "1001" in state.statuses:
        ticket = store.ticket("1001")
        assert ticket is not None and ticket.status is TicketStatus.BLOCKED


def test_a_snapshot_listing_a_ticket_twice_is_refused_before_install(tmp_path: Path, snapshots: SnapshotServer) -> None:
    snapshots.state = SnapshotState(tickets=[voucher("1001", "V-0001"), voucher("1001", "V-0002")], corrupt=True)
    with pytest.raises(edge_store.SnapshotError, match="ticket id twice"):
        fetch(snapshots, tmp_path / "staging.db")


def test_a_snapshot_listing_a_code_twice_is_refused_before_install_and_the_store_keeps_its_tickets(
    store: GateStore, snapshots: SnapshotServer
) -> None:
    edge_store.apply_change(store, TicketUpsert(ticket=voucher("900", "V-900")), 1, gate="g1", fresh=NOW)
    before = edge_store.ticket_checksum(store)
    snapshots.state = SnapshotState(seq=5, tickets=[voucher("1001", "V-SAME"), voucher("1002", "V-SAME")])
    with pytest.raises(edge_store.SnapshotError, match="ticket code twice"):
        fetch(snapshots, Path(store.path))
    with pytest.raises(edge_store.SnapshotError, match="no snapshot is staged"):  # the refused one is not
        edge_store.install_snapshot(store, seq=5, keys={}, checksum="0" * 64, fresh=NOW)
    assert edge_store.ticket_checksum(store) == before
    assert edge_store.feed_seq(store) == 1


BASE_LINE = make_ticket(ticket_id="1001").model_dump_json()


def ticket_line(ticket_id: str = "1001", at: str = "null", n: str = "0", **replace: str) -> str:
    """BASE_LINE with another id, first entry and entries used, and other text replaced."""
    line = BASE_LINE.replace('"1001"', f'"{ticket_id}"', 1)
    line = line.replace('"first_entry_at":null,"entries_used":0}', f'"first_entry_at":{at},"entries_used":{n}}}')
    for old, new in replace.items():
        line = line.replace(old, new)
    return line


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([ticket_line("2002")], id="same-shape-other-id"),
        pytest.param([ticket_line("9" * 64), ticket_line("9" * 65), ticket_line("")], id="id-lengths"),
        pytest.param([ticket_line("a-1"), ticket_line("\\u0031\\u0030")], id="ids-not-plain"),
        pytest.param([ticket_line(at='"2026-01-01T08:00:00.5Z"', n="3")], id="used"),
        pytest.param(
            [ticket_line(at=at) for at in ('"2026-02-30T08:00:00Z"', '"2026-01-01T08:00:00"', "0", '""')],
            id="bad-first-entries",
        ),
        pytest.param([ticket_line(n=n) for n in ("-1", "01", "1.0", "9" * 19)], id="odd-entries-used"),
        pytest.param([ticket_line(**{'"valid"': '"bogus"'})], id="bad-status"),
        pytest.param([ticket_line(**{'"day"': '"punch"'})], id="punch-without-entries"),
        pytest.param([ticket_line(**{'"schema_version":1,': ""})], id="other-field-order"),
        pytest.param([BASE_LINE[:-1] + ',"ticket_id":"7"}'], id="id-given-again-at-the-end"),
        pytest.param(
            [ticket_line(t, **{',"status"': ',"ticket_id":"1001","status"'}) for t in ("1001", "2002")],
            id="id-given-again-inside",
        ),
        pytest.param(
            [ticket_line(at=at, **{',"status"': ',"first_entry_at":"x","status"'}) for at in ("null", '"y"')],
            id="first-entry-given-again-inside",
        ),
        pytest.param(
            [ticket_line(t, **{',"status"': ',"ticket\\u005fid":"1001","status"'}) for t in ("1001", "2002")],
            id="id-given-again-in-disguise",
        ),
    ],
)
def test_a_ticket_line_is_valid_exactly_when_the_wire_model_says_so_whatever_shapes_came_before(
    lines: list[str],
) -> None:
    checker = TicketLines()
    checker.row(BASE_LINE.encode())  # its shape is known from now on
    for line in lines * 2:  # and each line's own shape the second time round
        try:
            ticket = Ticket.model_validate_json(line)
        except ValidationError:
            with pytest.raises(ValidationError):
                checker.row(line.encode())
        else:
            assert checker.row(line.encode()) == (ticket.ticket_id, ticket.code, ticket.status.value, line)
