"""The demo's skiers: a ticket window selling to a stream of them, and one queue per gate.

`Skiers` sells day, 4-hour, 10-entry, single-entry and season tickets through the resort's cloud
(and refunds some), forges a few, and schedules each visit (`Visit`) at a gate: a lap later the
same ticket comes back, a friend tries a day ticket at the other gate, a single-entry ticket is
tried again. Each gate's decision on a visit, and whether it was the one the script expected, is
a `Seen`.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.resort import Resort
from harness.resort_views import Decision
from models import ProductKind
from models.credential import issue

OK = frozenset({"ok"})
LAP_S = (15.0, 25.0)  # a run and the lift back up: longer than the demo gates' passback time (10 s)


@dataclass(frozen=True)
class Visit:
    """A skier presenting a ticket at a gate; `then` is the same ticket's next visit, `delay` s after this one."""

    gate: str
    token: str
    who: str
    expect: frozenset[str]
    then: Visit | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class Seen:
    """A visit and the gate's decision on it (None: no decision within the scan timeout)."""

    t: float
    visit: Visit
    decision: Decision | None

    @property
    def as_expected(self) -> bool:
        d = self.decision
        return d is not None and d.code in self.visit.expect and (d.passed or not d.admit)


@dataclass
class Schedule:
    """Visits waiting for their time, per gate."""

    _heaps: dict[str, list[tuple[float, int, Visit]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _order: Iterator[int] = field(default_factory=itertools.count)

    def add(self, due: float, visit: Visit) -> None:
        with self._lock:
            heapq.heappush(self._heaps.setdefault(visit.gate, []), (due, next(self._order), visit))

    def pop_due(self, gate: str, now: float) -> Visit | None:
        with self._lock:
            heap = self._heaps.get(gate)
            if not heap or heap[0][0] > now:
                return None
            return heapq.heappop(heap)[2]


class Skiers:
    """The ticket window selling to a stream of skiers, and one queue of skiers per gate."""

    def __init__(self, resort: Resort, *, rate: float, t0: float, seed: int | None = None) -> None:
        self.resort = resort
        self.rate = rate
        self.t0 = t0
        self.rng = random.Random(seed)
        self.schedule = Schedule()
        self.stop = threading.Event()
        self.seen: list[Seen] = []
        self.sold = self.refunded = self.sale_errors = 0
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._season: dict[str, float] = {}  # season pass token -> when its holder may come back
        self._forger = Ed25519PrivateKey.generate()
        self._threads: list[threading.Thread] = []
        self.listeners: list[queue.Queue[Seen]] = []

    def start(self) -> None:
        """Season-pass holders bought their passes earlier; then the window opens and the gates' queues move."""
        for _ in range(self.resort.season_holders):
            self._season[self.resort.sell("season").token] = 0.0
            self.sold += 1
        targets = [(self._window, "ticket-window")] + [
            (lambda g=g: self._lane(g), f"lane-{g}") for g in self.resort.gates
        ]
        for target, name in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Close the window and the queues; a scan in progress finishes."""
        self.stop.set()
        for thread in self._threads:
            thread.join(15)

    def recent(self, n: int) -> list[Seen]:
        with self._lock:
            return self.seen[-n:]

    def all_seen(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    # --- the ticket window -------------------------------------------------------------------------

    def _window(self) -> None:
        due = time.monotonic()
        while not self.stop.wait(max(0.0, due - time.monotonic())):
            due = max(due + 1.0 / self.rate, time.monotonic())
            try:
                visit = self._next_skier()
            except Exception:  # the cloud refused or was too slow: the next skier tries again
                self.sale_errors += 1
                continue
            self.schedule.add(time.monotonic() + (1.5 if "refunded" in visit.who else 0.0), visit)

    def _next_skier(self) -> Visit:
        r = self.rng
        gate, other = r.sample(self.resort.gates, 2)
        n = next(self._numbers)
        kind = r.choices(
            ["day", "4h", "punch10", "season", "single", "friend", "refunded", "forged"],
            weights=[30, 12, 10, 14, 10, 10, 8, 6],
        )[0]
        if kind == "season":
            now = time.monotonic()
            ready = [token for token, at in self._season.items() if at <= now]
            if ready:
                token = r.choice(ready)
                self._season[token] = now + LAP_S[1]
                return Visit(gate, token, f"season pass #{list(self._season).index(token) + 1}", OK)
            kind = "day"
        if kind == "forged":
            return Visit(gate, self._forged(n), "forged ticket", frozenset({"bad_signature"}))
        if kind == "refunded":
            token = self._sell(refunded=True)
            return Visit(gate, token, f"#{n} refunded ticket", frozenset({"revoked", "not_yet_valid"}))
        token = self._sell("day" if kind == "friend" else kind)
        if kind == "single":
            again = Visit(other, token, f"#{n} single entry, again", frozenset({"used_up"}))
            return Visit(gate, token, f"#{n} single entry", OK, again, r.uniform(1.5, 3.0))
        if kind == "friend":
            friend = Visit(other, token, f"#{n}'s friend, same ticket", frozenset({"passback"}))
            return Visit(gate, token, f"#{n} day ticket", OK, friend, r.uniform(1.5, 3.0))
        label = {"day": "day ticket", "4h": "4-hour ticket", "punch10": "10-entry card"}[kind]
        lap = Visit(r.choice(self.resort.gates), token, f"#{n} {label}, next run", OK)
        return Visit(gate, token, f"#{n} {label}", OK, lap if r.random() < 0.5 else None, r.uniform(*LAP_S))

    def _sell(self, product: str = "day", *, refunded: bool = False) -> str:
        sale = self.resort.sell_refunded() if refunded else self.resort.sell(product)
        self.sold += 1
        self.refunded += refunded
        return sale.token

    def _forged(self, n: int) -> str:
        now = datetime.now(UTC)
        return issue(
            self._forger,
            key_id=1,
            kind=ProductKind.DAY,
            ticket_no=900_000 + n,
            valid_from=now - timedelta(hours=1),
            valid_until=now + timedelta(hours=8),
            site=self.resort.site,
        )

    # --- the gates' queues ---------------------------------------------------------------------

    def _lane(self, gate: str) -> None:
        while not self.stop.is_set():
            visit = self.schedule.pop_due(gate, time.monotonic())
            if visit is None:
                time.sleep(0.05)
                continue
            decision = self.resort.scan(gate, visit.token)
            seen = Seen(time.monotonic() - self.t0, visit, decision)
            with self._lock:
                self.seen.append(seen)
            for listener in self.listeners:
                listener.put(seen)
            if visit.then is not None and decision is not None:
                self.schedule.add(time.monotonic() + visit.delay, visit.then)
