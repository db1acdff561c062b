"""Forged peer events on the site broker: what a gate believes of the other gates' passages.

A real Mosquitto, real gates (`GateSync`) fed by a fake cloud whose snapshot names the site's
gates; the forger is a plain MQTT client publishing on a gate's events topic, as a stolen gate
login could. Every gate's clock reads `NOW`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from edge import store as edge_store
from edge.gate import GateService
from edge.store import GateStore
from harness.mosquitto import AnonymousBroker
from harness.processes import eventually
from harness.tickets import NOW, counted_passage
from models import GateConfig, PassageEvent, Ticket
from models.sync import GateRoster, SnapshotHeader
from sync import topics
from tests.sync.gate_sync_kit import (
    SITE,
    SnapshotServer,
    SnapshotState,
    gate_sync,
    peer,
    running,
    voucher,
)

pytestmark = pytest.mark.security

SINGLE = voucher("3001", "VOUCHER-3001", entries=1)
PUNCH = voucher("3002", "VOUCHER-3002", entries=10)


@dataclass
class RosterSnapshot(SnapshotState):
    """The fake cloud's snapshot, its header naming the site's gates (None: a cloud from before rosters)."""

    gates: list[str] | None = None

    def ndjson(self) -> bytes:
        header, rest = super().ndjson().split(b"\n", 1)
        named = SnapshotHeader.model_validate_json(header).model_copy(update={"gates": self.gates})
        return named.model_dump_json().encode() + b"\n" + rest


@pytest.fixture
def cloud_of(request: pytest.FixtureRequest) -> Iterator[SnapshotServer]:
    """The fake cloud's snapshot server; its roster is the test's `roster` parameter, else ["a", "b"]."""
    server = SnapshotServer()
    server.state = RosterSnapshot(tickets=[SINGLE, PUNCH], gates=getattr(request, "param", ["a", "b"]))
    yield server
    server.close()


def service(store: GateStore, gate: str) -> GateService:
    # Anti-passback for 10 minutes: what an event dated in the future would turn into a denial.
    return GateService(store=store, config=GateConfig(gate_id=gate, site_id=SITE, passback_seconds=600))


def passage(ticket: Ticket, at: datetime, *, gate: str = "a", site: str = SITE) -> PassageEvent:
    return counted_passage(ticket.ticket_id, at, gate=gate, site=site, credential="plain")


FORGED_TIMES = [
    pytest.param(PUNCH, datetime(2099, 1, 1, tzinfo=NOW.tzinfo), "future", id="dated-2099"),
    pytest.param(PUNCH, NOW + timedelta(minutes=6), "future", id="six-minutes-ahead"),
    pytest.param(SINGLE, NOW - timedelta(days=31), "too_old", id="a-month-old"),
    pytest.param(SINGLE, SINGLE.valid_from - timedelta(hours=1), "before_validity", id="before-its-ticket-is-valid"),
]


@pytest.mark.parametrize(("ticket", "at", "why"), FORGED_TIMES)
def test_a_forged_peer_event_dated_where_it_cannot_be_is_not_recorded_and_the_ticket_is_still_admitted(
    tmp_path: Path, broker: AnonymousBroker, cloud_of: SnapshotServer, ticket: Ticket, at: datetime, why: str
) -> None:
    store = GateStore(tmp_path / "b.db")
    forged = passage(ticket, at)

    async def scenario() -> None:
        gate_b = gate_sync(store, broker, cloud_of, gate="b", service=service(store, "b"), clock=lambda: NOW)
        async with running(gate_b):
            with peer(broker) as forger:
                assert gate_b.roster == {"a", "b"}
                forger.publish(topics.events(SITE, "a"), forged.model_dump_json())
                await eventually(lambda: gate_b.peer_events_dropped[why] == 1, f"the forged event dropped ({why})")

    asyncio.run(scenario())
    assert store.history(ticket.ticket_id, "b").passages == []
    admitted = service(store, "b").evaluate(ticket.code or "", NOW)
    assert (admitted.decision.admit, admitted.decision.code) == (True, "ok")
    store.close()


@pytest.mark.parametrize(
    ("topic_gate", "event", "why"),
    [
        pytest.param("ghost", passage(SINGLE, NOW, gate="ghost"), "unknown_gate", id="a-gate-not-on-the-roster"),
        pytest.param("a", passage(SINGLE, NOW, gate="ghost"), "gate_mismatch", id="naming-a-made-up-gate"),
        pytest.param("a", passage(SINGLE, NOW, gate="b"), "gate_mismatch", id="naming-the-receiving-gate"),
        pytest.param("a", passage(SINGLE, NOW, site="beishan"), "wrong_site", id="another-sites-event"),
    ],
)
def test_a_peer_event_from_a_gate_not_on_the_roster_or_not_its_senders_is_not_recorded(
    tmp_path: Path, broker: AnonymousBroker, cloud_of: SnapshotServer, topic_gate: str, event: PassageEvent, why: str
) -> None:
    store = GateStore(tmp_path / "b.db")

    async def scenario() -> None:
        gate_b = gate_sync(store, broker, cloud_of, gate="b", service=service(store, "b"), clock=lambda: NOW)
        async with running(gate_b):
            with peer(broker) as forger:
                forger.publish(topics.events(SITE, topic_gate), event.model_dump_json())
                await eventually(lambda: gate_b.peer_events_dropped[why] == 1, f"the forged event dropped ({why})")

    asyncio.run(scenario())
    assert store.history(SINGLE.ticket_id, "b").passages == []
    admitted = service(store, "b").evaluate("VOUCHER-3001", NOW)
    assert (admitted.decision.admit, admitted.decision.code) == (True, "ok")
    store.close()


def test_a_genuine_peer_passage_still_makes_a_single_entry_ticket_used_up_and_a_new_gate_joins_by_the_feed(
    tmp_path: Path, broker: AnonymousBroker, cloud_of: SnapshotServer
) -> None:
    stores = {g: GateStore(tmp_path / f"{g}.db") for g in ("a", "b", "c")}
    services = {g: service(s, g) for g, s in stores.items()}

    async def scenario() -> None:
        gates = {
            g: gate_sync(stores[g], broker, cloud_of, gate=g, service=services[g], clock=lambda: NOW)
            for g in ("a", "b", "c")
        }
        async with running(gates["a"]), running(gates["b"]), running(gates["c"]):
            with peer(broker) as cloud:
                ev = services["a"].evaluate("VOUCHER-3001", NOW)
                assert ev.decision.admit
                services["a"].complete(services["a"].journal(ev, NOW), passed=True, how="sensor")
                gates["a"].nudge()
                await eventually(lambda: bool(stores["b"].history("3001", "b").passages), "gate b learnt the passage")

                # Gate c is not on the snapshot's roster: b believes it once the cloud's feed names it.
                cloud.feed(1, GateRoster(gates=["a", "b", "c"]))
                await eventually(lambda: gates["b"].roster == {"a", "b", "c"}, "the roster from the feed")
                ev = services["c"].evaluate("VOUCHER-3002", NOW)
                services["c"].complete(services["c"].journal(ev, NOW), passed=True, how="sensor")
                gates["c"].nudge()
                await eventually(lambda: bool(stores["b"].history("3002", "b").passages), "gate b learnt c's passage")
                assert sum(gates["b"].peer_events_dropped.values()) == 0

    asyncio.run(scenario())
    denied = services["b"].evaluate("VOUCHER-3001", NOW + timedelta(seconds=2))
    assert (denied.decision.admit, denied.decision.code) == (False, "used_up")
    assert edge_store.gate_roster(stores["b"]) == {"a", "b", "c"}, "kept for the next start"
    for s in stores.values():
        s.close()


@pytest.mark.parametrize("cloud_of", [None], indirect=True, ids=["a-cloud-without-rosters"])
def test_without_a_roster_yet_the_sites_gates_are_believed_within_the_time_bounds(
    tmp_path: Path, broker: AnonymousBroker, cloud_of: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "b.db")
    future, genuine = passage(PUNCH, datetime(2099, 1, 1, tzinfo=NOW.tzinfo)), passage(SINGLE, NOW)

    async def scenario() -> None:
        gate_b = gate_sync(store, broker, cloud_of, gate="b", service=service(store, "b"), clock=lambda: NOW)
        async with running(gate_b):
            with peer(broker) as gate_a:
                assert gate_b.roster is None
                gate_a.publish(topics.events(SITE, "a"), future.model_dump_json())
                gate_a.publish(topics.events(SITE, "a"), genuine.model_dump_json())
                await eventually(lambda: bool(store.history("3001", "b").passages), "gate b learnt the passage")
                await eventually(lambda: gate_b.peer_events_dropped["future"] == 1, "the 2099 event dropped")

    asyncio.run(scenario())
    assert store.history(PUNCH.ticket_id, "b").passages == []
    denied = service(store, "b").evaluate("VOUCHER-3001", NOW)
    assert (denied.decision.admit, denied.decision.code) == (False, "used_up")
    store.close()
