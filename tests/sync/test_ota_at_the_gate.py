"""OTA vouchers for real: a platform's stand-in on loopback (乐冰雪's contract) → the cloud process → cloud broker →
bridge → site broker → a gate process (`harness.resort.Resort`).

- A voucher bought on the platform comes down the site's feed with its plain code; the gate admits the code on
  its own, and the passage reaching the cloud makes the platform's verify call (核销), which the platform
  receives once.
- A voucher the platform refunds is revoked on the feed, and the gate denies it ``revoked``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from edge.store import GateStoreReader
from harness.cloud_api import API, resort_today
from harness.processes import wait_until
from harness.resort import Resort
from models import TicketStatus
from tests.cloud.channels.kit import TEST_SECRETS
from tests.cloud.channels.lebingxue_platform import Lebingxue, lebingxue

pytestmark = pytest.mark.ota

GATE = "north-1"
SKU = "LBX-DAY"
WAIT = 30.0


@pytest.fixture(scope="module")
def platform() -> Iterator[Lebingxue]:
    with lebingxue() as lbx:
        yield lbx


@pytest.fixture(scope="module")
def resort(tmp_path_factory: pytest.TempPathFactory, platform: Lebingxue) -> Iterator[Resort]:
    # A production cloud: the stand-in's URL is pinned in the settings (verify calls go nowhere else).
    secrets = {**TEST_SECRETS, "lebingxue": {**TEST_SECRETS["lebingxue"], "base_url": platform.base_url}}
    env = {"STARFISH_CHANNEL_SECRETS_JSON": json.dumps(secrets), "STARFISH_CHANNEL_CALLS_EVERY_S": "0.3"}
    with Resort(tmp_path_factory.mktemp("ota") / "resort", gates=((GATE, "北门1号"),), cloud_env=env) as r:
        admin = r.api.admin
        channel = {"enabled": True, "base_url": platform.base_url, "freshness_s": 300, "config": {}}
        assert admin.put(f"{API}/channels/lebingxue", json=channel).status_code == 200
        mapping = {"product_id": r.api.products["day"], "price_fen": 19900, "active": True}
        assert admin.put(f"{API}/channels/lebingxue/skus/{SKU}", json=mapping).status_code == 200
        yield r


def bought(resort: Resort, platform: Lebingxue, ref: str, days_ahead: int = 0) -> tuple[str, str]:
    """A voucher bought on the platform, at the gate: (its plain code, our ticket id)."""
    visit = resort_today() + timedelta(days=days_ahead)
    item = {"sku": SKU, "quantity": 1, "visit_date": visit.isoformat(), "item_id": "I1"}
    r = platform.notify(resort.api.base, "order", {"order_id": ref, "items": [item]})
    assert r.status_code == 200 and r.json()["code"] == 0, r.text
    [voucher] = r.json()["data"]["vouchers"]
    code = voucher["code"]
    [found] = resort.api.cashier.get(f"{API}/verify/lookup", params={"q": code}).json()["tickets"]
    ticket_id = str(found["ticket_id"])
    wait_until(lambda: gate_store(resort).has_ticket(ticket_id), "the voucher's ticket came down the feed", WAIT)
    return code, ticket_id


def gate_store(resort: Resort) -> GateStoreReader:
    return GateStoreReader(resort.workdir / "gates" / GATE / "gate.db")  # where `Resort` keeps each gate's store


def call_states(resort: Resort) -> list[str]:
    with contextlib.closing(sqlite3.connect(resort.workdir / "cloud.db")) as db:  # where `Resort` keeps the cloud's
        return [state for (state,) in db.execute("SELECT state FROM channel_calls ORDER BY id")]


def redeemed(platform: Lebingxue) -> list[dict[str, Any]]:
    return [r for got in platform.redemptions for r in json.loads(got.body)["redemptions"]]


def test_a_platform_voucher_is_admitted_by_the_gate_and_the_platform_is_told_once(
    resort: Resort, platform: Lebingxue
) -> None:
    code, ticket_id = bought(resort, platform, "LBX-E2E-1")

    admitted = resort.scan(GATE, code)
    assert admitted is not None and (admitted.admit, admitted.code, admitted.passed) == (True, "ok", True)
    assert admitted.ticket_id == ticket_id

    wait_until(lambda: call_states(resort) == ["done"], "the verify call settled in the cloud", WAIT)
    # Settled, it is never sent again: the platform was told once.
    assert [r["code"] for r in redeemed(platform)] == [code]
    assert len(platform.keys) == 1 and platform.bad_signatures == 0


def test_a_voucher_the_platform_refunds_is_denied_at_the_gate(resort: Resort, platform: Lebingxue) -> None:
    code, ticket_id = bought(resort, platform, "LBX-E2E-2", days_ahead=1)  # refundable: its day has not begun

    r = platform.notify(resort.api.base, "refund", {"order_id": "LBX-E2E-2", "refund_id": "RF-E2E-2", "codes": [code]})
    assert r.status_code == 200 and r.json()["code"] == 0, r.text
    wait_until(lambda: gate_store(resort).status(ticket_id) is TicketStatus.REVOKED, "the revocation at the gate", WAIT)

    denied = resort.scan(GATE, code)
    assert denied is not None and (denied.admit, denied.code) == (False, "revoked")
