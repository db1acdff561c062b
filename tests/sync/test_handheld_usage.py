"""A ticket used twice, once at a handheld and once at a gate, for real: cloud process → cloud broker → bridge →
site broker → a gate process (`harness.resort.Resort`), the handheld speaking to the cloud's API.

- handheld then gate: a single-entry ticket verified (核销) at a handheld comes down the feed as a `usage`
  change, and the gate denies it ``used_up`` on its own; undone, it comes down again and the gate admits it,
  once, and the cloud counts that one entry.
- gate then handheld: the gate admits the ticket, its passage reaches the cloud, and the handheld is refused
  ``used_up``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from edge.store import GateStoreReader
from harness.cloud_api import API, Sale
from harness.processes import wait_until
from harness.resort import Resort
from harness.resort_views import cloud_passages

GATE = "north-1"
RESCAN_S = 3.0  # the resort's gates repeat an answer to the same code within this time (`Resort`)
WAIT = 30.0


@pytest.fixture(scope="module")
def resort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resort]:
    with Resort(tmp_path_factory.mktemp("handheld") / "resort", gates=((GATE, "北门1号"),)) as r:
        yield r


def _ok(r: Any) -> Any:
    assert r.status_code < 400, r.text
    return r.json()


def handheld_verify(resort: Resort, code: str) -> dict[str, Any]:
    """A staff member's handheld verifies a code, online (the cashier may)."""
    body = {
        "code": code,
        "event_id": str(uuid.uuid4()),
        "at": datetime.now(UTC).isoformat(),
        "device": "hh-01",
        "site_id": resort.api.site_id,
    }
    return dict(_ok(resort.api.cashier.post(f"{API}/verify", json=body)))


def gate_store(resort: Resort) -> GateStoreReader:
    return GateStoreReader(resort.workdir / "gates" / GATE / "gate.db")  # where `Resort` keeps each gate's store


def handheld_uses_at_gate(resort: Resort) -> list[tuple[str, str, str | None]]:
    """The passages this gate learnt from elsewhere (here, only the handheld's): (event id, gate id, ticket)."""
    return [(str(e.event_id), e.gate_id, e.ticket_id) for e in gate_store(resort).entries(own=False)]


def entries_used(resort: Resort, ticket_id: int) -> int:
    [found] = _ok(resort.api.cashier.get(f"{API}/verify/lookup", params={"q": str(ticket_id)}))["tickets"]
    return int(found["entries_used"])


def sold_and_at_the_gate(resort: Resort) -> Sale:
    sale = resort.sell("single")
    wait_until(lambda: gate_store(resort).has_ticket(str(sale.ticket_id)), "the ticket came down the feed", WAIT)
    return sale


def test_a_ticket_verified_at_a_handheld_is_denied_at_the_gate_and_admitted_once_after_the_undo(
    resort: Resort,
) -> None:
    sale = sold_and_at_the_gate(resort)
    before = handheld_uses_at_gate(resort)

    verified = handheld_verify(resort, sale.token)
    assert verified["accepted"], verified
    use = (verified["event_id"], "handheld:hh-01", str(sale.ticket_id))
    wait_until(lambda: handheld_uses_at_gate(resort) == [*before, use], "the handheld's use at the gate", WAIT)
    denied = resort.scan(GATE, sale.token)
    denied_at = time.monotonic()
    assert denied is not None and (denied.admit, denied.code) == (False, "used_up")

    _ok(resort.api.cashier.post(f"{API}/verify/{verified['id']}/undo", json={"reason": "scanned the wrong guest"}))
    wait_until(lambda: handheld_uses_at_gate(resort) == before, "the undo at the gate", WAIT)
    time.sleep(max(0.0, denied_at + RESCAN_S + 0.5 - time.monotonic()))  # the skier walks back to the gate
    admitted = resort.scan(GATE, sale.token)
    assert admitted is not None and (admitted.admit, admitted.code, admitted.passed) == (True, "ok", True)

    passages = resort.workdir / "cloud.db"
    wait_until(lambda: (GATE, admitted.event_id) in cloud_passages(passages), "the gate's passage in the cloud", WAIT)
    assert entries_used(resort, sale.ticket_id) == 1, "the undone verification counts nothing, the gate's once"


def test_a_ticket_admitted_at_the_gate_is_refused_at_the_handheld_once_its_passage_reached_the_cloud(
    resort: Resort,
) -> None:
    sale = sold_and_at_the_gate(resort)

    admitted = resort.scan(GATE, sale.token)
    assert admitted is not None and (admitted.admit, admitted.code, admitted.passed) == (True, "ok", True)
    passages = resort.workdir / "cloud.db"
    wait_until(lambda: (GATE, admitted.event_id) in cloud_passages(passages), "the gate's passage in the cloud", WAIT)

    refused = handheld_verify(resort, sale.token)
    assert (refused["accepted"], refused["reason"], refused["entries_left"]) == (False, "used_up", 0)
    assert entries_used(resort, sale.ticket_id) == 1
