"""Cloud benchmark: orders created + paid + issued per second, on SQLite and on PostgreSQL.

    python -m bench.cloud [--json] [--seconds 10] [--concurrency 32] [--workers 2]

The server is uvicorn with `--workers` processes (2 suit this 2-core machine); the load comes
from a separate process (bench.cloud_load) that creates a counter order and pays it, which
issues its signed ticket, in a loop. PostgreSQL is a throwaway server started for the run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.stats import summary
from harness.cloud import CloudServer
from harness.cloud_api import seed_cloud
from harness.keys import cloud_secrets_env, settings_of
from harness.postgres import ThrowawayPostgres

# An unlimited day product: the load never runs out of stock.
DAY = {"code": "day", "name": "Day", "kind": "day", "weekday_price_fen": 28000, "weekend_price_fen": 38000,
       "holiday_price_fen": 45000}  # fmt: skip


def _seed(url: str, env: dict[str, str]) -> tuple[str, int, int]:
    """Schema, a site, an unlimited day product and a cashier; returns (token, site id, product id)."""
    seeded = seed_cloud(settings_of({**env, "STARFISH_DATABASE_URL": url}), "bench", [], [DAY])
    return seeded.cashier_token, seeded.site_id, seeded.products["day"]


def _serve(url: str, env: dict[str, str], workers: int, stack: ExitStack, log: Path) -> str:
    """The cloud in its own process (uvicorn with `workers` processes); stopped when `stack` closes."""
    server = CloudServer({**env, "STARFISH_DATABASE_URL": url}, log, workers=workers)
    stack.callback(server.stop)
    return server.start().base


def _measure(url: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    token, site_id, product_id = _seed(url, env)
    with ExitStack() as stack:
        base = _serve(url, env, args.workers, stack, Path(tempfile.gettempdir()) / "starfish-bench-cloud.log")
        out = subprocess.run(
            [sys.executable, "-m", "bench.cloud_load", "--base", base, "--token", token,
             "--site-id", str(site_id), "--product-id", str(product_id),
             "--seconds", str(args.seconds), "--concurrency", str(args.concurrency)],
            capture_output=True, text=True, check=True, timeout=args.seconds + 120,
        )  # fmt: skip
    load = json.loads(out.stdout)
    lat = summary(load["latencies_ms"]) if load["latencies_ms"] else {"median_ms": 0.0, "p99_ms": 0.0, "n": 0}
    return {
        "orders_per_s": round(load["orders"] / load["elapsed_s"], 1),
        "latency_median_ms": lat["median_ms"],
        "latency_p99_ms": lat["p99_ms"],
        "orders": load["orders"],
        "errors": load["error_count"],
        "error_samples": load["errors"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {"STARFISH_ENVIRONMENT": "production", **cloud_secrets_env()}
    figures: dict[str, Any] = {"workers": args.workers, "concurrency": args.concurrency, "seconds": args.seconds}
    with tempfile.TemporaryDirectory(prefix="starfish-bench-cloud-") as tmp:
        figures["sqlite"] = _measure(f"sqlite:///{Path(tmp) / 'cloud.db'}", env, args)
    pg = ThrowawayPostgres().start()
    try:
        figures["postgres"] = _measure(pg.create_database("bench"), env, args)
    finally:
        pg.stop()
    figures["orders_per_s_sqlite"] = figures["sqlite"]["orders_per_s"]
    figures["orders_per_s_postgres"] = figures["postgres"]["orders_per_s"]
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="orders created+paid+issued per second")
    p.add_argument("--json", action="store_true")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    f = run(args)
    if args.json:
        print(json.dumps(f))
        return 0
    print(f"uvicorn workers={f['workers']}, client concurrency={f['concurrency']}, {f['seconds']} s per backend")
    print(f"{'backend':<10}{'orders/s':>10}{'median ms':>12}{'p99 ms':>10}{'errors':>8}")
    for name in ("sqlite", "postgres"):
        r = f[name]
        print(f"{name:<10}{r['orders_per_s']:>10}{r['latency_median_ms']:>12}{r['latency_p99_ms']:>10}{r['errors']:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
