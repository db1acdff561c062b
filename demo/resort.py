"""`starfish demo`: the whole resort on one machine, a stream of skiers, and a live table.

The resort (`harness.resort.Resort`): the cloud on SQLite with its MQTT loop, the cloud broker, the
site broker bridged to it, and two gate daemons with simulated relay boards and scanners, each in
its own process. A ticket window sells day, 4-hour, 10-entry, single-entry and season tickets
through the cloud's API (and refunds some); skiers present them at either gate, come back after a
lap, pass a day ticket back to a friend at the other gate or try a single-entry ticket there
again: denied, because the gates tell each other their passages over the site broker, cloud or no
cloud.

`c` cuts the cloud link, `r` restores it, `q` quits (when stdin is a terminal); `--cut-at` and
`--restore-at` do the same on a schedule. At the end the link is restored, the outboxes drain,
and the passages the cloud stored are compared with the gates' journals: the exit status is 1
unless every decision arrived exactly once.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import queue
import random
import select
import signal
import sys
import tempfile
import termios
import threading
import time
import tty
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edge.reasons import reason
from harness.resort import CloudView, Decision, ExactlyOnce, GateView, Resort
from models import ProductKind
from models.credential import issue

OK = frozenset({"ok"})
LAP_S = (15.0, 25.0)  # a run and the lift back up: longer than the demo gates' passback time (10 s)
DRAIN_TIMEOUT_S = 90.0


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


# --- display ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    t: float
    link_up: bool
    link_since: float
    gates: list[GateView]
    cloud: CloudView


def _age(report: dict[str, object]) -> str:
    seen = report.get("last_seen")
    if not isinstance(seen, str):
        return "never"
    at = datetime.fromisoformat(seen)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return f"{(datetime.now(UTC) - at).total_seconds():.0f} s ago"


def _decision_text(d: Decision | None) -> Text:
    if d is None:
        return Text("no decision", style="yellow")
    style = "green" if d.admit else "red"
    return Text(f"{'ADMIT' if d.admit else 'DENY'} {d.code}", style=style) + Text(f"  {reason(d.code, 'zh')}")


def render(s: Snapshot, skiers: Skiers, duration: float, footer: str) -> Group:
    """The live view: one row per gate, the cloud's side, the latest decisions."""
    link = (
        Text("UP", style="bold green") if s.link_up else Text(f"CUT for {s.t - s.link_since:.0f} s", style="bold red")
    )
    title = Text(f"Starfish resort · {s.t:3.0f} s of {duration:.0f} · cloud link ") + link
    gates = Table(title=title, title_justify="left", expand=False)
    for name, justify in (
        ("gate", "left"),
        ("admitted", "right"),
        ("denied", "right"),
        ("from peers", "right"),
        ("outbox", "right"),
        ("feed seq", "right"),
        ("stored in cloud", "right"),
        ("cloud last heard", "left"),
        ("last decision", "left"),
    ):
        gates.add_column(name, justify=justify)  # type: ignore[arg-type]
    for g in s.gates:
        report = s.cloud.gates.get(g.gate, {})
        gates.add_row(
            g.gate if g.running else f"{g.gate} (stopped)",
            str(g.admitted),
            str(g.denied),
            str(g.from_peers),
            Text(str(g.outbox), style="bold yellow" if g.outbox else ""),
            str(g.feed_seq),
            str(s.cloud.stored.get(g.gate, 0)),
            f"{report.get('state', '?')}, {_age(report)}" if report else "?",
            _decision_text(g.last),
        )
    head = "?" if s.cloud.feed_head is None else str(s.cloud.feed_head)
    cloud = Text(
        f"cloud: feed head {head} · {sum(s.cloud.stored.values())} passages stored · "
        f"{skiers.sold} tickets sold, {skiers.refunded} refunded"
        + (f" · {skiers.sale_errors} sales failed" if skiers.sale_errors else "")
    )
    recent = Table(box=None, show_header=False, padding=(0, 1))
    for seen in skiers.recent(8):
        mark = Text("  ") if seen.as_expected else Text("? ", style="yellow")
        recent.add_row(f"{seen.t:5.1f}s", seen.visit.gate, seen.visit.who, mark + _decision_text(seen.decision))
    return Group(gates, cloud, Text(""), recent, Text(footer, style="dim"))


def plain_status(s: Snapshot) -> str:
    gates = " | ".join(
        f"{g.gate} admitted {g.admitted} denied {g.denied} outbox {g.outbox} seq {g.feed_seq} "
        f"cloud {s.cloud.stored.get(g.gate, 0)}"
        for g in s.gates
    )
    head = "?" if s.cloud.feed_head is None else s.cloud.feed_head
    return f"{s.t:5.1f}s link {'up' if s.link_up else 'CUT'} | {gates} | cloud feed head {head}"


def plain_seen(seen: Seen) -> str:
    d = seen.decision
    got = "no decision" if d is None else f"{'ADMIT' if d.admit else 'DENY '} {d.code:<14} {reason(d.code)}"
    return f"{seen.t:5.1f}s {seen.visit.gate:<8} {seen.visit.who:<30} {got}{'' if seen.as_expected else '  (?)'}"


# --- keys and signals ------------------------------------------------------------------------------


@contextlib.contextmanager
def key_presses(commands: queue.Queue[str]) -> Iterator[bool]:
    """Single key presses into `commands` (cbreak mode) while stdin is a terminal; yields whether it is."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            if select.select([fd], [], [], 0.2)[0]:
                commands.put(os.read(fd, 1).decode(errors="ignore").lower())

    thread = threading.Thread(target=read, name="keys", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join(1)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so everything started is stopped."""

    def interrupt(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class Options:
    duration: float = 60.0
    cut_at: float | None = None
    restore_at: float | None = None
    skiers_per_second: float = 1.5
    workdir: Path | None = None
    seed: int | None = None


def run_resort_demo(options: Options, *, console: Console | None = None) -> int:
    """Run the whole resort for `options.duration` seconds; 0 when every decision reached the cloud exactly once."""
    console = console or Console(soft_wrap=True)
    try:
        with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
            workdir = options.workdir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="starfish-resort-"))
            )
            console.print("starting the resort: cloud (SQLite), cloud broker, site broker bridged to it, 2 gates ...")
            started = time.monotonic()
            resort = stack.enter_context(Resort(workdir))
            console.print(
                f"ready in {time.monotonic() - started:.1f} s: cloud {resort.api.base}, "
                f"cloud broker :{resort.cloud_broker.port}, site broker :{resort.site_broker.port} (bridged), "
                f"gates {', '.join(resort.gates)} on simulated relay boards and scanners; files in {workdir}"
            )
            return _run(resort, options, console, stack)
    except KeyboardInterrupt:
        console.print("interrupted: everything the demo started is stopped")
        return 130


def _run(resort: Resort, options: Options, console: Console, stack: contextlib.ExitStack) -> int:
    t0 = time.monotonic()
    skiers = Skiers(resort, rate=options.skiers_per_second, t0=t0, seed=options.seed)
    stack.callback(skiers.close)
    skiers.start()
    live_mode = console.is_terminal
    printed: queue.Queue[Seen] = queue.Queue()
    if not live_mode:
        skiers.listeners.append(printed)
    commands: queue.Queue[str] = queue.Queue()
    keys = stack.enter_context(key_presses(commands))
    link_since = 0.0
    events: list[str] = []

    def snapshot() -> Snapshot:
        return Snapshot(
            time.monotonic() - t0,
            resort.link_up,
            link_since,
            [resort.gate_view(g) for g in resort.gates],
            resort.cloud_view(),
        )

    def set_link(up: bool, why: str) -> None:
        nonlocal link_since
        if up == resort.link_up:
            return
        if up:
            resort.restore_link()
        else:
            resort.cut_link()
        link_since = time.monotonic() - t0
        event = f"{link_since:5.1f}s cloud link {'restored' if up else 'CUT'} ({why})"
        events.append(event)
        if not live_mode:
            console.print(event)

    footer = "keys: c cut the cloud link · r restore it · q quit" if keys else ""
    if options.cut_at is not None:
        footer += f"{' · ' if footer else ''}scheduled: cut at {options.cut_at:g} s"
        if options.restore_at is not None:
            footer += f", restore at {options.restore_at:g} s"
    live = stack.enter_context(Live(console=console, auto_refresh=False)) if live_mode else None
    last_plain = 0.0
    quit_early = cut_done = restore_done = False
    while (t := time.monotonic() - t0) < options.duration and not quit_early:
        while not commands.empty():
            key = commands.get()
            if key == "c":
                set_link(False, "key c")
            elif key == "r":
                set_link(True, "key r")
            elif key == "q":
                quit_early = True
        if options.cut_at is not None and options.cut_at <= t and not cut_done:
            cut_done = True
            set_link(False, "--cut-at")
        if options.restore_at is not None and options.restore_at <= t and not restore_done:
            restore_done = True
            set_link(True, "--restore-at")
        s = snapshot()
        if live is not None:
            live.update(render(s, skiers, options.duration, footer), refresh=True)
        else:
            while not printed.empty():
                console.print(plain_seen(printed.get()))
            if t - last_plain >= 2.0:
                console.print(plain_status(s))
                last_plain = t
        time.sleep(0.25)

    skiers.close()
    stream_end = time.monotonic()
    set_link(True, "end of the demo: drain the outboxes")
    drained = resort.wait_drained(DRAIN_TIMEOUT_S)
    drain_s = time.monotonic() - stream_end
    s = snapshot()
    if live is not None:
        live.update(render(s, skiers, options.duration, "stopping the gates ..."), refresh=True)
        live.stop()
    else:
        while not printed.empty():
            console.print(plain_seen(printed.get()))
        console.print(plain_status(s))
    resort.stop_gates()
    check = resort.exactly_once()
    views = [resort.gate_view(g) for g in resort.gates]
    return _summary(console, skiers, views, check, events, drained, drain_s)


def _summary(
    console: Console,
    skiers: Skiers,
    views: list[GateView],
    check: ExactlyOnce,
    events: list[str],
    drained: bool,
    drain_s: float,
) -> int:
    seen = skiers.all_seen()
    table = Table(title="Summary", title_justify="left")
    for name in ("gate", "journaled", "admitted", "denied", "from peers", "stored in cloud", "outbox"):
        table.add_column(name, justify="left" if name == "gate" else "right")
    for v in views:
        table.add_row(
            v.gate,
            str(v.journaled),
            str(v.admitted),
            str(v.denied),
            str(v.from_peers),
            str(check.stored.get(v.gate, 0)),
            str(v.outbox),
        )
    console.print(table)
    codes = Counter(s.decision.code if s.decision else "no decision" for s in seen)
    console.print("decisions: " + ", ".join(f"{code} {n}" for code, n in codes.most_common()))
    surprises = [s for s in seen if not s.as_expected]
    line = f"{len(seen) - len(surprises)} of {len(seen)} visits decided as the script expected"
    if surprises:
        line += "; not: " + "; ".join(plain_seen(s).strip() for s in surprises[:5])
    console.print(line)
    console.print(
        f"{skiers.sold} tickets sold, {skiers.refunded} refunded"
        + (f", {skiers.sale_errors} sales failed" if skiers.sale_errors else ""),
    )
    for event in events:
        console.print(event.strip())
    console.print(f"outboxes {'drained' if drained else 'NOT drained'} {drain_s:.1f} s after the skiers stopped")
    console.print(check.line(), style="bold green" if check.ok else "bold red")
    return 0 if check.ok and seen else 1
