"""What the technician page costs the gate: the admission path with nobody looking, then with technicians on it.

    python -m bench.page [--json] [--iterations N] [--viewers N]

The page shares the daemon's event loop with the decisions, so its cost shows up on the admission
path (decoded text -> verify -> decide -> journal commit -> coil-on command acknowledged by a pymodbus
relay-board simulator, as `bench.admission` measures it). Viewers run in another process, as browsers
on a laptop would: each logs in, keeps the live decision stream open, and every 0.25 s asks for the
status and the latest decisions, every 1 s searches the journal and scrapes /metrics (a far busier
page than a technician's, whose page polls the status every 3 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.admission import _CommandClock, _tokens
from bench.stats import summary
from drivers.barrier import ModbusBarrier
from edge.config import parse_config
from edge.daemon import GateDaemon
from edge.store import GateStore
from harness.processes import free_port
from harness.relay_sim import RelayBoardSim
from models.credential import public_key_b64

PASSWORD = "bench page password"
TOKEN = "bench-metrics-token"


def _viewer(base: str, stop: Any, out: Any) -> None:
    """One technician's browser, in a process of its own: request latencies (ms) by kind go to `out`."""
    lat: dict[str, list[float]] = {"status": [], "decisions": [], "journal": [], "metrics": []}
    with httpx.Client(base_url=base, timeout=10) as c:
        while (r := c.post("/api/login", json={"username": "bench", "password": PASSWORD})).status_code == 429:
            time.sleep(0.2)  # another viewer's login from this address is being checked
        r.raise_for_status()
        cookies = dict(c.cookies)

        def stream() -> None:
            with (
                httpx.Client(base_url=base, cookies=cookies, timeout=None) as s,
                s.stream("GET", "/api/decisions/stream") as events,
            ):
                for _ in events.iter_lines():
                    if stop.is_set():
                        return

        threading.Thread(target=stream, daemon=True).start()
        n = 0
        while not stop.is_set():
            for kind, url, headers in [
                ("status", "/api/status", {}),
                ("decisions", "/api/decisions?limit=50", {}),
                *(
                    [
                        ("journal", "/api/journal?limit=100", {}),
                        ("metrics", "/metrics", {"authorization": f"Bearer {TOKEN}"}),
                    ]
                    if n % 4 == 0
                    else []
                ),
            ]:
                t0 = time.perf_counter()
                c.get(url, headers=headers).raise_for_status()
                lat[kind].append((time.perf_counter() - t0) * 1000)
            n += 1
            stop.wait(0.25)
    out.put(lat)


async def _path(daemon: GateDaemon, proxy: _CommandClock, tokens: list[bytes]) -> list[float]:
    samples = []
    for token in tokens:
        t0 = time.perf_counter()
        handled = await daemon.handle(token, "bench")
        if handled.entry.code != "ok":
            raise RuntimeError(f"bench ticket was not admitted: {handled.entry.code}")
        samples.append((proxy.issued_at - t0) * 1000)
        await asyncio.sleep(0.01)  # skiers come one at a time; the page gets the loop in between
    return samples


async def _run(iterations: int, viewers: int, tmp: Path) -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    sim = RelayBoardSim(passage_delay_s=0.0, passage_hold_s=0.0)
    board = await sim.start_tcp()
    (tmp / "token").write_text(TOKEN)
    port = free_port()
    cfg = parse_config(
        {
            "gate": {"gate_id": "bench", "site_id": "bench", "passback_seconds": 0},
            "store": {"path": str(tmp / "page.db")},
            "barrier": {"type": "modbus_tcp", "host": "127.0.0.1", "port": board, "pulse_ms": 0},
            "trusted_keys": {1: public_key_b64(key.public_key())},
            "web": {
                "port": port,
                "break_glass": {"username": "bench", "password_hash": PasswordHasher().hash(PASSWORD)},
                "metrics_token_file": str(tmp / "token"),
            },
        }
    )
    store = GateStore(cfg.store.path)
    proxy = _CommandClock(ModbusBarrier(transport="tcp", host="127.0.0.1", port=board, pulse_ms=0))
    daemon = GateDaemon(cfg, store=store, barrier=proxy)
    task = asyncio.create_task(daemon.run())
    figures: dict[str, Any] = {}
    try:
        while not daemon.controller.healthy:
            await asyncio.sleep(0.01)
        tokens = _tokens(key, 2 * iterations + 20)
        await _path(daemon, proxy, tokens[:20])  # warm up
        figures["quiet"] = summary(await _path(daemon, proxy, tokens[20 : 20 + iterations]))

        ctx = mp.get_context("spawn")
        stop, out = ctx.Event(), ctx.Queue()
        base = f"http://127.0.0.1:{port}"
        procs = [ctx.Process(target=_viewer, args=(base, stop, out)) for _ in range(viewers)]
        for p in procs:
            p.start()
        await asyncio.sleep(3.0)  # spawned, logged in (argon2), streaming
        t0 = time.perf_counter()
        figures["page_open"] = summary(await _path(daemon, proxy, tokens[20 + iterations :]))
        seconds = time.perf_counter() - t0
        stop.set()
        lat: dict[str, list[float]] = {}
        for _ in procs:
            for kind, values in (await asyncio.to_thread(out.get, True, 30)).items():
                lat.setdefault(kind, []).extend(values)
        for p in procs:
            await asyncio.to_thread(p.join, 10)
        figures["requests"] = {kind: summary(v) for kind, v in lat.items() if v}
        figures["requests_per_s"] = round(sum(len(v) for v in lat.values()) / seconds, 1)
    finally:
        daemon.request_stop()
        await task
        store.close()
        await sim.stop()
    figures["path_median_ms_quiet"] = figures["quiet"]["median_ms"]
    figures["path_p99_ms_quiet"] = figures["quiet"]["p99_ms"]
    figures["path_median_ms_page_open"] = figures["page_open"]["median_ms"]
    figures["path_p99_ms_page_open"] = figures["page_open"]["p99_ms"]
    figures["status_p99_ms"] = figures["requests"]["status"]["p99_ms"]
    figures["metrics_p99_ms"] = figures["requests"]["metrics"]["p99_ms"]
    figures["viewers"] = viewers
    return figures


def _print(f: dict[str, Any]) -> None:
    print(f"{'admission path (text -> barrier cmd)':<44}{'median ms':>12}{'p99 ms':>12}")
    print(f"{'  nobody on the page':<44}{f['quiet']['median_ms']:>12.3f}{f['quiet']['p99_ms']:>12.3f}")
    label = f"  {f['viewers']} viewers on the page"
    print(f"{label:<44}{f['page_open']['median_ms']:>12.3f}{f['page_open']['p99_ms']:>12.3f}")
    print(f"\npage requests answered ({f['requests_per_s']}/s, seen by the viewers)")
    for kind, s in f["requests"].items():
        print(f"  {kind:<42}{s['median_ms']:>12.3f}{s['p99_ms']:>12.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--viewers", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="starfish-bench-page-") as tmp:
        figures = asyncio.run(_run(args.iterations, args.viewers, Path(tmp)))
    if args.json:
        print(json.dumps(figures))
    else:
        _print(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
