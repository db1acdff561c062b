"""A face's deletion for real: cloud process (real encoder) → cloud broker → bridge → site broker → two gate
processes, and each gate's confirmation back up through its status.

A season-pass holder is enrolled at the window with a real photo; both gates of the site get the sealed
template. The pass is refunded: each gate deletes it, and the back office lists "deleted on <gate> at
<time>" for both.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from harness.cloud_api import API, resort_today
from harness.processes import poll_until
from harness.resort import Resort
from harness.testdata import SHARED_TESTDATA

OBAMA = SHARED_TESTDATA / "faces" / "obama.jpg"
WAIT = 60.0


def _ok(r: Any) -> Any:
    assert r.status_code < 400, r.text
    return r.json()


def test_a_refunded_passes_face_is_deleted_on_every_gate_and_each_gate_confirms_it(tmp_path: Path) -> None:
    with Resort(tmp_path / "resort", site="nanshan", season_holders=1) as resort:
        sale = resort.sell("season", resort_today() + timedelta(days=1))  # refundable until tomorrow starts
        cashier, admin = resort.api.cashier, resort.api.admin
        holder_id = _ok(cashier.get(f"{API}/tickets/{sale.ticket_id}"))["holder_id"]
        window = f"{API}/customers/{resort.api.customer_id}/holders/{holder_id}/face"
        _ok(cashier.post(f"{window}/consent", json={"text_version": "2026-12"}))
        enrolled = _ok(cashier.put(window, files={"photo": ("obama.jpg", OBAMA.read_bytes(), "image/jpeg")}))
        assert [c["ticket_id"] for c in enrolled["carried_by"]] == [str(sale.ticket_id)]

        held = [str(sale.ticket_id)]
        assert poll_until(lambda: all(resort.gate_faces(g) == held for g in resort.gates), WAIT), {
            g: resort.gate_faces(g) for g in resort.gates
        }

        resort.api.refund(sale)
        assert poll_until(lambda: all(resort.gate_faces(g) == [] for g in resort.gates), WAIT)

        url = f"{API}/sites/{resort.api.site_id}/face-deletions"

        def confirmed_everywhere() -> bool:
            listed = _ok(admin.get(url))
            return len(listed) == 1 and listed[0]["pending"] == []

        assert poll_until(confirmed_everywhere, WAIT), _ok(admin.get(url))
        [deletion] = _ok(admin.get(url))
        assert deletion["reason"] == "refunded" and deletion["ticket_id"] == str(sale.ticket_id)
        assert sorted(c["gate"] for c in deletion["confirmed"]) == sorted(resort.gates)
        assert all(
            line.startswith(f"deleted on {c['gate']} at ")
            for line, c in zip(deletion["summary"], deletion["confirmed"], strict=True)
        )
        assert _ok(cashier.get(window))["enrolled"] is False  # and the cloud's own copy went with the last pass
