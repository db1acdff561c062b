"""Report benchmark: every report over a season and over one day, on PostgreSQL with a season of data.

    python -m bench.reports [--json] [--runs 5] [--explain] [--only NAME ...]

A throwaway PostgreSQL gets the migrated schema, then in SQL (INSERT ... SELECT generate_series, no ORM):
200,000 orders over a 120-day season (counter cash/card, mini-program, three OTAs; tickets, rentals, lessons)
with their payments, order items and ~400,000 tickets, 5% refunded, 1,000,000 gate passages on 4 gates,
rentals and lesson bookings for the rental and lesson orders, and a cash-up per cashier and day; ANALYZE.
Each report (and the cash-up list, and both charts as PNG) is then built `--runs` times through the same code
the API runs, over the whole season and over one busy day: median and max (the p99 of a few runs) per report,
and with `--json` one object whose `slowest_report_s` is the slowest median. Target: at most 1 s each.
`--explain` prints EXPLAIN ANALYZE of every statement the season reports run. `--only entries-products` (repeatable)
times and explains just those reports (or `cash-ups`, `chart:sales-channels`, `chart:entries-hourly`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from harness.postgres import ThrowawayPostgres

SEASON_FIRST, SEASON_DAYS = date(2025, 12, 1), 120
ORDERS, PASSAGES = 200_000, 1_000_000
START = "timestamptz '2025-12-01 00:00:00+08'"
# a time in opening hours (08:00-17:00 local) of season day (g / 7) % 120, spread by a multiplicative hash of g
WHEN = (
    f"{START} + (((g / 7) % {SEASON_DAYS}) * interval '1 day') + interval '8 hours'"
    " + ((g::bigint * 7919) % 32400) * interval '1 second'"
)

SEED = [
    "INSERT INTO sites (id, code, name, timezone, created_at, catalog_version) "
    "VALUES (1, 'bench', '南山滑雪场', 'Asia/Shanghai', now(), 0)",
    "INSERT INTO gates (id, site_id, code, name, direction, secret_hash, mqtt_hash, created_at) "
    "SELECT g, 1, 'g' || g, g || '号闸机', 'in', '!', '', now() FROM generate_series(1, 4) g",
    "INSERT INTO products (id, site_id, code, name, kind, valid_days, weekday_price_fen, weekend_price_fen, "
    "holiday_price_fen, refundable, refund_cutoff_hours, refund_fee_fen, active, created_at, sale_horizon_days) "
    "SELECT g, 1, 'p' || g, (array['全天票','半天票','夜场票','儿童票'])[g], 'day', 1, 10000 * g, 10000 * g, "
    "10000 * g, true, 0, 1000, true, now(), 90 FROM generate_series(1, 4) g",
    # orders: id = g; kind by g % 20 (0 rental, 1 lesson, else ticket); channel by g % 10; 1% never paid
    f"""INSERT INTO orders (id, number, site_id, channel, ota_channel, kind, deposit_fen, status, total_fen,
        created_by, created_at, expires_at, paid_at)
    SELECT g, 'B' || g, 1,
        CASE WHEN g % 10 < 4 THEN 'counter' WHEN g % 10 < 7 THEN 'online' ELSE 'ota' END,
        CASE g % 10 WHEN 7 THEN 'douyin' WHEN 8 THEN 'meituan' WHEN 9 THEN 'ctrip' END,
        CASE WHEN g % 20 = 0 AND g % 10 < 7 THEN 'rental' WHEN g % 20 = 1 AND g % 10 < 7 THEN 'lesson'
             ELSE 'ticket' END,
        CASE WHEN g % 20 = 0 AND g % 10 < 7 THEN 50000 ELSE 0 END,
        CASE WHEN g % 100 = 50 THEN 'expired' ELSE 'issued' END,
        CASE WHEN g % 20 = 0 AND g % 10 < 7 THEN 70000 WHEN g % 20 = 1 AND g % 10 < 7 THEN 60000
             ELSE (1 + g % 3) * 10000 * (1 + g % 4) END,
        'cashier:c' || (g % 8), {WHEN} - interval '1 minute', {WHEN} + interval '14 minutes',
        CASE WHEN g % 100 = 50 THEN NULL ELSE {WHEN} END
    FROM generate_series(1, {ORDERS}) g""",
    "SELECT setval(pg_get_serial_sequence('orders', 'id'), (SELECT max(id) FROM orders))",
    """INSERT INTO order_items (order_id, product_id, visit_date, quantity, unit_price_fen)
    SELECT id, 1 + id % 4, (paid_at AT TIME ZONE 'Asia/Shanghai')::date, 1 + id % 3, 10000 * (1 + id % 4)
    FROM orders WHERE kind = 'ticket' AND paid_at IS NOT NULL""",
    """INSERT INTO payments (order_id, provider, method, status, amount_fen, provider_ref, created_at, paid_at,
        recorded_by)
    SELECT id, CASE channel WHEN 'counter' THEN 'counter' WHEN 'online' THEN 'wechat' ELSE ota_channel END,
        CASE channel WHEN 'counter' THEN (CASE WHEN id % 2 = 0 THEN 'cash' ELSE 'card' END)
            WHEN 'online' THEN 'jsapi' ELSE 'ota' END,
        'succeeded', total_fen, CASE WHEN channel = 'counter' THEN NULL ELSE 'ref' || id END, paid_at, paid_at,
        created_by
    FROM orders WHERE paid_at IS NOT NULL""",
    """INSERT INTO tickets (order_id, order_item_id, unit_no, site_id, product_id, kind, visit_date, valid_from,
        valid_until, price_fen, status, entries_used, token, issued_at)
    SELECT oi.order_id, oi.id, u, 1, oi.product_id, 'day', oi.visit_date, o.paid_at, o.paid_at + interval '1 day',
        oi.unit_price_fen, 'valid', 0, '', o.paid_at
    FROM order_items oi JOIN orders o ON o.id = oi.order_id, generate_series(1, oi.quantity) u""",
    """INSERT INTO refunds (order_id, amount_fen, fee_fen, status, reason, created_by, created_at, attempts)
    SELECT id, total_fen - 1000, 1000, CASE WHEN channel = 'online' THEN 'processing' ELSE 'succeeded' END,
        'bench', created_by, paid_at + interval '2 hours', 0
    FROM orders WHERE paid_at IS NOT NULL AND id % 20 = 3""",
    f"""INSERT INTO gate_passages (event_id, site_id, gate_id, at, received_at, direction, outcome, code, ticket_id,
        passed, counted, credential)
    SELECT gen_random_uuid(), 1, 1 + g % 4, {WHEN}, {WHEN},
        CASE WHEN g % 10 = 0 THEN 'out' ELSE 'in' END, CASE WHEN g % 25 = 0 THEN 'deny' ELSE 'admit' END, 'ok',
        (1 + (g::bigint * 31) % (SELECT count(*) FROM tickets))::text, g % 50 <> 0, true, 'signed'
    FROM generate_series(1, {PASSAGES}) g""",
    # each passage with its ticket's product, as the cloud stores an arriving one (cloud.sync.service)
    """UPDATE gate_passages g SET product_id = t.product_id FROM tickets t WHERE t.id = g.ticket_id::bigint""",
    # the rental desk: 20 items, a line per rental order (one in 50 still out), its movements
    """INSERT INTO rental_items (id, site_id, code, name, category, size, tracking, stock, available,
        hour_weekday_fen, hour_weekend_fen, hour_holiday_fen, day_weekday_fen, day_weekend_fen, day_holiday_fen,
        deposit_fen, damage_fee_fen, loss_fee_fen, active, created_at)
    SELECT g, 1, 'r' || g, '雪板 ' || (140 + 5 * g) || 'cm', 'skis', (140 + 5 * g) || 'cm', 'counted', 100, 90,
        3000, 4000, 5000, 15000, 20000, 25000, 50000, 10000, 200000, true, now() FROM generate_series(1, 20) g""",
    """INSERT INTO rental_orders (order_id, site_id, phone, name, status, rent_fen, deposit_fen, charges_fen, owed_fen,
        created_at) SELECT id, 1, '', '', 'closed', 20000, 50000, 0, 0, created_at
    FROM orders WHERE kind = 'rental' AND paid_at IS NOT NULL""",
    """INSERT INTO rental_lines (order_id, item_id, quantity, period_unit, periods, day_type, start_at, due_at,
        unit_price_fen, hour_fen, price_fen, deposit_fen, out_qty, returned_qty, lost_qty, charges_fen,
        handed_out_at, returned_at)
    SELECT id, 1 + id % 20, 1, 'day', 1, 'weekday', paid_at, paid_at + interval '8 hours', 20000, 3000, 20000,
        50000, 1, CASE WHEN id % 50 = 0 THEN 0 ELSE 1 END, 0, 0, paid_at, paid_at + interval '7 hours'
    FROM orders WHERE kind = 'rental' AND paid_at IS NOT NULL""",
    """INSERT INTO rental_movements (order_id, line_id, kind, quantity, overtime_fen, damage_fen, loss_fen, at, by,
        note)
    SELECT l.order_id, l.id, k, 1, 0, 0, 0,
        l.start_at + CASE k WHEN 'out' THEN interval '0' ELSE interval '7 hours' END,
        'rental_clerk:r', '' FROM rental_lines l, unnest(array['out', 'back']) k
    WHERE k = 'out' OR l.returned_qty = 1""",
    # the ski school: 10 coaches, private and group lessons, a booking per lesson order (one in 3 checked in)
    """INSERT INTO coaches (id, site_id, name, level, disciplines, languages, active, created_at)
    SELECT g, 1, '教练' || g, 1 + g % 5, 'ski', 'zh', true, now() FROM generate_series(1, 10) g""",
    """INSERT INTO lesson_products (id, site_id, name, kind, discipline, duration_minutes, price_weekday_fen,
        price_weekend_fen, price_holiday_fen, capacity, min_participants, cutoff_minutes, active, created_at)
    VALUES (1, 1, '私教两小时', 'private', 'ski', 120, 60000, 60000, 60000, 1, 1, 0, true, now()),
           (2, 1, '拼班', 'group', 'ski', 120, 60000, 60000, 60000, 8, 3, 120, true, now())""",
    """INSERT INTO lesson_bookings (site_id, order_id, kind, product_id, coach_id, start_at, end_at, seats, price_fen,
        holder_name, phone, status, created_by, created_at, checked_in_at)
    SELECT 1, id, CASE WHEN id % 2 = 0 THEN 'private' ELSE 'group' END, 1 + id % 2, 1 + id % 10,
        paid_at + interval '1 day', paid_at + interval '1 day 2 hours', 1, 60000, '', '', 'confirmed', created_by,
        paid_at, CASE WHEN id % 3 = 0 THEN paid_at + interval '1 day' END
    FROM orders WHERE kind = 'lesson' AND paid_at IS NOT NULL""",
    # a cash-up per cashier and season day
    f"""INSERT INTO cash_ups (site_id, staff_id, actor, opened_at, closed_at, note)
    SELECT 1, c, 'cashier:c' || c, {START} + d * interval '1 day',
        {START} + d * interval '1 day' + interval '18 hours', ''
    FROM generate_series(0, 7) c, generate_series(0, {SEASON_DAYS - 1}) d""",
    """INSERT INTO cash_up_lines (cash_up_id, method, takings_fen, refunds_fen, counted_fen)
    SELECT id, m, 500000, 0, 500000 FROM cash_ups, unnest(array['cash', 'card']) m""",
]


def generate(engine: Engine) -> dict[str, Any]:
    """The season's data, in SQL; returns row counts and how long it took."""
    t0 = time.perf_counter()
    with engine.begin() as c:
        for statement in SEED:
            c.execute(text(statement))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("ANALYZE"))
    counts = {}
    with engine.connect() as c:
        for table in ("orders", "payments", "tickets", "refunds", "gate_passages", "rental_lines", "lesson_bookings"):
            counts[table] = int(c.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    return {"rows": counts, "generate_s": round(time.perf_counter() - t0, 1)}


def _timed(fn: Callable[[], object], runs: int) -> dict[str, float]:
    fn()  # warm: plans cached, pages in memory
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(samples), 4), "max_s": round(max(samples), 4)}


def measure(engine: Engine, runs: int, only: frozenset[str] = frozenset()) -> dict[str, dict[str, float]]:
    from cloud.db import make_sessionmaker
    from cloud.deps import Principal, Role
    from cloud.reports import cashup, charts
    from cloud.reports.period import period
    from cloud.reports.service import BUILDERS

    factory = make_sessionmaker(engine)
    now = datetime.now(UTC)
    busy = SEASON_FIRST + timedelta(days=60)
    ranges = {"season": (SEASON_FIRST, SEASON_FIRST + timedelta(days=SEASON_DAYS - 1)), "day": (busy, busy)}
    finance = Principal(Role.FINANCE, 1, "bench")
    out: dict[str, dict[str, float]] = {}
    with factory() as session:
        for label, (first, last) in ranges.items():
            p = period(session, 1, first, last)
            jobs: dict[str, Callable[[], object]] = {
                name: (lambda b=build, p=p: b(session, p, now))  # type: ignore[misc]
                for name, build in BUILDERS.items()
            }
            jobs["cash-ups"] = lambda p=p: cashup.report(session, finance, p)  # type: ignore[misc]
            jobs["chart:sales-channels"] = lambda p=p: charts.sales_channels(session, p, "png")  # type: ignore[misc]
            if label == "day":
                jobs["chart:entries-hourly"] = lambda: charts.entries_hourly(session, 1, busy, "png")
            for name, job in jobs.items():
                if not only or name in only:
                    out[f"{name}.{label}"] = _timed(job, runs)
    return out


def explain(engine: Engine, only: frozenset[str] = frozenset()) -> None:
    """EXPLAIN ANALYZE of every statement the season's reports run."""
    from cloud.db import make_sessionmaker
    from cloud.reports.period import period
    from cloud.reports.service import BUILDERS

    seen: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "pg_" not in statement:
            seen.append((statement, params))

    with make_sessionmaker(engine)() as session:
        p = period(session, 1, SEASON_FIRST, SEASON_FIRST + timedelta(days=SEASON_DAYS - 1))
        event.listen(engine, "before_cursor_execute", grab)
        for name, build in BUILDERS.items():
            if not only or name in only:
                build(session, p, datetime.now(UTC))
        event.remove(engine, "before_cursor_execute", grab)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for statement, params in seen:
            cur.execute("EXPLAIN (ANALYZE, COSTS OFF) " + statement, params)
            print("\n".join(r[0] for r in cur.fetchall()), end="\n\n")
    finally:
        raw.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cloud.db import make_engine
    from cloud.migrate import upgrade

    pg = ThrowawayPostgres().start()
    try:
        url = pg.create_database("reports")
        upgrade(url)
        engine = make_engine(url)
        figures: dict[str, Any] = generate(engine)
        if args.explain:
            explain(engine, frozenset(args.only))
        timings = measure(engine, args.runs, frozenset(args.only))
        engine.dispose()
    finally:
        pg.stop()
    figures["reports"] = timings
    slowest = max(timings.items(), key=lambda kv: kv[1]["median_s"])
    figures["slowest_report_s"] = slowest[1]["median_s"]
    figures["slowest_report"] = slowest[0]
    for key, t in timings.items():
        figures[f"{key}_s"] = t["median_s"]
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="every report's time over a season of data on PostgreSQL")
    p.add_argument("--json", action="store_true")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the season reports' statements")
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="time only this report (repeatable)")
    args = p.parse_args(argv)
    f = run(args)
    if args.json:
        print(json.dumps(f))
        return 0
    print(f"generated in {f['generate_s']} s: " + ", ".join(f"{k} {v:,}" for k, v in f["rows"].items()))
    print(f"{'report':<36}{'median s':>10}{'max s':>9}")
    for key, t in f["reports"].items():
        print(f"{key:<36}{t['median_s']:>10}{t['max_s']:>9}")
    print(f"slowest: {f['slowest_report']} {f['slowest_report_s']} s (target <= 1 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
