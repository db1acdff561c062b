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

This module holds the run: options, keys and signals, the loop that cuts and restores the link and
refreshes the view. The skiers are in `demo.skiers`, the table and the summary in `demo.display`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live

from demo.display import Snapshot, plain_seen, plain_status, render, summary
from demo.skiers import Seen, Skiers
from harness.resort import Resort

DRAIN_TIMEOUT_S = 90.0


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
            resort = stack.enter_context(Resort(workdir, web=True))
            console.print(
                f"ready in {time.monotonic() - started:.1f} s: cloud {resort.api.base}, "
                f"cloud broker :{resort.cloud_broker.port}, site broker :{resort.site_broker.port} (bridged), "
                f"gates {', '.join(resort.gates)} on simulated relay boards and scanners; files in {workdir}"
            )
            name, password = resort.technician
            pages = ", ".join(f"{gate} {resort.page_url(gate)}" for gate in resort.gates)
            console.print(f"technician pages: {pages} (log in as {name} / {password} once the gate has synced)")
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
    return summary(console, skiers, views, check, events, drained, drain_s)
