"""The periodic recompute of sites' ticket-set checksums, for the feed heads (`cloud.sync.checksums`).

Summing a site reads all its tickets (a million at a large resort: seconds), so it runs on a worker
thread of its own with its own session, never on the publisher's thread or an event loop, and at most
one runs at a time: a kick while one is running is a no-op.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from cloud.db import utcnow
from cloud.sync import checksums, snapshot

log = logging.getLogger("starfish.cloud.sync")


class ChecksumRecompute:
    """`kick()` sums, in the background, every site `checksums.due`; `stop()` waits for a running one."""

    def __init__(self, factory: sessionmaker[Session], *, interval_s: float) -> None:
        self._factory = factory
        self._interval_s = interval_s
        self._busy = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0  # finished rounds (for tests and logs)

    def kick(self) -> bool:
        """Start a round unless one is running or stopping; True when one was started."""
        if self._stop.is_set() or not self._busy.acquire(blocking=False):
            return False
        self._thread = threading.Thread(target=self._round, name="checksum-recompute", daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _round(self) -> None:
        try:
            with self._factory() as session:
                sites = checksums.due(session, utcnow(), self._interval_s)
                session.rollback()
                for site_id in sites:
                    if self._stop.is_set():
                        break
                    summed = snapshot.site_checksum(session, site_id)
                    log.info("site %d: ticket-set checksum at seq %d recomputed", site_id, summed.seq)
        except Exception:
            log.exception("recomputing site checksums failed; trying again at the next heartbeat")
        finally:
            self.rounds += 1
            self._busy.release()
