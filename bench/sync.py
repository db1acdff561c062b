"""Sync benchmark: sale → gate latency, backlog drain, and a full resync into an empty gate.

    python -m bench.sync [--json] [--sales 200] [--events 100000] [--resync-tickets 1000000] [--resync-used]
                         [--only resync]

Everything runs for real on loopback, each in its own process: Mosquitto (generated config,
ACLs, passwords), the cloud (`uvicorn`, SQLite, its MQTT loop) and the gate daemon
(`harness.gates.GateProcess`). The benchmark process only sells through the API and watches the
gate's SQLite file (read-only, polled every 0.5 ms).

- sale_to_gate: from the payment response (the sale is committed and its ticket issued) to
  the ticket's row in the gate's store, as a reader of the store sees it (one read-only connection, kept).
- drain: the gate is stopped, its outbox filled with N passage events, then started; time
  from its connection to the broker (its retained status says online) until the cloud
  acknowledged them all (outbox empty). The process start before it is printed apart.
- resync: N tickets in the cloud, a new gate with an empty store; time from the gate process's
  start until the snapshot is applied, and its peak RSS (VmHWM). The tickets are of one product
  and day; `--resync-used` makes each used once, at its own time (as a site's older tickets are).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.stats import summary
from edge.reasons import Reason
from edge.store import GateStore, GateStoreReader, JournalEntry, tickets
from harness.cloud import CloudServer
from harness.cloud_api import Cashier, seed_cloud
from harness.gates import GateProcess
from harness.keys import cloud_secrets_env, key_root_of, settings_of
from harness.mosquitto import MosquittoProcess
from harness.mqtt import BrokerClient, connect_client
from harness.processes import wait_until
from models import Direction, Outcome
from models.sync import GateStatus
from sync import topics
from sync.mosquitto import GateAccount, SiteRegistry

_PRICES = ("weekday_price_fen", "weekend_price_fen", "holiday_price_fen")


class World:
    """Cloud DB + broker + cloud server + helpers to run gates."""

    def __init__(self, tmp: Path, stack: ExitStack, gates: list[str]) -> None:
        self.tmp = tmp
        self.stack = stack
        self.url = f"sqlite:///{tmp / 'cloud.db'}"
        self.env = {"STARFISH_ENVIRONMENT": "production", **cloud_secrets_env()}
        self._seed(gates)
        registry = SiteRegistry(
            "bench", [GateAccount(g, u, p) for g, (u, p) in self.gates.items()], "cloud", "cloud-pw-0123456"
        )
        self.broker = MosquittoProcess(registry, workdir=tmp / "broker")
        self.broker.start()
        stack.callback(self.broker.close)
        self.env.update(
            {
                "STARFISH_MQTT_HOST": "127.0.0.1",
                "STARFISH_MQTT_PORT": str(self.broker.port),
                "STARFISH_MQTT_USERNAME": "cloud",
                "STARFISH_MQTT_PASSWORD": "cloud-pw-0123456",
                "STARFISH_SYNC_POLL_SECONDS": "0.5",
            }
        )
        server = CloudServer({**self.env, "STARFISH_DATABASE_URL": self.url}, tmp / "cloud.log", workers=1)
        stack.callback(server.stop)
        self.base = server.start().base
        self.cloud_pid = server.pid
        self.cashier = Cashier(self.base, self.token, self.site_id)
        stack.callback(self.cashier.close)

    def _seed(self, gates: list[str]) -> None:
        """The site, its gates and a day product, through the API as an admin would (`harness.cloud_api.seed_cloud`)."""
        day = {"code": "day", "name": "Day", "kind": "day", **dict.fromkeys(_PRICES, 100)}
        seeded = seed_cloud(settings_of({**self.env, "STARFISH_DATABASE_URL": self.url}), "bench", gates, [day])
        self.site_id, self.product_id, self.token = seeded.site_id, seeded.products["day"], seeded.cashier_token
        self.gates = seeded.gates

    def gate_folder(self, gate: str) -> Path:
        """Where a gate keeps its config, store and log."""
        folder = self.tmp / gate
        folder.mkdir(exist_ok=True)
        return folder

    def start_gate(self, gate: str) -> GateProcess:
        """The gate daemon, its store in `gate_folder` (empty or filled beforehand), launched."""
        folder = self.gate_folder(gate)
        (folder / "password").write_text(self.gates[gate][1])
        config = {
            "gate": {"gate_id": gate, "site_id": "bench"},
            "barrier": {"type": "modbus_tcp", "host": "127.0.0.1", "port": 1, "timeout_s": 0.2},
            "sync": {
                "site": "bench",
                "gate": gate,
                "broker_host": "127.0.0.1",
                "broker_port": self.broker.port,
                "username": self.gates[gate][0],
                "password_file": str(folder / "password"),
                "snapshot_url": self.base,
                "key_root": key_root_of(self.env["STARFISH_KEYSET_ROOT_KEY_B64"]),
                "snapshot_timeout_s": 600,
            },
            "log_level": "WARNING",
        }
        process = GateProcess(folder, config)  # it adds the store and an idle scanner pty
        process.launch()
        self.stack.callback(process.close, 30)
        return process

    def gate_db(self, gate: str) -> Path:
        return self.gate_folder(gate) / "gate.db"

    def sell(self) -> tuple[int, float]:
        """One day ticket sold at the window: (ticket id, `perf_counter` when the payment's answer arrived)."""
        committed: list[float] = []
        _, [ticket] = self.cashier.sell(self.product_id, on_paid=lambda: committed.append(time.perf_counter()))
        return int(ticket["id"]), committed[0]


def sale_to_gate(world: World, sales: int) -> dict[str, Any]:
    world.start_gate("g1")
    db = world.gate_db("g1")
    wait_until(lambda: GateStoreReader(db).has_feed_position(), "gate synced", 60, interval=0.05)
    samples = []
    # One read-only connection, kept: each poll is a new read of the WAL (microseconds), not a new connection
    # (a fraction of a millisecond of the two cores the gate and the cloud share, every 0.5 ms).
    gate = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    world.stack.callback(gate.close)
    for i in range(sales + 5):
        tid, committed = world.sell()
        t = str(tid)
        wait_until(lambda: tickets.has(gate, t), "ticket at gate", 30, interval=0.0005)  # noqa: B023
        if i >= 5:
            samples.append((time.perf_counter() - committed) * 1000)
    return summary(samples)


def drain(world: World, events: int) -> dict[str, Any]:
    gate = "g2"
    # Stuff the outbox while the gate is down: denials journaled as the gate itself would, in one transaction.
    now = datetime.now(UTC)
    store = GateStore(world.gate_db(gate))
    store.record_all(
        JournalEntry(
            at=now + timedelta(microseconds=i),
            gate_id=gate,
            site_id="bench",
            direction=Direction.IN,
            outcome=Outcome.DENY,
            code=Reason.UNREADABLE,
            passed=False,
            counted=False,
            resolution="denied",
        )
        for i in range(events)
    )
    store.close()
    watcher = _status_watcher(world, gate)
    # time.monotonic throughout: paho stamps each message it receives with it.
    start = time.monotonic()
    cloud_cpu = _cpu_s(world.cloud_pid)
    proc = world.start_gate(gate)
    reader = GateStoreReader(world.gate_db(gate))
    wait_until(lambda: reader.outbox_depth() == 0, "outbox drained", 600, interval=0.05)
    end = time.monotonic()
    cloud_cpu = _cpu_s(world.cloud_pid) - cloud_cpu
    gate_cpu = _cpu_s(proc.pid)  # its start-up included
    connected = _first_online(watcher, gate)
    watcher.close()  # frees the login it borrowed
    elapsed = end - connected
    return {
        "events": events,
        "seconds": round(elapsed, 2),
        "events_per_s": round(events / elapsed, 1),
        "gate_start_s": round(connected - start, 2),
        # CPU per event, all threads: steadier than the rate on a machine others share
        "cloud_cpu_us_per_event": round(cloud_cpu * 1e6 / events, 1),
        "gate_cpu_us_per_event": round(gate_cpu * 1e6 / events, 1),
    }


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) the process used so far, all its threads."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_watcher(world: World, gate: str) -> BrokerClient:
    """A client subscribed to the gate's retained status, before the gate starts.

    It logs in as a gate that is not running then (a gate may read its site's statuses): the broker
    keys sessions by login, so the cloud's own login here would knock the cloud off. Close it
    before that gate starts.
    """
    watcher = next(g for g in sorted(world.gates) if g not in (gate, "g1"))
    client = connect_client(world.broker, *world.gates[watcher])
    world.stack.callback(client.close)
    client.subscribe(topics.status("bench", gate), qos=1)
    return client


def _first_online(watcher: BrokerClient, gate: str) -> float:
    """When the gate's status first said `online` (it connected), as received: the drain's start."""
    for msg in watcher.received(topics.status("bench", gate)):
        if GateStatus.model_validate_json(msg.payload).state == "online":
            return float(msg.timestamp)
    raise TimeoutError(f"gate {gate} drained its outbox but never said online")


def resync(world: World, tickets: int, *, used: bool = False) -> dict[str, Any]:
    from sqlalchemy import insert

    from cloud.db import make_engine
    from cloud.orders.models import Order, OrderItem
    from cloud.tickets.models import Ticket

    # Straight into the cloud's tables, not through `seed_cloud` or the cashier: a million tickets sold
    # one API call each would take hours, and what is measured starts only when the gate does.
    engine = make_engine(world.url)
    now = datetime.now(UTC)
    with engine.begin() as c:
        oid = c.execute(
            insert(Order).values(
                number="SFBULK",
                site_id=world.site_id,
                channel="counter",
                status="issued",
                total_fen=0,
                created_by="bench",
                created_at=now,
                expires_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        iid = c.execute(
            insert(OrderItem).values(
                order_id=oid, product_id=world.product_id, visit_date=date.today(), quantity=tickets, unit_price_fen=0
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    batch = 50_000
    for start in range(0, tickets, batch):
        # A transaction per batch: the running cloud's own writers wait for one batch, not for all.
        with engine.begin() as c:
            c.execute(
                insert(Ticket),
                [
                    {
                        "order_id": oid,
                        "order_item_id": iid,
                        "unit_no": n + 1,
                        "site_id": world.site_id,
                        "product_id": world.product_id,
                        "kind": "day",
                        "visit_date": date.today(),
                        "valid_from": now,
                        "valid_until": now + timedelta(days=1),
                        "price_fen": 0,
                        "status": "valid",
                        # used: each its own first entry, so no two tickets differ in their id alone
                        "entries_used": 1 if used else 0,
                        "first_entry_at": now + timedelta(microseconds=n) if used else None,
                        "token": "",
                        "issued_at": now,
                    }
                    for n in range(start, min(tickets, start + batch))
                ],
            )
    engine.dispose()
    gate = "g3"
    t0 = time.perf_counter()
    proc = world.start_gate(gate)
    db = world.gate_db(gate)
    peak = 0

    def applied() -> bool:
        """Whether the snapshot is in the store; on the way, the gate's peak RSS so far (kB)."""
        nonlocal peak
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                peak = max(peak, next(int(line.split()[1]) for line in f if line.startswith("VmHWM")))
        except (OSError, StopIteration):
            pass
        return GateStoreReader(db).ticket_count() >= tickets  # no store yet reads as 0

    wait_until(applied, "resync finished", 900, interval=0.1)
    elapsed = time.perf_counter() - t0
    return {"tickets": tickets, "seconds": round(elapsed, 2), "peak_rss_mb": round(peak / 1024, 1)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="starfish-bench-sync-") as tmp, ExitStack() as stack:
        world = World(Path(tmp), stack, ["g1", "g2", "g3"])
        if args.only in (None, "sale"):
            figures["sale_to_gate"] = sale_to_gate(world, args.sales)
        if args.events and args.only in (None, "drain"):
            figures["drain"] = drain(world, args.events)
        if args.resync_tickets and args.only in (None, "resync"):
            figures["resync"] = resync(world, args.resync_tickets, used=args.resync_used)
    if "sale_to_gate" in figures:
        figures["sale_to_gate_p99_ms"] = figures["sale_to_gate"]["p99_ms"]
    if "drain" in figures:
        figures["drain_events_per_s"] = figures["drain"]["events_per_s"]
    if "resync" in figures:
        figures["resync_1m_s"] = figures["resync"]["seconds"] * 1_000_000 / figures["resync"]["tickets"]
        figures["resync_1m_peak_rss_mb"] = figures["resync"]["peak_rss_mb"]
        figures["resync_measured_tickets"] = figures["resync"]["tickets"]
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="sync figures")
    p.add_argument("--json", action="store_true")
    p.add_argument("--sales", type=int, default=200)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--resync-tickets", type=int, default=1_000_000)
    p.add_argument("--resync-used", action="store_true", help="resync tickets that were each used once")
    p.add_argument("--only", choices=["sale", "drain", "resync"], help="run one part of the benchmark")
    args = p.parse_args(argv)
    f = run(args)
    if args.json:
        print(json.dumps(f))
        return 0
    if "sale_to_gate" in f:
        s = f["sale_to_gate"]
        print(
            f"sale committed -> ticket in the gate's store: median {s['median_ms']} ms, "
            f"p99 {s['p99_ms']} ms ({s['n']} sales)"
        )
    if "drain" in f:
        d = f["drain"]
        print(
            f"backlog drain: {d['events']} events acknowledged end to end in {d['seconds']} s "
            f"= {d['events_per_s']} events/s (timed from the gate's connection; process start took "
            f"{d['gate_start_s']} s more); CPU per event: cloud {d['cloud_cpu_us_per_event']} µs, "
            f"gate {d['gate_cpu_us_per_event']} µs"
        )
    if "resync" in f:
        r = f["resync"]
        print(
            f"full resync: {r['tickets']} tickets into an empty gate in {r['seconds']} s, "
            f"gate peak RSS {r['peak_rss_mb']} MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
