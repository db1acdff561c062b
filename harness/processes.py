"""Child processes with their output in a log file, free loopback ports, and the one poll-until.

`wait_until` is how tests, bench and demo wait for another process or thread: it polls a
condition, returns its first truthy value, and raises `NeverHappened` (an AssertionError, so a
test reports it as a failure) once a generous bound passed; it never measures time.
`poll_until` is the same loop answering True/False, `eventually` the same on an event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

REPO = Path(__file__).resolve().parents[1]

T = TypeVar("T")


class NeverHappened(AssertionError):
    """What was waited for did not happen in time, or the process it waited on exited."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _first_truthy(condition: Callable[[], T], timeout: float, interval: float) -> T | None:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)
    return value


def poll_until(condition: Callable[[], object], timeout: float, *, interval: float = 0.05) -> bool:
    """Poll until `condition` holds; False once `timeout` seconds passed without it."""
    return _first_truthy(condition, timeout, interval) is not None


def wait_until(condition: Callable[[], T], what: str, timeout: float = 5.0, *, interval: float = 0.02) -> T:
    """Poll until condition returns something truthy and return that; a generous bound so a broken
    setup fails rather than hangs.

    `interval`: longer for a condition that costs the peers something (a snapshot, a file opened).
    """
    value = _first_truthy(condition, timeout, interval)
    if value is None:
        raise NeverHappened(f"never happened within {timeout}s: {what}")
    return value


@overload
async def eventually(
    condition: Callable[[], Awaitable[T]], what: str, timeout: float = ..., *, interval: float = ...
) -> T: ...
@overload
async def eventually(condition: Callable[[], T], what: str, timeout: float = ..., *, interval: float = ...) -> T: ...
async def eventually(condition: Callable[[], Any], what: str, timeout: float = 10.0, *, interval: float = 0.01) -> Any:
    """`wait_until` on the event loop, which runs on while it waits; `condition` may return an awaitable
    (a read from a device) whose result counts.

    Its defaults suit the async tests: state in this process (short interval), moved by a peer over
    a real broker or device (a bound of 10 s).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise NeverHappened(f"never happened within {timeout}s: {what}")
        await asyncio.sleep(interval)


def tail(path: Path, lines: int = 40, *, skip: Sequence[str] = ()) -> str:
    """The end of a log file, but for lines holding any of `skip`: for a failure message."""
    try:
        kept = [line for line in path.read_text(errors="replace").splitlines() if not any(s in line for s in skip)]
    except FileNotFoundError:
        return f"(no {path.name})"
    return "\n".join(kept[-lines:])


class ChildProcess:
    """A command in a child process, its output appended to a log file; each `launch` runs it again.

    `own_session`: the child leaves this terminal's process group, so Ctrl-C reaches only this
    process, which then stops its children in order (the demo).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        *,
        own_session: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.own_session = own_session
        self._proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        """Start the command and return at once."""
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has exited (negative: the signal that ended it); None while it runs."""
        return self._proc.poll() if self._proc is not None else None

    def alive(self) -> bool:
        """True while it runs; `NeverHappened` with the end of its log once it has exited."""
        if self._proc is None:
            raise NeverHappened(f"{self.name} was never started")
        if self._proc.poll() is not None:
            raise NeverHappened(f"{self.name} exited with {self._proc.returncode}:\n{tail(self.log)}")
        return True

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def said(self, text: str) -> int:
        """How often `text` appears in its log."""
        return self.log_text().count(text)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float, *, interval: float = 0.05) -> None:
        """`wait_until` while the process runs; the failure carries the end of its log."""
        try:
            wait_until(lambda: self.alive() and condition(), f"{self.name}: {what}", timeout, interval=interval)
        except NeverHappened as e:
            if self.running:
                raise NeverHappened(f"{e}; its log ends:\n{tail(self.log)}") from None
            raise

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: a clean shutdown (SIGKILL if it hangs)."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, whatever it was doing."""
        self._signal(signal.SIGKILL, 20.0)

    def send(self, sig: signal.Signals) -> None:
        """Send `sig` and return at once (SIGHUP: reload); nothing when it is not running."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
