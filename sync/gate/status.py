"""The gate's status for the cloud: retained `GateStatus` on its own topic, and a Last Will saying `offline`.

Owns the ticket-set checksum the status carries (with the feed seq it was summed at, and the
task summing it in a worker thread), and what was last published and when: a status goes out
when the feed seq, the outbox depth or the gate's problem changed, and at least every `status_interval_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from models.sync import PROBLEM_MAX, GateStatus, SnapshotHeader
from models.sync_config import SyncConfig
from sync import topics
from sync.gate.feed import Feed
from sync.gate.network import GateLink

if TYPE_CHECKING:
    from sync.gate.port import GatePort

log = logging.getLogger("starfish.sync")


class Status:
    """Status and heartbeat of one gate; runs on the event loop."""

    def __init__(
        self, config: SyncConfig, *, port: GatePort, link: GateLink, feed: Feed, clock: Callable[[], datetime]
    ) -> None:
        self.config = config
        self.port = port
        self.link = link
        self.feed = feed
        self.clock = clock
        self.topic = topics.status(config.site, config.gate)
        self.checksum: tuple[int, str] | None = None  # (feed seq, ticket-set checksum at that seq)
        self._checksum_task: asyncio.Task[None] | None = None
        self._checksum_at = float("-inf")
        self.problem: str | None = None  # set by the client: what is wrong with this gate's name
        self._sent: tuple[int, int, str | None] | None = None  # (feed seq, outbox depth, problem) last published
        self._sent_at = 0.0

    def message(self, state: Literal["online", "offline"], depth: int = 0) -> GateStatus:
        checksum_seq, checksum = self.checksum if self.checksum is not None else (None, None)
        return GateStatus(
            site=self.config.site,
            gate=self.config.gate,
            state=state,
            feed_seq=self.feed.seq,
            outbox_depth=depth,
            at=self.clock(),
            checksum=checksum,
            checksum_seq=checksum_seq,
            problem=self.problem[:PROBLEM_MAX] if self.problem else None,
        )

    def will(self) -> None:
        """Before connecting: the Last Will says `offline`."""
        self.link.client.will_set(self.topic, self.message("offline").model_dump_json(), qos=1, retain=True)

    def publish(self, depth: int | None = None) -> None:
        if not self.link.connected:
            return
        depth = self.port.outbox_depth() if depth is None else depth
        online = self.message("online", depth)
        self.link.publish(self.topic, online.model_dump_json(), retain=True)
        # The Will carries the last numbers, so `offline` still says how far the gate got.
        offline = online.model_copy(update={"state": "offline"})
        self.link.client.will_set(self.topic, offline.model_dump_json(), qos=1, retain=True)
        self._sent = (self.feed.seq, depth, self.problem)
        self._sent_at = time.monotonic()

    def tick(self, depth: int) -> None:
        """Publish when the numbers or the problem changed, or the last status is `status_interval_s` old."""
        changed = (self.feed.seq, depth, self.problem) != self._sent
        if changed or time.monotonic() - self._sent_at >= self.config.status_interval_s:
            self.publish(depth)

    def snapshot_installed(self, header: SnapshotHeader) -> None:
        self.checksum = (header.seq, header.checksum)  # verified against the staged set before the swap

    def maybe_sum_tickets(self) -> None:
        """Sum the ticket set for the status when the feed moved on, at most every `checksum_interval_s`
        (a store never synced sums to nothing: `read_checksum` says None)."""
        if (
            self._checksum_task is not None
            or self.feed.resyncing
            or (self.checksum is not None and self.checksum[0] == self.feed.seq)
            or time.monotonic() - self._checksum_at < self.config.checksum_interval_s
        ):
            return
        self._checksum_at = time.monotonic()
        self._checksum_task = asyncio.create_task(self._sum_tickets(), name="sync-checksum")

    async def _sum_tickets(self) -> None:
        try:
            summed = await asyncio.to_thread(self.port.read_checksum)
        except Exception as exc:
            log.warning("sync: could not sum the ticket set for the status: %s", exc)
            summed = None
        finally:
            self._checksum_task = None
        if summed is not None and (self.checksum is None or summed[0] >= self.checksum[0]):
            self.checksum = summed  # not over a snapshot's newer one, installed meanwhile
            self.publish()

    async def stop(self) -> None:
        """Let a sum in progress end, then say `offline` (waiting a little for the broker's PUBACK)."""
        if self._checksum_task is not None:
            await asyncio.gather(self._checksum_task, return_exceptions=True)
        if not self.link.connected:
            return
        offline = self.message("offline", self.port.outbox_depth())
        info = self.link.publish(self.topic, offline.model_dump_json(), retain=True)
        if info is None:
            return
        try:
            await asyncio.to_thread(info.wait_for_publish, 2.0)
        except (RuntimeError, ValueError) as exc:
            log.warning("sync: could not publish the offline status: %s", exc)
