"""Between the inputs and the decision task: what a read passes before it waits for a decision.

A noisy or hostile input must not crowd out real skiers, so a read meets, in this order:

1. Shape (serial scanner only, in its reader thread): a line that cannot be a credential
   (`models.credential.could_be_credential`) is dropped as ``not_a_credential``. It takes no
   queue slot and is not journaled: `parse` would only have called it ``unreadable``. A camera's
   codes are exempt: the decoder found a real QR symbol that somebody held up (a shop's code),
   and that skier should hear "this code cannot be read".
2. Debounce (per input, in the daemon): a code still in view is one read.
3. Rate, per input: `burst` reads at once, then `rate_per_s` (``rate_limited``). One turnstile
   admits a skier every second or two; a flood of plausible codes is cut to this pace, so it
   cannot fill the journal or the outbox either.
4. Room: each input has its own short queue; when it is full the oldest read of that input
   goes (``queue_full``): the skier at the reader now is the newest read, an older one has
   likely walked off (as with ``max_scan_age_s``). The decision task takes from the inputs in
   turn, so a flood on one input delays another input by one decision at most.
5. Age (the daemon, when a read's turn comes): older than ``max_scan_age_s`` (``too_old``).

Drops are counted per input and reason (`drops`, for the technician page) and logged as one
summary line at most every `summary_every_s`, never one line per read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

NOT_A_CREDENTIAL = "not_a_credential"
RATE_LIMITED = "rate_limited"
QUEUE_FULL = "queue_full"
TOO_OLD = "too_old"

log = logging.getLogger("starfish.gate")


@dataclass(frozen=True, slots=True)
class Scan:
    """A code as an input read it, stamped when it was read."""

    data: bytes
    source: str
    at: datetime
    mono: float


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class Intake:
    """Per-input rate limits and queues in front of the decision task, and the drop counters.

    `drop` and `allow` may be called from any thread; `put` and `get` only on the event loop.
    """

    def __init__(
        self,
        *,
        per_source: int = 8,
        rate_per_s: float = 5.0,
        burst: int = 20,
        summary_every_s: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_source < 1 or rate_per_s <= 0 or burst < 1 or summary_every_s <= 0:
            raise ValueError("per_source, rate_per_s, burst and summary_every_s must be positive")
        self.per_source = per_source
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.summary_every_s = summary_every_s
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._drops: dict[str, dict[str, int]] = {}
        self._reported: dict[str, dict[str, int]] = {}
        self._reported_at = -math.inf
        self._buckets: dict[str, _Bucket] = {}
        self._queues: dict[str, deque[Scan]] = {}
        self._turn = 0
        self._ready = asyncio.Event()

    @property
    def drops(self) -> dict[str, dict[str, int]]:
        """Reads dropped since start, per input and reason (a copy)."""
        with self._lock:
            return {source: dict(reasons) for source, reasons in self._drops.items()}

    def drop(self, source: str, reason: str) -> None:
        """Count one dropped read; log a summary if one is due."""
        with self._lock:
            reasons = self._drops.setdefault(source, {})
            reasons[reason] = reasons.get(reason, 0) + 1
        self.report()

    def allow(self, source: str, now: float) -> bool:
        """Take one read's worth of the input's rate; False (and counted) when it has none left."""
        with self._lock:
            bucket = self._buckets.setdefault(source, _Bucket(float(self.burst), now))
            bucket.tokens = min(float(self.burst), bucket.tokens + max(0.0, now - bucket.at) * self.rate_per_s)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return True
        self.drop(source, RATE_LIMITED)
        return False

    def put(self, scan: Scan) -> None:
        """Queue a read for its decision, dropping the oldest of its input when the queue is full."""
        queue = self._queues.setdefault(scan.source, deque())
        if len(queue) >= self.per_source:
            queue.popleft()
            self.drop(scan.source, QUEUE_FULL)
        queue.append(scan)
        self._ready.set()

    async def get(self) -> Scan:
        """The next read, taking from the inputs in turn; logs a due summary while idle."""
        while True:
            scan = self._next()
            if scan is not None:
                return scan
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), self.summary_every_s)
            except TimeoutError:
                self.report()

    def _next(self) -> Scan | None:
        sources = list(self._queues)
        for i in range(len(sources)):
            queue = self._queues[sources[(self._turn + i) % len(sources)]]
            if queue:
                self._turn = (self._turn + i + 1) % len(sources)
                return queue.popleft()
        return None

    def report(self, *, force: bool = False) -> None:
        """Log the drops since the last summary, if any and if `summary_every_s` has passed."""
        now = self.monotonic()
        with self._lock:
            if not force and now - self._reported_at < self.summary_every_s:
                return
            news = {
                source: {r: n - self._reported.get(source, {}).get(r, 0) for r, n in reasons.items()}
                for source, reasons in self._drops.items()
            }
            news = {s: {r: n for r, n in rs.items() if n} for s, rs in news.items()}
            news = {s: rs for s, rs in news.items() if rs}
            if not news:
                return
            self._reported = {source: dict(reasons) for source, reasons in self._drops.items()}
            self._reported_at = now
        log.warning(
            "dropped input reads: %s",
            "; ".join(f"{s} " + ", ".join(f"{r}={n}" for r, n in sorted(rs.items())) for s, rs in sorted(news.items())),
        )
