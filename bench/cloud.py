"""Cloud benchmark: counter sales (order + payment + signed tickets) per second on SQLite and PostgreSQL.

    python -m bench.cloud [--json] [--seconds 8] [--concurrency 32] [--workers 2] [--two-calls]

Per backend: uvicorn (`--workers` processes, access log off, uvloop/httptools when installed) serves the
cloud; a separate light client process (bench.cloud_load, raw HTTP/1.1 keep-alive) sells one ticket per
`POST /orders/counter-sale` for `--seconds`. Printed: orders/s, median and p99 latency, and
`server_cpu_ms_per_order`: the CPU time of the uvicorn processes (from /proc) over the run / orders, and
the database server's likewise on PostgreSQL. Stock is checked after the run: the product-day's `sold`
equals the tickets issued and never exceeds its capacity (`oversold`).

Then the flash sale (抢票) on PostgreSQL: 2,000 buyers for 500 tickets of one day, all sent at once over
`--flash-connections` connections: `flash_sold` must be 500, the others answered 409 `sold_out`,
`flash_oversold` 0; `flash_p99_ms` is the p99 of every buyer's answer.

The breakdown (`breakdown_ms_per_order`) comes from an in-process run of N sales through the service
under a CPU-time profiler: SQL (SQLAlchemy execute, flush, commit, the driver), signing (Ed25519), audit,
feed (ticket upserts made), the rest of the service; framework/JSON is the server CPU per order left over.
`--two-calls` measures the old path (POST /orders, then pay) for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.stats import summary
from harness.keys import cloud_secrets_env, settings_of
from harness.postgres import ThrowawayPostgres

PRICE = 28000
FLASH_STOCK, FLASH_BUYERS = 500, 2000
# One price every day, so the client knows the total; stock large enough never to run out in the steady run.
DAY = {"code": "day", "name": "Day", "kind": "day", "weekday_price_fen": PRICE, "weekend_price_fen": PRICE,
       "holiday_price_fen": PRICE, "daily_stock": 1_000_000}  # fmt: skip
FLASH = {**DAY, "code": "flash", "name": "Flash", "daily_stock": FLASH_STOCK}


def _seed(url: str, env: dict[str, str]) -> tuple[str, int, dict[str, int]]:
    from harness.cloud_api import seed_cloud

    seeded = seed_cloud(settings_of({**env, "STARFISH_DATABASE_URL": url}), "bench", [], [DAY, FLASH])
    return seeded.cashier_token, seeded.site_id, dict(seeded.products)


def _serve_argv(port: int, workers: int) -> list[str]:
    code = (
        "import importlib.util as u, sys, uvicorn; "
        "uvicorn.run('cloud.app:create_app', factory=True, host='127.0.0.1', port=int(sys.argv[1]), "
        "workers=int(sys.argv[2]), log_level='warning', access_log=False, "
        "loop='uvloop' if u.find_spec('uvloop') else 'asyncio', "
        "http='httptools' if u.find_spec('httptools') else 'h11')"
    )
    return [sys.executable, "-c", code, str(port), str(workers)]


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _load(base: str, token: str, body: dict[str, Any], extra: list[str], timeout: float) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.cloud_load", "--base", base, "--token", token, "--body", json.dumps(body)]
    out = subprocess.run([*argv, *extra], capture_output=True, text=True, check=True, timeout=timeout)
    return dict(json.loads(out.stdout))


def _stock(url: str, product_id: int, day: str) -> tuple[int, int, int]:
    """(capacity, sold, tickets issued) of the product-day."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as c:
        row = c.execute(
            text("SELECT capacity, sold FROM stock WHERE product_id = :p AND day = :d"), {"p": product_id, "d": day}
        ).first()
        cap, sold = row if row is not None else (0, 0)
        n = c.execute(
            text("SELECT count(*) FROM tickets WHERE product_id = :p AND visit_date = :d"), {"p": product_id, "d": day}
        ).scalar_one()
    engine.dispose()
    return int(cap), int(sold), int(n)


def _measure(url: str, env: dict[str, str], args: argparse.Namespace, db_root: int | None) -> dict[str, Any]:
    from harness.processes import ChildProcess, free_port, poll_until

    token, site_id, products = _seed(url, env)
    day = (datetime.now(ZoneInfo("Asia/Shanghai")).date() + timedelta(days=1)).isoformat()

    def body(product: str) -> dict[str, Any]:
        item = {"product_id": products[product], "visit_date": day, "quantity": 1}
        return {"site_id": site_id, "items": [item], "payment": {"method": "cash", "amount_fen": PRICE}}

    port = free_port()
    log = Path(tempfile.gettempdir()) / "starfish-bench-cloud.log"
    server = ChildProcess("cloud", _serve_argv(port, args.workers), log, {**env, "STARFISH_DATABASE_URL": url})
    base = f"http://127.0.0.1:{port}"
    figures: dict[str, Any] = {}
    with ExitStack() as stack:
        server.launch()
        stack.callback(server.stop)
        import httpx

        def up() -> bool:
            try:
                return httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        if not poll_until(up, 120, interval=0.2):
            raise RuntimeError(f"the cloud did not start; see {log}")
        assert server.pid is not None
        mode = ["--two-calls"] if args.two_calls else []
        _load(base, token, body("day"), ["--seconds", "1", "--concurrency", "4", *mode], 60)  # warm-up
        pids = _tree(server.pid)
        db_pids = _tree(db_root) if db_root else []  # after the warm-up: the server's connections are open
        cpu0, db0 = cpu_s(pids), cpu_s(db_pids)
        run = ["--seconds", str(args.seconds), "--concurrency", str(args.concurrency), *mode]
        load = _load(base, token, body("day"), run, args.seconds + 120)
        cpu1, db1 = cpu_s(pids), cpu_s(db_pids)
        orders = sum(n for k, n in load["answers"].items() if k in ("200", "201"))
        lat = summary(load["latencies_ms"]) if load["latencies_ms"] else {"median_ms": 0.0, "p99_ms": 0.0}
        cap, sold, issued = _stock(url, products["day"], day)
        figures.update(
            orders_per_s=round(orders / load["elapsed_s"], 1),
            latency_median_ms=round(lat["median_ms"], 1),
            latency_p99_ms=round(lat["p99_ms"], 1),
            orders=orders,
            errors=sum(load["answers"].values()) - orders,
            error_samples=load["error_samples"],
            server_cpu_ms_per_order=round((cpu1 - cpu0) * 1000 / max(orders, 1), 3),
            client_cpu_ms_per_order=round(load["client_cpu_s"] * 1000 / max(orders, 1), 3),
            oversold=max(0, sold - cap) + abs(sold - issued),
        )
        if db_pids:
            figures["db_cpu_ms_per_order"] = round((db1 - db0) * 1000 / max(orders, 1), 3)
        if args.flash and db_pids:
            burst = ["--requests", str(FLASH_BUYERS), "--concurrency", str(args.flash_connections)]
            flash = _load(base, token, body("flash"), burst, 300)
            cap, sold, issued = _stock(url, products["flash"], day)
            figures.update(
                flash_sold=flash["answers"].get("201", 0),
                flash_sold_out_answers=flash["answers"].get("409:sold_out", 0),
                flash_other_answers={k: n for k, n in flash["answers"].items() if k not in ("201", "409:sold_out")},
                flash_oversold=max(0, sold - cap, issued - cap),
                flash_p99_ms=round(summary(flash["latencies_ms"])["p99_ms"], 1),
                flash_elapsed_s=round(flash["elapsed_s"], 3),
            )
    figures["breakdown_ms_per_order"] = breakdown(url, env, site_id, body("day"), figures["server_cpu_ms_per_order"])
    return figures


def breakdown(url: str, env: dict[str, str], site_id: int, body: dict[str, Any], server_ms: float) -> dict[str, float]:
    """CPU ms per sale by part, from N sales through the service in this process under a CPU-time profiler."""
    import cProfile
    import pstats
    import time

    from cloud.app import create_app
    from cloud.deps import Principal, Role
    from cloud.orders.sale import counter_sale
    from cloud.orders.schemas import CounterSaleIn

    app = create_app(settings_of({**env, "STARFISH_DATABASE_URL": url}), expiry_every_s=0)
    settings, factory = app.state.settings, app.state.sessionmaker
    actor = Principal(Role.CASHIER, 1, "bench")
    sale_in = CounterSaleIn.model_validate(body)

    def sell(n: int) -> None:
        for _ in range(n):
            with factory() as session:
                counter_sale(session, settings, actor, sale_in, idempotency_key=None, now=datetime.now(ZoneInfo("UTC")))

    sell(20)
    n = 300
    cpu0 = time.process_time()
    sell(n)
    service_ms = (time.process_time() - cpu0) * 1000 / n  # unprofiled: the profiler only gives the shares
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    sell(n)
    prof.disable()
    app.state.engine.dispose()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]

    def cum(where: str, *names: str) -> float:
        """Cumulative CPU s of the functions `names` of the file ending in `where`."""
        return sum(v[3] for (path, _, fn), v in stats.items() if fn in names and path.endswith(where))

    scale = service_ms / max(cum("orders/sale.py", "counter_sale"), 1e-9)
    per = {
        # every statement's SQLAlchemy + driver time, the audit row's and feed rows' INSERTs (ORM flush) included
        "sql": _sql(stats) * scale,
        "signing": cum("models/credential.py", "issue") * scale,
        "audit": cum("audit/service.py", "record") * scale,  # building the row; its INSERT is under sql
        "feed": cum("tickets/service.py", "wire_ticket") * scale,  # the ticket upserts built; INSERTs under sql
    }
    per["service_other"] = service_ms - sum(per.values())
    per["service_total"] = service_ms
    per["framework_json"] = max(0.0, server_ms - service_ms)  # HTTP, routing, auth, validation, JSON answer
    return {k: round(v, 3) for k, v in per.items()}


def _sql(stats: dict[Any, Any]) -> float:
    """CPU s inside SQLAlchemy's Session.execute and Session.commit (compile, driver, flush), outermost calls."""
    return sum(
        v[3]
        for (path, _, fn), v in stats.items()
        if path.endswith("sqlalchemy/orm/session.py")
        and fn in ("execute", "commit", "scalar", "scalars", "flush")
        and not any(c[0].endswith("sqlalchemy/orm/session.py") for c in v[4])
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {"STARFISH_ENVIRONMENT": "production", **cloud_secrets_env()}
    figures: dict[str, Any] = {"workers": args.workers, "concurrency": args.concurrency, "seconds": args.seconds}
    figures["path"] = "two calls (POST /orders, then pay)" if args.two_calls else "POST /orders/counter-sale"
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory(prefix="starfish-bench-cloud-") as tmp:
            figures["sqlite"] = _measure(f"sqlite:///{Path(tmp) / 'cloud.db'}", env, args, None)
        figures["orders_per_s_sqlite"] = figures["sqlite"]["orders_per_s"]
    pg = ThrowawayPostgres().start()
    try:
        url = pg.create_database("bench")
        figures["postgres"] = _measure(url, env, args, _postmaster(url))
    finally:
        pg.stop()
    pgf = figures["postgres"]
    figures["orders_per_s_postgres"] = pgf["orders_per_s"]
    figures["server_cpu_ms_per_order"] = pgf["server_cpu_ms_per_order"]
    for key in ("flash_sold", "flash_sold_out_answers", "flash_oversold", "flash_p99_ms"):
        if key in pgf:
            figures[key] = pgf[key]
    return figures


def _postmaster(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as c:  # the backend's parent read while it lives (it exits when the connection closes)
        backend = int(c.execute(text("SELECT pg_backend_pid()")).scalar_one())
        stat = Path(f"/proc/{backend}/stat").read_text()
    engine.dispose()
    return int(stat.rsplit(")", 1)[1].split()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="counter sales per second, server CPU per order, the flash sale")
    p.add_argument("--json", action="store_true")
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--two-calls", action="store_true", help="the old path: POST /orders, then pay at the counter")
    p.add_argument("--no-sqlite", action="store_true")
    p.add_argument("--no-flash", dest="flash", action="store_false")
    p.add_argument("--flash-connections", type=int, default=500)
    args = p.parse_args(argv)
    f = run(args)
    if args.json:
        print(json.dumps(f))
        return 0
    print(f"{f['path']}: uvicorn workers={f['workers']}, client connections={f['concurrency']}, {f['seconds']} s")
    print(f"{'backend':<10}{'orders/s':>10}{'median ms':>11}{'p99 ms':>9}{'errors':>8}{'server CPU ms/order':>21}")
    for name in ("sqlite", "postgres"):
        if name in f:
            r = f[name]
            print(f"{name:<10}{r['orders_per_s']:>10}{r['latency_median_ms']:>11}{r['latency_p99_ms']:>9}"
                  f"{r['errors']:>8}{r['server_cpu_ms_per_order']:>21}")  # fmt: skip
    pgf = f["postgres"]
    print(f"postgres server CPU per order: {pgf.get('db_cpu_ms_per_order')} ms; breakdown (ms/order):")
    print("  " + ", ".join(f"{k} {v}" for k, v in pgf["breakdown_ms_per_order"].items()))
    if "flash_sold" in f:
        print(f"flash sale: {FLASH_BUYERS} buyers for {FLASH_STOCK}: sold {f['flash_sold']}, "
              f"sold out {f['flash_sold_out_answers']}, oversold {f['flash_oversold']}, p99 {f['flash_p99_ms']} ms, "
              f"all answered in {pgf['flash_elapsed_s']} s; other answers {pgf['flash_other_answers']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
