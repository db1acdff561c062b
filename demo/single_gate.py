"""`starfish demo --single`: one simulated gate and a scripted queue of skiers.

A virtual camera shows generated ticket images (real QR codes, decoded by the real
decoder), the barrier is a simulated Modbus relay board spoken to over Modbus TCP on
loopback, and the journal is a real SQLite store in a temporary folder. The signing key is
made fresh for each run: the demo never uses a key that could sign a real ticket.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

from edge.config import EdgeConfig, parse_config
from edge.daemon import GateDaemon, Handled
from edge.hardware import Barrier
from edge.reasons import reason
from edge.store import GateStore
from harness.cloud_api import DemoCloud, demo_cloud, resort_today
from models import ProductKind, Ticket
from models.credential import issue

FRAME_W, FRAME_H = 640, 480
SITE = "demo"  # the code DemoCloud.set_up_resort registers


@dataclass(frozen=True, slots=True)
class Skier:
    name: str
    code: str
    expect: str  # the decision code the script expects


def ticket_frame(text: str, *, rng: np.random.Generator) -> np.ndarray:
    """A 640x480 camera frame showing a QR code of `text` on a phone-ish background, with noise."""
    qr = segno.make(text, error="M", micro=False)
    matrix = np.array([list(row) for row in qr.matrix], dtype=np.uint8)
    code = np.pad(np.where(matrix == 1, 0, 255).astype(np.uint8), 4, constant_values=255)
    code = np.kron(code, np.ones((6, 6), dtype=np.uint8))
    frame = np.full((FRAME_H, FRAME_W), 90, dtype=np.uint8)
    h, w = code.shape
    top, left = (FRAME_H - h) // 2 + int(rng.integers(-20, 20)), (FRAME_W - w) // 2 + int(rng.integers(-60, 60))
    frame[top : top + h, left : left + w] = code
    noisy = frame.astype(np.int16) + rng.normal(0, 6, frame.shape).astype(np.int16)
    return cv2.cvtColor(np.clip(noisy, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


class VirtualCamera:
    """Plays a script of frames at a fixed rate: each skier's ticket in view, then an empty lane."""

    def __init__(self, codes: list[str], *, fps: float = 15.0, show_s: float = 0.5, gap_s: float = 1.3) -> None:
        rng = np.random.default_rng(7)
        empty = np.full((FRAME_H, FRAME_W, 3), 90, dtype=np.uint8)
        self._frames: list[np.ndarray] = []
        for code in codes:
            self._frames += [ticket_frame(code, rng=rng)] * max(1, int(show_s * fps))
            self._frames += [empty] * max(1, int(gap_s * fps))
        self._interval = 1.0 / fps
        self._i = 0
        self._closed = threading.Event()

    def read(self) -> np.ndarray | None:
        if self._i >= len(self._frames) or self._closed.wait(self._interval):
            return None
        frame = self._frames[self._i]
        self._i += 1
        return frame

    def close(self) -> None:
        self._closed.set()


def script(key: Ed25519PrivateKey, now: datetime, sold: dict[str, str]) -> tuple[list[Skier], list[Ticket]]:
    """The skiers and the OTA voucher the gate's cache holds; `sold` are tokens the cloud sold."""

    def token(no: int, kind: ProductKind, start: datetime, end: datetime) -> str:
        return issue(key, key_id=1, kind=kind, ticket_no=no, valid_from=start, valid_until=end, site=SITE)

    day_start, day_end = now - timedelta(hours=2), now + timedelta(hours=10)
    forger = Ed25519PrivateKey.generate()
    meituan = Ticket(
        ticket_id="900001",
        kind=ProductKind.DAY,
        code="88020261220",
        valid_from=day_start,
        valid_until=day_end,
        entries=1,
    )
    yesterday = token(9005, ProductKind.DAY, now - timedelta(days=1, hours=2), now - timedelta(hours=14))
    forged = issue(
        forger, key_id=1, kind=ProductKind.DAY, ticket_no=9004, valid_from=day_start, valid_until=day_end, site=SITE
    )
    skiers = [
        Skier("张伟 (day ticket, window sale)", sold["zhang"], "ok"),
        Skier("李娜 (10-entry punch card)", sold["lina"], "ok"),
        Skier("王芳 (refunded ticket)", sold["wang"], "revoked"),
        Skier("forged ticket", forged, "bad_signature"),
        Skier("刘洋 (yesterday's ticket)", yesterday, "expired"),
        Skier("陈静 (美团 voucher)", "88020261220", "ok"),
        Skier("unknown voucher", "88099999999", "unknown_ticket"),
        Skier("赵磊 (4-hour ticket)", sold["zhao"], "ok"),
        Skier("a shop's QR code", "HTTPS://SHOP.EXAMPLE/ITEM?ID=42&REF=POSTER", "unreadable"),
        Skier("张伟 again (ticket passed back)", sold["zhang"], "passback"),
        Skier("孙悦 (tomorrow's ticket)", sold["sun"], "not_yet_valid"),
        Skier("陈静's voucher, second use", "88020261220", "used_up"),
    ]
    return skiers, [meituan]


def sell_through_cloud(cloud: DemoCloud) -> dict[str, str]:
    """The demo's tickets, sold at the ticket window through the cloud's API; 王芳's is refunded."""
    cloud.set_up_resort()
    today = resort_today()
    sold = {}
    sold["zhang"] = cloud.sell("day", today).token
    sold["lina"] = cloud.sell("punch10", today).token
    wang = cloud.sell("day", today + timedelta(days=1))
    cloud.refund(wang)  # refunds close when the visit day starts: she refunds tomorrow's ticket
    sold["wang"] = wang.token
    sold["zhao"] = cloud.sell("4h", today).token
    sold["sun"] = cloud.sell("day", today + timedelta(days=1)).token
    return sold


async def run_demo(duration_s: float, *, console: Console | None = None) -> int:
    """Run the scripted queue through one simulated gate; 0 when every decision was as expected."""
    from drivers.qr import DEFAULT_DECODER, make_decoder
    from harness.relay_sim import RelayBoardSim

    console = console or Console(width=160)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    now = datetime.now(UTC)
    results: list[tuple[Skier, Handled]] = []
    sim = RelayBoardSim(passage_delay_s=0.1, passage_hold_s=0.3)
    port = await sim.start_tcp()
    with tempfile.TemporaryDirectory(prefix="starfish-demo-") as tmp, demo_cloud(Path(tmp)) as cloud:
        sold = sell_through_cloud(cloud.api)
        skiers, tickets = script(cloud.settings.signing_key, now, sold)
        pending = list(skiers)
        console.print(
            f"[bold]cloud[/] {cloud.api.base}: site, {len(cloud.api.gates)} gates, {len(cloud.api.products)} products; "
            f"sold {len(sold)} tickets at the window, refunded 1"
        )
        cfg = parse_config(
            {
                "gate": {"gate_id": "demo-north-1", "site_id": SITE},
                "store": {"path": str(Path(tmp) / "gate.db")},
                "barrier": {
                    "type": "modbus_tcp",
                    "host": "127.0.0.1",
                    "port": port,
                    "passage_input": 0,
                    "fire_alarm_input": 1,
                    "passage_timeout_s": 3,
                },
                "input_debounce_s": 1.0,
            }
        )
        store = GateStore(cfg.store.path)
        cloud.hand_to_gate(store)  # no sync in this demo: keys, tickets and revocations by direct call
        store.upsert_tickets(tickets)
        console.print(
            f"[bold]gate[/] {cfg.gate.gate_id}: {store.ticket_count()} tickets cached, "
            f"relay board sim on 127.0.0.1:{port}, decoder {DEFAULT_DECODER}"
        )

        def on_handled(h: Handled) -> None:
            text = h.data.decode("utf-8", "replace")
            skier = next((s for s in pending if s.code == text), None)
            if skier is None:
                return
            pending.remove(skier)
            results.append((skier, h))
            mark = "[green]ADMIT[/]" if h.entry.outcome.value == "admit" else "[red]DENY [/]"
            ok = "" if h.entry.code == skier.expect else f"  [yellow](expected {skier.expect})[/]"
            console.print(
                f"{mark} {skier.name:<34} {h.entry.code:<14} {reason(h.entry.code, 'zh')} / {reason(h.entry.code)}{ok}"
            )

        camera = VirtualCamera([s.code for s in skiers])
        daemon = GateDaemon(
            cfg,
            store=store,
            barrier=_barrier(cfg),
            camera=camera,
            decoder=make_decoder(DEFAULT_DECODER),
            on_handled=on_handled,
        )
        task = asyncio.create_task(daemon.run())
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline and pending:
            await asyncio.sleep(0.1)
        daemon.request_stop()
        await task
        store.close()
    await sim.stop()
    return _summary(console, skiers, results, sim.open_count)


def _barrier(cfg: EdgeConfig) -> Barrier:
    from edge.hardware import make_barrier

    return make_barrier(cfg.barrier)


def _summary(console: Console, skiers: list[Skier], results: list[tuple[Skier, Handled]], opens: int) -> int:
    by_code = Counter(h.entry.code for _, h in results)
    admitted = sum(1 for _, h in results if h.entry.outcome.value == "admit")
    table = Table(title="Summary")
    table.add_column("decision")
    table.add_column("count", justify="right")
    for code, n in sorted(by_code.items()):
        table.add_row(code, str(n))
    console.print(table)
    wrong = [(s, h) for s, h in results if h.entry.code != s.expect]
    console.print(
        f"{len(results)} of {len(skiers)} skiers decided: {admitted} admitted, {len(results) - admitted} denied; "
        f"barrier opened {opens} times; {len(wrong)} unexpected decisions"
    )
    return 0 if not wrong and len(results) == len(skiers) else 1
