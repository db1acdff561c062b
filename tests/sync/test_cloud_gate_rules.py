"""Gates and passes from the cloud, for real: cloud process → cloud broker → bridge → site broker → a gate process
(`harness.resort.Resort`), the back office speaking to the cloud's API and a technician to the gate's page.

- A season pass blocked in the cloud (a lost card) comes down the feed and the gate denies it ``blocked``;
  unblocked, the gate admits it again.
- Rules set in the cloud for the gate (here: no season passes at this gate) change its decisions without a
  restart, survive a resync, and the page's status says they are the cloud's and since when; withdrawn,
  the gate is back on its file's rules and admits the pass.
- Rules on the feed that name another site or gate are refused and logged; the gate keeps its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge import store as edge_store
from edge.store import GateStore, GateStoreReader
from edge.store.feed import cloud_rules
from harness.cloud_api import API, Sale
from harness.mosquitto import AnonymousBroker
from harness.processes import eventually, wait_until
from harness.resort import Resort
from models import GateConfig, TicketStatus
from models.sync import GateConfigChange
from tests.sync.gate_sync_kit import SITE, SnapshotServer, gate_sync, peer, running

GATE = "north-1"
RESCAN_S = 3.0  # the resort's gates repeat an answer to the same code within this time (`Resort`)
WAIT = 30.0


@pytest.fixture(scope="module")
def resort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resort]:
    with Resort(tmp_path_factory.mktemp("gate-rules") / "resort", gates=((GATE, "北门1号"),), web=True) as r:
        yield r


@pytest.fixture(scope="module")
def page(resort: Resort) -> Iterator[httpx.Client]:
    """The gate's technician page, signed in as the resort's technician (an account from the cloud)."""
    with httpx.Client(base_url=resort.page_url(GATE), timeout=10) as client:
        username, password = resort.technician
        wait_until(lambda: gate_store(resort).technicians() != {}, "the technician list at the gate", WAIT)
        r = client.post("/api/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        client.headers["X-CSRF-Token"] = r.json()["csrf"]
        yield client


def _ok(r: Any) -> Any:
    assert r.status_code < 400, r.text
    return r.json()


def gate_store(resort: Resort) -> GateStoreReader:
    return GateStoreReader(resort.workdir / "gates" / GATE / "gate.db")  # where `Resort` keeps each gate's store


def gate_id(resort: Resort) -> int:
    return int(resort.api.gates[GATE].username.removeprefix("gate-"))  # the cloud's id, in the gate's login


def status(page: httpx.Client) -> dict[str, Any]:
    return dict(_ok(page.get("/api/status")))


def season_pass_at_the_gate(resort: Resort) -> Sale:
    sale = resort.sell("season")
    wait_until(lambda: gate_store(resort).has_ticket(str(sale.ticket_id)), "the pass came down the feed", WAIT)
    return sale


def walk_back(after: float) -> None:
    """The skier walks back to the gate: past the time it repeats its last answer to the same code."""
    time.sleep(max(0.0, after + RESCAN_S + 0.5 - time.monotonic()))


def test_a_pass_blocked_in_the_cloud_is_denied_at_the_gate_and_admitted_again_once_unblocked(resort: Resort) -> None:
    sale = season_pass_at_the_gate(resort)
    tid = str(sale.ticket_id)

    _ok(resort.api.cashier.post(f"{API}/tickets/{tid}/block", json={"reason": "lost card, reported by phone"}))
    wait_until(lambda: gate_store(resort).status(tid) is TicketStatus.BLOCKED, "the block at the gate", WAIT)
    denied = resort.scan(GATE, sale.token)
    denied_at = time.monotonic()
    assert denied is not None and (denied.admit, denied.code) == (False, "blocked")

    _ok(resort.api.cashier.post(f"{API}/tickets/{tid}/unblock", json={"reason": "card found at the lift"}))
    wait_until(lambda: gate_store(resort).status(tid) is None, "the unblock at the gate", WAIT)
    walk_back(denied_at)
    admitted = resort.scan(GATE, sale.token)
    assert admitted is not None and (admitted.admit, admitted.code, admitted.passed) == (True, "ok", True)


def test_rules_set_in_the_cloud_change_the_gates_decisions_live_and_withdrawn_the_files_rules_are_back(
    resort: Resort, page: httpx.Client
) -> None:
    assert (status(page)["rules_source"], status(page)["rules_since"]) == ("local", None)
    sale = season_pass_at_the_gate(resort)
    rules = {"allowed_kinds": ["day", "punch", "time_window"], "rescan_seconds": RESCAN_S, "passback_seconds": 10}
    _ok(resort.api.admin.put(f"{API}/gates/{gate_id(resort)}/rules", json=rules))
    wait_until(lambda: status(page)["rules_source"] == "cloud", "the cloud's rules in force at the gate", WAIT)
    since = status(page)["rules_since"]
    assert since is not None and status(page)["rules_problem"] is None

    denied = resort.scan(GATE, sale.token)
    denied_at = time.monotonic()
    assert denied is not None and (denied.admit, denied.code) == (False, "wrong_gate"), "no season passes here"
    day = resort.sell("day")
    wait_until(lambda: gate_store(resort).has_ticket(str(day.ticket_id)), "the day ticket at the gate", WAIT)
    admitted = resort.scan(GATE, day.token)
    assert admitted is not None and (admitted.admit, admitted.code) == (True, "ok"), "a day ticket still is"

    # A resync (the snapshot carries this gate's rules) keeps them, and since when they are in force.
    seq = status(page)["feed_seq"]
    _ok(page.post("/api/actions/resync", json={"justification": "checking the rules survive a snapshot"}))
    wait_until(lambda: not status(page)["resyncing"] and status(page)["feed_seq"] >= seq, "the resync", WAIT)
    assert (status(page)["rules_source"], status(page)["rules_since"]) == ("cloud", since)

    _ok(resort.api.admin.delete(f"{API}/gates/{gate_id(resort)}/rules"))
    wait_until(lambda: status(page)["rules_source"] == "local", "the file's rules in force again", WAIT)
    walk_back(denied_at)
    again = resort.scan(GATE, sale.token)
    assert again is not None and (again.admit, again.code, again.passed) == (True, "ok", True)


def test_rules_on_the_feed_that_name_another_site_are_refused_and_the_gate_keeps_its_own(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Against a real Mosquitto and the gate's own sync client (the fake cloud of gate_sync_kit.py)."""
    store = GateStore(tmp_path / "gate.db")
    mine = GateConfig(gate_id="g1", site_id=SITE, daily_limit=3)

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                cloud.feed(1, GateConfigChange(gate_id="g1", config=mine))
                cloud.feed(2, GateConfigChange(gate_id="g1", config=mine.model_copy(update={"site_id": "beidahu"})))
                cloud.feed(3, GateConfigChange(gate_id="g1", config=mine.model_copy(update={"gate_id": "g9"})))
                await eventually(lambda: sync.feed_seq == 3, "feed applied up to 3")

    with caplog.at_level(logging.ERROR, logger="starfish.sync"):
        asyncio.run(scenario())
    assert edge_store.feed_seq(store) == 3, "a refused change is skipped, never a gap"
    stored = cloud_rules(store)
    assert stored is not None and stored[0] == mine
    refused = [r.getMessage() for r in caplog.records if "gate rules for" in r.getMessage()]
    assert len(refused) == 2 and "beidahu/g1" in refused[0] and "nanshan/g9" in refused[1]
    store.close()
