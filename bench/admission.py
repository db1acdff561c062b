"""Gate admission benchmark: each stage, and the whole path from decoded frame to barrier command.

    python -m bench.admission [--json] [--iterations N]

Stages: decode a 640x480 frame (each decoder), verify a credential, decide, journal commit
(SQLite WAL, synchronous=FULL, on this disk), Modbus TCP pulse command (to a pymodbus
relay-board simulator on loopback, pulse length 0), and the whole path: decoded text ->
verify -> cache lookup -> decide -> journal commit -> coil-on command acknowledged by the board.
Also the decode rate of each decoder on ../shared/testdata/qr-photos.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.qr_decode import frame_decode_timings, photo_decode_rates
from bench.stats import summary, time_async, time_sync
from drivers.barrier import BarrierInputs, ModbusBarrier
from drivers.qr import DEFAULT_DECODER
from edge.config import parse_config
from edge.daemon import GateDaemon
from edge.decision import History, decide
from edge.gate import GateService
from edge.store import GateStore
from harness.relay_sim import RelayBoardSim
from harness.testdata import SHARED_TESTDATA
from harness.tickets import make_ticket, sign
from models import GateConfig
from models.credential import parse, public_key_b64

NOW = datetime.now(UTC)


def _tokens(key: Ed25519PrivateKey, n: int) -> list[bytes]:
    return [
        sign(
            key,
            make_ticket(
                ticket_id=str(10_000 + i), valid_from=NOW - timedelta(hours=1), valid_until=NOW + timedelta(hours=10)
            ),
            site="bench",
        ).encode()
        for i in range(n)
    ]


class _CommandClock:
    """Wraps the barrier to note when the open command was acknowledged."""

    def __init__(self, barrier: ModbusBarrier) -> None:
        self.barrier = barrier
        self.issued_at = 0.0

    async def connect(self) -> None:
        await self.barrier.connect()

    async def close(self) -> None:
        await self.barrier.close()

    async def pulse_open(self) -> None:
        await self.barrier.pulse_open()
        self.issued_at = time.perf_counter()

    async def set_hold_open(self, on: bool) -> None:
        await self.barrier.set_hold_open(on)

    async def read_inputs(self) -> BarrierInputs:
        return await self.barrier.read_inputs()

    @property
    def healthy(self) -> bool:
        return self.barrier.healthy

    @property
    def last_error(self) -> str | None:
        return self.barrier.last_error


async def _modbus_and_path(key: Ed25519PrivateKey, iterations: int, tmp: Path) -> dict[str, Any]:
    sim = RelayBoardSim(passage_delay_s=0.0, passage_hold_s=0.0)
    port = await sim.start_tcp()
    out: dict[str, Any] = {}
    try:
        barrier = ModbusBarrier(transport="tcp", host="127.0.0.1", port=port, pulse_ms=0)
        await barrier.connect()
        out["modbus_tcp_pulse"] = await time_async(barrier.pulse_open, iterations)
        await barrier.close()

        cfg = parse_config(
            {
                "gate": {"gate_id": "bench", "site_id": "bench", "passback_seconds": 0},
                "store": {"path": str(tmp / "path.db")},
                "barrier": {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "pulse_ms": 0},
                "trusted_keys": {1: public_key_b64(key.public_key())},
            }
        )
        store = GateStore(cfg.store.path)
        proxy = _CommandClock(ModbusBarrier(transport="tcp", host="127.0.0.1", port=port, pulse_ms=0))
        daemon = GateDaemon(cfg, store=store, barrier=proxy)
        task = asyncio.create_task(daemon.run())
        while not daemon.controller.healthy:
            await asyncio.sleep(0.01)
        tokens = _tokens(key, iterations + 20)
        samples = []
        for i, token in enumerate(tokens):
            t0 = time.perf_counter()
            handled = await daemon.handle(token, "bench")
            if handled.entry.code != "ok":
                raise RuntimeError(f"bench ticket was not admitted: {handled.entry.code}")
            if i >= 20:
                samples.append((proxy.issued_at - t0) * 1000)
        out["path"] = summary(samples)
        daemon.request_stop()
        await task
        store.close()
    finally:
        await sim.stop()
    return out


def run(iterations: int) -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    keys = {1: key.public_key()}
    token = _tokens(key, 1)[0]
    gate = GateConfig(gate_id="bench", site_id="bench")
    figures: dict[str, Any] = {"default_decoder": DEFAULT_DECODER}

    figures["decode_frame"] = frame_decode_timings(iterations)
    figures["verify"] = time_sync(lambda: parse(token, keys), iterations)
    cred = parse(token, keys)
    figures["decide"] = time_sync(lambda: decide(cred, None, History(), gate, NOW), iterations)

    with tempfile.TemporaryDirectory(prefix="starfish-bench-") as tmp:
        store = GateStore(Path(tmp) / "journal.db")
        service = GateService(store=store, config=gate)
        service.use_keys({1: public_key_b64(key.public_key())})
        ev = service.evaluate(b"NOT-A-TICKET-01", NOW)
        counter = itertools.count()
        figures["journal_commit"] = time_sync(
            lambda: service.journal(ev, NOW + timedelta(microseconds=next(counter))), iterations
        )
        store.close()
        figures.update(asyncio.run(_modbus_and_path(key, iterations, Path(tmp))))

    figures["path_p99_ms"] = figures["path"]["p99_ms"]
    figures["path_median_ms"] = figures["path"]["median_ms"]
    if SHARED_TESTDATA.is_dir():
        figures["photo_decode_rate"] = {
            name: {k: v for k, v in r.items() if k != "missed"}
            for name, r in photo_decode_rates(SHARED_TESTDATA).items()
        }
    return figures


def _print(f: dict[str, Any]) -> None:
    print(f"{'stage':<34}{'median ms':>12}{'p99 ms':>12}")
    for name, t in f["decode_frame"].items():
        star = " (default)" if name == f["default_decoder"] else ""
        print(f"{'decode 640x480 QR, ' + name + star:<34}{t['qr_median_ms']:>12.3f}{t['qr_p99_ms']:>12.3f}")
        print(f"{'decode 640x480 empty, ' + name:<34}{t['empty_median_ms']:>12.3f}{t['empty_p99_ms']:>12.3f}")
    for label, key in [
        ("verify credential (Ed25519)", "verify"),
        ("decide", "decide"),
        ("journal commit (WAL, FULL)", "journal_commit"),
        ("Modbus TCP pulse command", "modbus_tcp_pulse"),
        ("whole path: text -> barrier cmd", "path"),
    ]:
        print(f"{label:<34}{f[key]['median_ms']:>12.3f}{f[key]['p99_ms']:>12.3f}")
    if "photo_decode_rate" in f:
        print("\ndecode rate on shared/testdata/qr-photos")
        for name, r in f["photo_decode_rate"].items():
            print(f"  {name:<10}{r['decoded']:>4} / {r['total']}  ({r['rate']:.0%})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
    parser.add_argument("--iterations", type=int, default=500)
    args = parser.parse_args(argv)
    figures = run(args.iterations)
    if args.json:
        print(json.dumps(figures))
    else:
        _print(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
