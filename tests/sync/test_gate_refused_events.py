"""Events the cloud refuses (`EventAck.refused`) leave the gate's outbox like confirmed ones: resending cannot help."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from edge.store import GateStore
from harness.mosquitto import AnonymousBroker
from harness.processes import eventually
from models.sync import EventAck, RefusedEvent
from sync import topics
from tests.sync.gate_sync_kit import (
    SITE,
    SnapshotServer,
    event_ids,
    gate_sync,
    journal_passage,
    peer,
    running,
)


def test_events_the_cloud_refused_leave_the_outbox_with_a_warning_each_and_are_counted_by_reason(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = GateStore(tmp_path / "gate.db")
    stored, malformed, foreign, waiting = (journal_passage(store, str(2000 + i)) for i in range(4))
    events = topics.events(SITE, "g1")

    async def scenario() -> None:
        with peer(broker, events) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                await eventually(lambda: len(event_ids(cloud.on(events))) == 4, "the queued events published")
                ack = EventAck(
                    event_ids=[stored],
                    refused=[
                        RefusedEvent(event_id=malformed, reason="malformed"),
                        RefusedEvent(event_id=foreign, reason="wrong_gate"),
                    ],
                )
                cloud.publish(topics.acks(SITE, "g1"), ack.model_dump_json())
                await eventually(lambda: store.outbox_depth() == 1, "the confirmed and the refused dropped")
                assert [e.event_id for e in store.outbox()] == [waiting], "only the unanswered one waits"
                assert sync.events_refused == {"malformed": 1, "wrong_gate": 1}

    with caplog.at_level(logging.WARNING, logger="starfish.sync"):
        asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "refused event" in r.getMessage()]
    assert len(warnings) == 2
    assert any(str(malformed) in m and "malformed" in m for m in warnings)
    assert any(str(foreign) in m and "wrong_gate" in m for m in warnings)
    store.close()
