"""A voucher code shown at the gate before its ticket came down the feed: "not synced yet", then admitted."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from edge.gate import GateService
from edge.store import GateStore
from harness.keys import VOUCHER_KEY
from harness.mosquitto import AnonymousBroker
from harness.processes import eventually
from harness.tickets import NOW
from models import GateConfig
from models.sync import TicketUpsert
from models.voucher import make_code, site_voucher_key
from tests.sync.gate_sync_kit import SITE, SnapshotServer, SnapshotState, gate_sync, peer, running, voucher


def test_a_code_bought_seconds_ago_is_not_synced_yet_then_admitted_once_its_ticket_arrives(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    service = GateService(store=store, config=GateConfig(gate_id="g1", site_id=SITE, passback_seconds=0))
    service.voucher_key = site_voucher_key(VOUCHER_KEY, SITE)  # what `starfish cloud voucher-key` prints
    code = make_code(SITE, "douyin", 5001, service.voucher_key)
    snapshots.state = SnapshotState(seq=1, tickets=[])

    async def scenario() -> None:
        with peer(broker) as cloud:
            sync = gate_sync(store, broker, snapshots, service=service, clock=lambda: NOW, max_feed_age_s=60)
            service.feed_stale = sync.feed_stale  # as the daemon wires it
            async with running(sync):
                early = service.evaluate(code, NOW)
                assert (early.decision.admit, early.decision.code) == (False, "not_synced_yet")
                service.journal(early, NOW)  # a denial counts nothing
                made_up = code[:-1] + ("0" if code[-1] != "0" else "1")  # our shape, a check that does not hold
                assert service.evaluate(made_up, NOW).decision.code == "unknown_ticket"

                cloud.feed(2, TicketUpsert(ticket=voucher("5001", code)))
                await eventually(lambda: sync.feed_seq == 2, "the voucher's ticket came down the feed")
                later = NOW + timedelta(seconds=5)
                admitted = service.evaluate(code, later)
                assert (admitted.decision.admit, admitted.decision.code) == (True, "ok")
                assert admitted.decision.ticket_id == "5001"
                service.complete(service.journal(admitted, later), passed=True, how="sensor")

    asyncio.run(scenario())
    assert [(e.code, e.counted, e.passed) for e in store.entries()] == [
        ("not_synced_yet", False, False),
        ("ok", True, True),
    ]
    store.close()
