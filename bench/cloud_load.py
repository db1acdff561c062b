"""Load client for bench.cloud, run as its own process: counter sales over raw HTTP/1.1 keep-alive connections.

Raw asyncio streams, not httpx: the client shares the machine's two cores with the server and PostgreSQL,
and httpx spent about as much CPU per request as the server's lean path (measured). Each request is
prebuilt bytes; an answer is read by its Content-Length.

    python -m bench.cloud_load --base URL --token T --body JSON --seconds 10 --concurrency 32   (steady load)
    python -m bench.cloud_load ... --requests 2000 --concurrency 500                             (a burst: flash sale)

Modes: `--two-calls` creates an order then pays it (the old two-request path) instead of one counter sale.
Prints JSON: answers by status and error code, latencies in ms, elapsed s, client CPU s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from urllib.parse import urlsplit

from models.api import API_PREFIX


def _request(host: str, path: str, token: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


class Tally:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.answers: Counter[str] = Counter()
        self.samples: list[str] = []

    def note(self, status: int, body: bytes, started: float) -> None:
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        key = str(status)
        if status >= 400:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                key += ":" + json.loads(body)["error"]["code"]
            if len(self.samples) < 5:
                self.samples.append(f"{status} {body[:160]!r}")
        self.answers[key] += 1


async def _connection(args: argparse.Namespace, until: float, left: list[int], tally: Tally) -> None:
    url = urlsplit(args.base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    host = f"{url.hostname}:{url.port}"
    sale = _request(host, f"{API_PREFIX}/orders/counter-sale", args.token, args.body.encode())
    order_body = json.loads(args.body)
    payment = order_body.pop("payment")
    order_body["channel"] = "counter"
    create = _request(host, f"{API_PREFIX}/orders", args.token, json.dumps(order_body).encode())
    try:
        while time.perf_counter() < until and left[0] > 0:
            left[0] -= 1
            started = time.perf_counter()
            if not args.two_calls:
                writer.write(sale)
                status, body = await _answer(reader)
                tally.note(status, body, started)
                continue
            writer.write(create)
            status, body = await _answer(reader)
            if status != 201:
                tally.note(status, body, started)
                continue
            order = json.loads(body)
            pay = json.dumps({**payment, "amount_fen": order["total_fen"]}).encode()
            writer.write(_request(host, f"{API_PREFIX}/orders/{order['id']}/payments/counter", args.token, pay))
            status, body = await _answer(reader)
            tally.note(status, body, started)
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    tally = Tally()
    cpu0, start = time.process_time(), time.perf_counter()
    until = start + args.seconds if args.requests is None else float("inf")
    left = [args.requests if args.requests is not None else 1 << 62]
    await asyncio.gather(*(_connection(args, until, left, tally) for _ in range(args.concurrency)))
    return {
        "answers": dict(tally.answers),
        "latencies_ms": tally.latencies_ms,
        "elapsed_s": time.perf_counter() - start,
        "client_cpu_s": time.process_time() - cpu0,
        "error_samples": tally.samples,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--body", required=True, help="the counter sale's JSON body (with its payment block)")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--requests", type=int, default=None, help="send this many requests in all, then stop")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--two-calls", action="store_true", help="POST /orders then pay it (the old path)")
    print(json.dumps(asyncio.run(run(p.parse_args()))))


if __name__ == "__main__":
    main()
