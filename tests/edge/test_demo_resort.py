"""`starfish demo`: the whole resort on one machine, the cloud link cut and restored, every passage counted once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_resort_demo_keeps_admitting_while_the_cloud_link_is_cut_and_the_cloud_gets_every_passage_once() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "starfish", "demo", "--duration", "15", "--cut-at", "4", "--restore-at", "9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    out = run.stdout
    assert run.returncode == 0, out[-4000:] + run.stderr[-4000:]
    assert "cloud link CUT (--cut-at)" in out and "cloud link restored (--restore-at)" in out

    # Not a terminal: plain status lines. While cut, the gates kept deciding and held the events in their outboxes.
    cut = [line for line in out.splitlines() if " link CUT | " in line]
    assert any(int(n) > 0 for line in cut for n in re.findall(r"outbox (\d+)", line)), cut

    check = re.search(r"^exactly once: OK: (\d+) passages stored in the cloud, (\d+) journaled at the gates", out, re.M)
    assert check is not None, out[-4000:]
    assert check[1] == check[2] and int(check[1]) > 0
