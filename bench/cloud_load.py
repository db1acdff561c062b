"""Load client for bench.cloud, run as its own process: create + pay (counter) orders for N seconds."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import date

import httpx

from models.api import API_PREFIX


async def _worker(
    client: httpx.AsyncClient, body: dict[str, object], until: float, lat: list[float], errors: list[str]
) -> None:
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        r = await client.post(f"{API_PREFIX}/orders", json=body)
        if r.status_code != 201:
            errors.append(f"order {r.status_code} {r.text[:120]}")
            continue
        order = r.json()
        p = await client.post(
            f"{API_PREFIX}/orders/{order['id']}/payments/counter",
            json={"method": "cash", "amount_fen": order["total_fen"]},
        )
        if p.status_code not in (200, 201):
            errors.append(f"payment {p.status_code} {p.text[:120]}")
            continue
        lat.append((time.perf_counter() - t0) * 1000)


async def run(
    base: str, token: str, site_id: int, product_id: int, seconds: float, concurrency: int
) -> dict[str, object]:
    body = {
        "site_id": site_id,
        "channel": "counter",
        "items": [{"product_id": product_id, "visit_date": date.today().isoformat(), "quantity": 1}],
    }
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:
        warm: list[float] = []
        await _worker(client, body, time.perf_counter() + 1.0, warm, [])
        lat: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        until = start + seconds
        await asyncio.gather(*(_worker(client, body, until, lat, errors) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "orders": len(lat),
        "elapsed_s": elapsed,
        "latencies_ms": lat,
        "errors": errors[:5],
        "error_count": len(errors),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--site-id", type=int, required=True)
    p.add_argument("--product-id", type=int, required=True)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--concurrency", type=int, default=32)
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.base, a.token, a.site_id, a.product_id, a.seconds, a.concurrency))))


if __name__ == "__main__":
    main()
