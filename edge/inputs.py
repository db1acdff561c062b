"""What the daemon's input threads share: the debouncer, and each input's health as the technician page shows it.

Each input (camera, scanner) runs its read loop in its own thread under `supervise`: an error is
logged once, recorded in the input's `InputHealth` (state ``error``, the message and when it began)
and retried; a driver that reconnects by itself (the serial scanner) is in error while it says it is
not `connected`. The next good read sets the state back to ``ok`` and keeps the last error, so the
page can still say what went wrong and when.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from drivers.errors import DriverError
from edge.vitals import DeviceVitals

log = logging.getLogger("starfish.gate")


class Debouncer:
    """Drops a code that is still in view: seen again within `window_s` of its last sighting.

    Remembers the `capacity` most recently seen codes: a flood of distinct codes costs the same
    per read as a quiet day.
    """

    def __init__(self, window_s: float, capacity: int = 1000) -> None:
        self.window_s = window_s
        self.capacity = capacity
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def fresh(self, code: bytes, now: float) -> bool:
        last = self._seen.pop(code, None)
        self._seen[code] = now
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return last is None or now - last >= self.window_s


class InputHealth:
    """One input's state, written by its thread and read by anyone (a frozen `DeviceVitals` each time)."""

    def __init__(self) -> None:
        self._vitals = DeviceVitals("ok")

    @property
    def vitals(self) -> DeviceVitals:
        return self._vitals  # replaced whole, never mutated: safe to read from any thread

    def ok(self) -> None:
        if self._vitals.state != "ok":
            v = self._vitals
            self._vitals = DeviceVitals("ok", v.last_error, v.last_error_at)

    def error(self, message: str, at: datetime) -> None:
        v = self._vitals
        if v.state != "error" or v.last_error != message:  # the time is when this error began
            self._vitals = DeviceVitals("error", message, at)


class Closable(Protocol):
    def close(self) -> None: ...


def supervise(
    name: str,
    device: Closable,
    step: Callable[[], bool],
    *,
    stop: threading.Event,
    health: InputHealth,
    clock: Callable[[], datetime],
) -> None:
    """Run one input's read loop in its thread: errors are logged and retried, never fatal."""
    reported = ""
    try:
        while not stop.is_set():
            try:
                if not step():
                    health.error("source ended", clock())
                    return
                reported = ""
                if getattr(device, "connected", True):
                    health.ok()
                else:  # a driver that reconnects by itself (the serial scanner) says so instead of raising
                    health.error(getattr(device, "last_error", None) or "disconnected", clock())
            except Exception as exc:
                message = str(exc) or type(exc).__name__
                health.error(message, clock())
                if message != reported:
                    log.error("%s: %s", name, message, exc_info=not isinstance(exc, DriverError))
                    reported = message
                stop.wait(0.5)
    finally:
        try:
            device.close()  # closed by its owner thread, never from the event loop
        except Exception as exc:
            log.warning("closing %s: %s", name, exc)
