"""A gate for real: the daemon (`python -m edge.cli gate run`) in its own process, its serial scanner a pty, its
relay board a pymodbus server on loopback (`harness.relay_sim`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import yaml

from harness.processes import ChildProcess
from harness.relay_sim import RelayBoardSim


class ScannerPty:
    """A serial scanner as a pty pair: the reader (a gate, a driver) opens `path`, codes go in at the master.

    `path` is the slave's device (`device`), or `link`, a symlink to it as udev makes under
    /dev/serial/by-id. The slave end stays open here too, so a gate restarting sees no hang-up
    between runs; `unplug` closes both ends, as pulling the USB cable does.
    """

    def __init__(self, *, link: Path | None = None) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo or line editing before the reader opens it
        os.set_blocking(self.master, False)  # a writer can always notice it should stop
        self.device = os.ttyname(self.slave)
        if link is not None:
            link.symlink_to(self.device)
        self.path = str(link) if link is not None else self.device
        self.plugged = True

    def scan(self, code: str) -> None:
        """Send one code; dropped when the gate has stopped reading and the line is full."""
        with contextlib.suppress(BlockingIOError):
            os.write(self.master, code.encode() + b"\r\n")

    def write(self, data: bytes, *, timeout: float = 20.0, stop: threading.Event | None = None) -> None:
        """Write all of `data`, raw, as the reader takes it (until `stop` is set); AssertionError once
        nothing was read for `timeout` seconds (the reader stopped)."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view and not (stop and stop.is_set()):
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError("nothing read from the pty for a long while: the reader stopped") from None
                threading.Event().wait(0.001)

    def feed(self, codes: Iterable[str], *, timeout: float, reading: Callable[[], bool], who: str) -> None:
        """Send codes one line each, as fast as the gate reads them; `reading` raises once the gate is gone."""
        data = b"".join(code.encode() + b"\r" for code in codes)
        deadline = time.monotonic() + timeout
        while data:
            if select.select([], [self.master], [], 0.2)[1]:
                with contextlib.suppress(BlockingIOError):
                    data = data[os.write(self.master, data) :]
            elif reading() and time.monotonic() > deadline:
                raise AssertionError(f"{who} stopped reading its scanner")

    def unplug(self) -> None:
        """Close both ends, as pulling the cable does (the reader sees a hang-up); again does nothing."""
        if not self.plugged:
            return
        self.plugged = False
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self.unplug()


class RelayBoards:
    """Simulated relay boards (real pymodbus servers on loopback), served on one event loop in a thread."""

    def __init__(self) -> None:
        self.boards: list[RelayBoardSim] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="relay-boards", daemon=True)
        self.thread.start()

    def add(self, **options: Any) -> RelayBoardSim:
        """A board serving Modbus TCP on a free loopback port (`board.port`); options as `RelayBoardSim`'s."""
        board = RelayBoardSim(**options)
        asyncio.run_coroutine_threadsafe(board.start_tcp(), self.loop).result(10)
        self.boards.append(board)
        return board

    def close(self) -> None:
        for board in self.boards:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(board.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class GateProcess(ChildProcess):
    """A gate daemon (`python -m edge.cli gate run`, what `starfish gate run` runs) in its own process;
    scans go in through a pty, as from a serial scanner.

    `config` is the gate's YAML tree but for `store` and `scanner`, which live in `folder` (its
    config in gate.yaml, its store gate.db, its output gate.log). `scanner`: the pty to use, e.g.
    one reached through a symlink (`ScannerPty(link=...)`); a new one by default. Each `launch` runs
    the same config again (a restart after `kill`, as after a power cut).
    """

    def __init__(
        self, folder: Path, config: Mapping[str, Any], *, scanner: ScannerPty | None = None, own_session: bool = False
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.db = folder / "gate.db"
        self.scanner = scanner if scanner is not None else ScannerPty()
        self.config = {**config, "store": {"path": str(self.db)}, "scanner": {"port": self.scanner.path}}
        self.config_path = folder / "gate.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, allow_unicode=True), encoding="utf-8")
        argv = [sys.executable, "-m", "edge.cli", "gate", "run", "--config", str(self.config_path)]
        super().__init__(f"gate {config['gate']['gate_id']}", argv, folder / "gate.log", own_session=own_session)
        self._runs = 0

    def launch(self) -> None:
        """Start the daemon and return at once (start several side by side, then `wait_running`)."""
        super().launch()
        self._runs += 1

    def start(self, timeout: float = 30.0) -> Self:
        self.launch()
        return self.wait_running(timeout)

    def wait_running(self, timeout: float = 30.0) -> Self:
        """Until the daemon runs: its inputs, barrier and sync started."""
        self.wait_until(lambda: self.said(") running") >= self._runs, "running", timeout)
        return self

    @property
    def web_url(self) -> str:
        """The technician page's address, from the config's `web:` block (ValueError without one)."""
        web = self.config.get("web")
        if web is None:
            raise ValueError(f"{self.name} has no web: block")
        scheme = "https" if web.get("tls_cert") else "http"
        return f"{scheme}://{web.get('bind', '127.0.0.1')}:{web.get('port', 8080)}"

    def wait_page(self, timeout: float = 30.0) -> str:
        """Until the daemon serves its technician page; its address."""
        self.wait_until(lambda: self.said("technician page on ") >= self._runs, "technician page served", timeout)
        return self.web_url

    def scan(self, *codes: str, timeout: float = 30.0) -> None:
        """Present codes at the scanner, one line each, as fast as the gate reads them."""
        self.scanner.feed(codes, timeout=timeout, reading=self.alive, who=self.name)

    def close(self, timeout: float = 20.0) -> None:
        """Stop the daemon (SIGTERM, SIGKILL after `timeout` s) and unplug its scanner."""
        self.stop(timeout)
        self.scanner.close()
