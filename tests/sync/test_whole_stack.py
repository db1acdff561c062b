"""The whole stack for real, each piece in its own process: the cloud (uvicorn, SQLite, its MQTT loop)
on a cloud broker; a site broker bridged to it (cleansession false, persistence on); two gate
daemons on the site broker only, each with a simulated relay board and a serial scanner (a pty).

Cut the site-cloud link while the gates admit hundreds of skiers: every event reaches the cloud
exactly once and the cloud counts what the gates counted. Restart the cloud and both brokers in
the middle of a burst of sales: the gates' ticket caches converge on the cloud's.
"""

from __future__ import annotations

import base64
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.settings import Settings
from edge.store import GateStore, GateStoreReader, ticket_checksum
from harness.cloud import API, CloudServer
from harness.cloud_api import Cashier, seed_cloud
from harness.cloud_db import query
from harness.gates import GateProcess, RelayBoards
from harness.keys import KEY_ROOT, KEYSET_ROOT_B64
from harness.mosquitto import MosquittoFactory, MosquittoProcess
from harness.processes import free_port, tail, wait_until
from harness.relay_sim import RelayBoardSim
from models import TicketStatus
from models.sync import SnapshotHeader
from sync.mosquitto import BridgeTo, GateAccount, SiteRegistry

SITE = "nanshan"
GATES = ("g1", "g2")
CLOUD_LOGIN = ("cloud", "cloud-pw-0123456")
_PRICES = ("weekday_price_fen", "weekend_price_fen", "holiday_price_fen")
SLOW = 60.0  # bound on anything that waits for reconnects (the cloud's MQTT client backs off up to 10 s)
PRODUCTS = [
    {"code": "day", "name": "全天票", "kind": "day", **dict.fromkeys(_PRICES, 100)},
    {"code": "single", "name": "单次票", "kind": "punch", "entries": 1, **dict.fromkeys(_PRICES, 50)},
]
REPUBLISHED = "unconfirmed after"  # the gate's log line when it publishes what the cloud did not confirm
PER_SCAN = ("scanner ADMIT", "scanner DENY")


@dataclass
class Stack:
    cloud_db: Path
    cloud_broker: MosquittoProcess
    site_broker: MosquittoProcess
    cloud: CloudServer
    cashier: Cashier
    products: dict[str, int]
    gates: dict[str, GateProcess]
    boards: dict[str, RelayBoardSim]
    logins: dict[str, tuple[str, str]]

    def cloud_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return query(self.cloud_db, sql, params)

    def cloud_head(self) -> SnapshotHeader:
        """The cloud's snapshot header, as a gate fetches it: feed head, ticket count, ticket-set checksum."""
        with httpx.stream(
            "GET", f"{self.cloud.base}{API}/sync/sites/{SITE}/snapshot", auth=self.logins["g1"], timeout=30
        ) as r:
            assert r.status_code == 200, r.read()
            return SnapshotHeader.model_validate_json(next(r.iter_lines()))

    def store(self, gate: str) -> GateStoreReader:
        return GateStoreReader(self.gates[gate].db)

    def feed_seq(self, gate: str) -> int:
        store = self.store(gate)
        return store.feed_seq() if store.has_feed_position() else -1

    def synced(self) -> bool:
        head = self.cloud_head().seq
        return all(self.feed_seq(g) == head for g in GATES)

    def cloud_sees_gates_at(self, seq: int) -> bool:
        """Does the cloud's status view (the gates' retained status, over the bridge) show both online at seq?"""
        seen = self.cloud_rows("SELECT g.code, s.state, s.feed_seq FROM gate_status s JOIN gates g ON g.id = s.gate_id")
        return sorted(seen) == [(g, "online", seq) for g in GATES]

    def outboxes_empty(self) -> bool:
        return all(self.store(g).outbox_depth() == 0 for g in GATES)

    def peers_agree(self) -> bool:
        """Has each gate journaled every completed passage of a ticket at the other, as a remote passage?"""
        passed = {
            g: [e.event_id for e in self.store(g).entries(own=True) if e.passed and e.ticket_id is not None]
            for g in GATES
        }
        learnt = {g: [e.event_id for e in self.store(g).entries(own=False)] for g in GATES}
        return sorted(learnt["g1"]) == sorted(passed["g2"]) and sorted(learnt["g2"]) == sorted(passed["g1"])

    def decided(self, gate: str) -> int:
        """How many of the gate's own decisions are final (journaled, passage resolved)."""
        return sum(e.passed is not None for e in self.store(gate).entries(own=True))

    def present(self, codes: dict[str, list[str]], chunk: int = 40) -> None:
        """Present codes at the gates, gates side by side, a queue of `chunk` skiers at a time per gate."""
        done = {g: self.decided(g) for g in codes}
        for start in range(0, max(len(c) for c in codes.values()), chunk):
            for gate, gate_codes in codes.items():
                batch = gate_codes[start : start + chunk]
                self.gates[gate].scan(*batch)
                done[gate] += len(batch)
            wait_until(
                lambda: all(self.decided(g) >= n for g, n in done.items()),
                f"the gates decided on {done}",
                SLOW,
                interval=0.1,
            )


@pytest.fixture
def stack(tmp_path: Path, mosquitto_factory: MosquittoFactory) -> Iterator[Stack]:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    secrets = {
        "STARFISH_ENVIRONMENT": "test",
        "STARFISH_JWT_SECRET": "w" * 40,
        "STARFISH_SIGNING_KEY_B64": base64.b64encode(os.urandom(32)).decode(),
        "STARFISH_KEYSET_ROOT_KEY_B64": KEYSET_ROOT_B64,
    }
    seeded = seed_cloud(
        Settings(
            environment="test",
            database_url=url,
            jwt_secret=secrets["STARFISH_JWT_SECRET"],
            signing_key_b64=secrets["STARFISH_SIGNING_KEY_B64"],
            keyset_root_key_b64=KEYSET_ROOT_B64,
        ),
        SITE,
        GATES,
        PRODUCTS,
    )
    cloud_port = free_port()
    registry = SiteRegistry(
        SITE,
        [GateAccount(g, *seeded.gates[g]) for g in GATES],
        *CLOUD_LOGIN,
        bridge=BridgeTo("127.0.0.1", cloud_port, f"bridge-{SITE}", "bridge-pw-0123456", restart_timeout=(1, 2)),
    )
    cloud_broker = mosquitto_factory(registry, role="cloud", name="cloud", port=cloud_port)
    site_broker = mosquitto_factory(registry, role="site", name="site")
    logs: list[Path] = [cloud_broker.log_path, site_broker.log_path]
    with ExitStack() as on_exit:
        # What each process said, for a failing test's report; the per-scan lines left out.
        on_exit.callback(lambda: print(*(f"--- {p}\n{tail(p, 60, skip=PER_SCAN)}" for p in logs), sep="\n"))
        cloud = CloudServer(
            {
                **secrets,
                "STARFISH_DATABASE_URL": url,
                "STARFISH_MQTT_HOST": "127.0.0.1",
                "STARFISH_MQTT_PORT": str(cloud_port),
                "STARFISH_MQTT_USERNAME": CLOUD_LOGIN[0],
                "STARFISH_MQTT_PASSWORD": CLOUD_LOGIN[1],
                "STARFISH_SYNC_POLL_SECONDS": "0.2",
            },
            tmp_path / "cloud.log",
        )
        logs.append(cloud.log)
        on_exit.callback(cloud.stop)
        cloud.start()
        cashier = Cashier(cloud.base, seeded.cashier_token, seeded.site_id)
        on_exit.callback(cashier.close)
        relay_boards = RelayBoards()
        on_exit.callback(relay_boards.close)
        gates, boards = {}, {}
        for g in GATES:
            boards[g] = relay_boards.add()
            folder = tmp_path / g
            folder.mkdir()
            (folder / "password").write_text(seeded.gates[g][1])
            gates[g] = GateProcess(folder, _gate_config(g, boards[g], site_broker, cloud, seeded.gates[g][0], folder))
            logs.append(gates[g].log)
            on_exit.callback(gates[g].close)
        for g in GATES:
            gates[g].launch()
        for g in GATES:
            gates[g].wait_running()
        world = Stack(
            tmp_path / "cloud.db",
            cloud_broker,
            site_broker,
            cloud,
            cashier,
            seeded.products,
            gates,
            boards,
            seeded.gates,
        )
        wait_until(world.synced, "both gates synced from a snapshot", SLOW, interval=0.2)
        yield world


def _gate_config(
    gate: str, board: RelayBoardSim, broker: MosquittoProcess, cloud: CloudServer, username: str, folder: Path
) -> dict[str, Any]:
    return {
        "gate": {"gate_id": gate, "site_id": SITE, "rescan_seconds": 0, "passback_seconds": 0},
        # No passage sensor: an admission counts when the barrier opens, so every admitted skier passes.
        "barrier": {"type": "modbus_tcp", "host": "127.0.0.1", "port": board.port, "pulse_ms": 10, "timeout_s": 1},
        "input_debounce_s": 0,
        "max_scan_age_s": 120,
        # The test's skiers queue at machine speed, not a turnstile's: no input limits to hit.
        "intake": {"queue_per_input": 10_000, "rate_per_s": 10_000, "burst": 100_000},
        "sync": {
            "site": SITE,
            "gate": gate,
            "broker_host": "127.0.0.1",
            "broker_port": broker.port,
            "username": username,
            "password_file": str(folder / "password"),
            "snapshot_url": cloud.base,
            "key_root": KEY_ROOT,
            "ack_timeout_s": 3,
            "status_interval_s": 2,
            "keepalive_s": 5,
            "reconnect_max_s": 2,
        },
        "log_level": "INFO",
    }


def _tokens(tickets: list[dict[str, Any]]) -> list[str]:
    return [t["token"] for t in tickets]


def _sell_many(stack: Stack, product: str, count: int) -> list[dict[str, Any]]:
    tickets: list[dict[str, Any]] = []
    while len(tickets) < count:
        tickets += stack.cashier.sell(stack.products[product], min(20, count - len(tickets)))[1]
    return tickets


def test_link_cut_while_gates_admit_hundreds_then_every_event_reaches_the_cloud_once(stack: Stack) -> None:
    day = _sell_many(stack, "day", 200)
    [single] = stack.cashier.sell(stack.products["single"])[1]
    wait_until(stack.synced, "the sold tickets at both gates", SLOW, interval=0.2)
    assert [stack.store(g).ticket_count() for g in GATES] == [201, 201]

    stack.cloud_broker.stop()  # the site-cloud link is cut
    # 100 skiers at each gate, 20 of them at both; a few codes that are no tickets.
    stack.present(
        {
            "g1": _tokens(day[:100]) + _tokens(day[180:]) + ["SFNOTATICKET"] * 3,
            "g2": _tokens(day[100:]) + ["garbage"] * 2,
        }
    )
    single_id = str(single["id"])
    stack.present({"g1": [single["token"]]})
    g2 = stack.store("g2")
    wait_until(
        lambda: [e.gate_id for e in g2.entries() if e.ticket_id == single_id] == ["g1"],
        "g1's passage of the single-use ticket reached g2 through the site broker",
        SLOW,
    )
    stack.present({"g2": [single["token"]]})
    assert [(e.outcome, e.code) for e in g2.entries(own=True) if e.ticket_id == single_id] == [("deny", "used_up")]
    wait_until(stack.peers_agree, "each gate learnt every passage at the other", SLOW, interval=0.2)
    # Long enough for both gates to give up on the cloud's acks once and publish everything again.
    wait_until(lambda: all(stack.gates[g].said(REPUBLISHED) for g in GATES), "gates republishing", SLOW, interval=0.2)
    assert stack.cloud_rows("SELECT count(*) FROM gate_passages") == [(0,)]  # the link really was cut

    stack.cloud_broker.start()  # same port, same persistence
    wait_until(stack.outboxes_empty, "both outboxes emptied by the cloud's acks", SLOW, interval=0.2)

    journal = [
        (e.event_id, g, e.outcome, bool(e.passed), e.counted, e.ticket_id)
        for g in GATES
        for e in stack.store(g).entries(own=True)
    ]
    stored = [
        (uuid.UUID(hex=event_id), g, outcome, bool(passed), bool(counted), ticket_id)
        for event_id, g, outcome, passed, counted, ticket_id in stack.cloud_rows(
            "SELECT p.event_id, g.code, p.outcome, p.passed, p.counted, p.ticket_id "
            "FROM gate_passages p JOIN gates g ON g.id = p.gate_id"
        )
    ]
    assert len(stored) == len({e[0] for e in stored})  # nothing doubled
    assert {e[0]: e for e in stored} == {e[0]: e for e in journal}  # nothing lost or invented, each as made
    admitted = Counter(g for _, g, outcome, passed, _, _ in journal if outcome == "admit" and passed)
    assert admitted == {"g1": 121, "g2": 100}  # 100 skiers each, 20 of them at both gates, and the single ticket
    assert {g: stack.boards[g].open_count for g in GATES} == admitted  # the barrier opened once per skier
    assert stack.cloud_rows("SELECT count(*) FROM gate_passages WHERE conflict IS NOT NULL") == [(0,)]

    counted = Counter(ticket_id for _, _, _, passed, counted, ticket_id in journal if passed and counted)
    entries = {str(tid): used for tid, used in stack.cloud_rows("SELECT id, entries_used FROM tickets")}
    assert entries == {tid: counted[tid] for tid in entries}
    assert entries[single_id] == 1 and sum(entries.values()) == 221


def test_cloud_and_both_brokers_restart_mid_sync_and_the_gate_caches_converge(stack: Stack) -> None:
    start = stack.cloud_head().seq
    sold: list[dict[str, Any]] = []
    failure: list[BaseException] = []
    closing = threading.Event()

    def ticket_window() -> None:
        """Sells 300 day tickets, 10 an order, and keeps trying while the cloud is away."""
        try:
            while len(sold) < 300 and not closing.is_set():
                sold.extend(stack.cashier.sell(stack.products["day"], 10, patience=SLOW)[1])
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    seller = threading.Thread(target=ticket_window, name="ticket-window")
    seller.start()
    try:
        # Two orders in: the window still has 28 to sell (a loaded machine's gates lag, so not later).
        wait_until(lambda: min(stack.feed_seq(g) for g in GATES) >= start + 20, "the gates mid-burst", SLOW)
        selling = seller.is_alive()
        stack.cloud.kill()
        at_kill = {g: stack.feed_seq(g) for g in GATES}
        stack.cloud_broker.stop()
        stack.site_broker.stop()
        stack.cloud.start()  # sells again; publishes nothing until its broker is back
        stack.cloud_broker.start()
        stack.site_broker.start()
        seller.join(SLOW * 2)
    finally:
        closing.set()
        seller.join(SLOW)
    assert not failure, failure
    assert selling, "the burst was over before the cloud was killed"
    assert len({t["id"] for t in sold}) == 300
    later = [stack.cashier.sell(stack.products["single"])[1][0] for _ in range(3)]
    order, [refunded] = stack.cashier.sell(stack.products["day"], days_ahead=1)
    stack.cashier.refund(order, [refunded["id"]])

    wait_until(stack.synced, "both gates at the cloud's feed head", SLOW, interval=0.25)
    head = stack.cloud_head()
    wait_until(lambda: stack.cloud_sees_gates_at(head.seq), "the cloud's view of the gates", SLOW, interval=0.25)
    print(f"feed: {start} before the burst, gates at {at_kill} when the cloud was killed, {head.seq} at the end")
    assert head.tickets == 300 + 3 + 1
    for g in GATES:
        store = GateStore(stack.gates[g].db)
        try:
            assert (g, ticket_checksum(store), store.ticket_count()) == (g, head.checksum, head.tickets)
            assert all(store.ticket(str(t["id"])) is not None for t in [*sold, *later])
            assert store.status(str(refunded["id"])) is TicketStatus.REVOKED
        finally:
            store.close()
