"""Which cloud process publishes the feed: exactly one at a time, taken over within seconds.

Several cloud processes (workers, hosts) may serve one PostgreSQL; each runs the MQTT loop and
consumes gates' events, but only the holder of the feed lease publishes the feed and the heads.
The lease is a PostgreSQL session-level advisory lock (`pg_try_advisory_lock`) held on a dedicated
connection that its own thread owns: a process that dies (even ``kill -9``) closes that connection
and PostgreSQL releases the lock at once; the others try every `retry_s` (1 s). A lost connection is
a lost lease: the thread notices it as an error on that connection (it waits on its socket) and stops
the publisher before it reconnects and competes again. Two processes may both publish for that
moment; gates skip a seq they have, so a duplicate costs nothing, and a new holder publishes from
the lowest change not yet acknowledged by the broker (``published_at`` NULL), the in-flight ones
again: the feed stays gapless.

The same connection LISTENs on `cloud.sync.feed.CHANNEL`: a transaction that appended to the feed
sends ``pg_notify`` (`feed.notify_on_commit`), delivered on its commit to every process, so the
holder wakes for another process's sale at once instead of at its next poll (kept as a fallback).

On SQLite there is one cloud process: it always holds the lease (`Sole`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from cloud.sync.feed import CHANNEL
from models.sync import FeedHead
from sync import topics
from sync.link import Received

log = logging.getLogger("starfish.cloud.sync.leader")

# pg_advisory_lock's 64-bit key of the feed publisher: "sfFEED01".
LEASE_KEY = int.from_bytes(b"sfFEED01", "big") - 2**63


# A host cut off from PostgreSQL without a reset (power loss, a partition) must lose the lease in seconds, not
# when the kernel's default keepalive (about 2 h) fires: probes both ways, the server's (which releases the lock)
# and ours (which stops this process publishing).
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3",
}


class Lease(Protocol):
    """Whether this process may publish the feed right now."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def held(self) -> bool: ...


class Sole:
    """The only cloud process (SQLite): it always publishes."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def held(self) -> bool:
        return True


class PgLease:
    """The advisory-lock lease on PostgreSQL, kept (or competed for) by its own thread; `on_wake` is called
    when this process takes it and on every feed notification."""

    def __init__(
        self, database_url: str, *, on_wake: Callable[[], None], retry_s: float = 1.0, key: int = LEASE_KEY
    ) -> None:
        self._conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_wake = on_wake
        self._retry_s = retry_s
        self._key = key
        self._held = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def held(self) -> bool:
        return self._held.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sync-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Give the lease up (closing the connection releases the lock: another process takes it at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._retry_s + 5)
            self._thread = None

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5, **KEEPALIVES) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        if not self._held.is_set():
                            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
                            if row is not None and row[0]:
                                self._held.set()
                                log.info("this process holds the feed lease: it publishes the feed")
                                self._on_wake()
                        # Returns after retry_s, at once on a notification, or raises when the connection is lost.
                        for _ in conn.notifies(timeout=self._retry_s, stop_after=1):
                            self._on_wake()
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    log.warning("feed lease connection failed (%s); competing again", exc)
            finally:
                if self._held.is_set():
                    self._held.clear()
                    if not self._stop.is_set():
                        log.warning("lost the feed lease with its connection: no longer publishing")
            self._stop.wait(self._retry_s)


def for_database(database_url: str, on_wake: Callable[[], None]) -> Lease:
    """The lease fitting the database: PostgreSQL's advisory lock, or `Sole` on SQLite."""
    if make_url(database_url).get_backend_name() == "postgresql":
        return PgLease(database_url, on_wake=on_wake)
    return Sole()


def retained_heads(
    client: mqtt.Client,
    inbox: queue.Queue[Received],
    subacks: queue.SimpleQueue[int],
    codes: Sequence[str],
    *,
    wait_s: float = 5.0,
    grace_s: float = 0.3,
) -> dict[str, tuple[str, int]]:
    """Each site's retained feed head on the broker, site code -> (epoch, seq): subscribed, read from `inbox`
    (where the client's message callback puts heads), unsubscribed. The broker sends retained messages right
    after its SUBACK (message ids in `subacks`), so a site without a head costs `grace_s` past it."""
    while not inbox.empty():
        inbox.get_nowait()
    if not codes:
        return {}
    wanted = [topics.head(code) for code in codes]
    _, mid = client.subscribe([(t, 1) for t in wanted])
    deadline = time.monotonic() + wait_s
    with contextlib.suppress(queue.Empty):
        while subacks.get(timeout=max(0.0, deadline - time.monotonic())) != mid:
            pass
    deadline = min(deadline, time.monotonic() + grace_s)
    heads: dict[str, tuple[str, int]] = {}
    while len(heads) < len(codes) and (left := deadline - time.monotonic()) > 0:
        try:
            r = inbox.get(timeout=left)
        except queue.Empty:
            break
        try:
            head = FeedHead.model_validate_json(r.payload)
        except ValidationError:
            log.warning("ignored a retained head on %s that is not a feed head", r.topic)
            continue
        heads[head.site] = (head.epoch, head.seq)
    client.unsubscribe(wanted)
    return heads
