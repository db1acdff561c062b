"""The gate's status for the cloud: retained `GateStatus` on its own topic, and a Last Will saying `offline`.

Owns the ticket-set checksum the status carries (with the feed seq it was summed at, the last few
sums for comparing with the cloud's, and the task summing it in a worker thread), and what was last
published and when: a status goes out when the feed seq, the outbox depth, the gate's problem or the
state of its devices (`GateHealth`: barrier, camera, scanner, keep-open, fire alarm) changed, and at
least every `status_interval_s`. The health is asked of the port once per tick (`GatePort.health`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from models.ops import GateHealth
from models.sync import PROBLEM_MAX, GateStatus, SnapshotHeader
from models.sync_config import SyncConfig
from sync import topics
from sync.gate.feed import Feed
from sync.gate.network import GateLink

if TYPE_CHECKING:
    from sync.gate.port import GatePort

log = logging.getLogger("starfish.sync")

DEVICE_CHANGE_EVERY_S = 5.0  # a change of device states alone goes out at most this often
SUMS_KEPT = 8  # the gate's last checksums kept to compare with the cloud's, which may be a little older

# What of a gate's health makes a status go out at once when it changes (the rest waits for the refresh).
_Devices = tuple[str, str, str, bool, bool]


def _devices(health: GateHealth | None) -> _Devices | None:
    if health is None:
        return None
    return (health.barrier, health.camera, health.scanner, health.keep_open, health.fire_alarm)


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
        self.sums: dict[int, str] = {}  # the last `SUMS_KEPT` checksums by feed seq, the latest included
        self._checksum_task: asyncio.Task[None] | None = None
        self._checksum_at = float("-inf")
        self.problem: str | None = None  # set by the client: what is wrong with this gate's name
        # (feed seq, outbox depth, problem, device states) last published
        self._sent: tuple[int, int, str | None, _Devices | None] | None = None
        self._sent_at = 0.0
        self._health_failing = False

    def health(self) -> GateHealth | None:
        """The gate's health now; None when the port cannot tell (what it raised is logged once)."""
        try:
            health = self.port.health()
        except Exception:
            if not self._health_failing:
                log.exception("sync: the gate's health could not be read for its status")
            self._health_failing = True
            return None
        self._health_failing = False
        return health

    def keep(self, seq: int, checksum: str) -> None:
        """The ticket-set checksum at feed `seq`: the status's from now on, and one of the sums kept."""
        self.checksum = (seq, checksum)
        self.sums[seq] = checksum
        for old in sorted(self.sums)[:-SUMS_KEPT]:
            del self.sums[old]

    def message(
        self, state: Literal["online", "offline"], depth: int = 0, health: GateHealth | None = None
    ) -> GateStatus:
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
            health=health,
        )

    def will(self) -> None:
        """Before connecting: the Last Will says `offline`."""
        self.link.client.will_set(self.topic, self.message("offline").model_dump_json(), qos=1, retain=True)

    def publish(self, depth: int | None = None, health: GateHealth | None = None) -> None:
        if not self.link.connected:
            return
        depth = self.port.outbox_depth() if depth is None else depth
        health = self.health() if health is None else health
        online = self.message("online", depth, health)
        self.link.publish(self.topic, online.model_dump_json(), retain=True)
        # The Will carries the last numbers, so `offline` still says how far the gate got.
        offline = online.model_copy(update={"state": "offline"})
        self.link.client.will_set(self.topic, offline.model_dump_json(), qos=1, retain=True)
        self._sent = (self.feed.seq, depth, self.problem, _devices(health))
        self._sent_at = time.monotonic()

    def tick(self, depth: int) -> None:
        """Publish when the numbers, the problem or a device's state changed, or the last status is
        `status_interval_s` old."""
        if not self.link.connected:
            return
        health = self.health()
        numbers, devices = (self.feed.seq, depth, self.problem), _devices(health)
        age = time.monotonic() - self._sent_at
        sent = self._sent
        if (
            sent is None
            or numbers != sent[:3]
            or (devices != sent[3] and age >= DEVICE_CHANGE_EVERY_S)  # a flapping camera: not every second
            or age >= self.config.status_interval_s
        ):
            self.publish(depth, health)

    def snapshot_installed(self, header: SnapshotHeader) -> None:
        """The snapshot's set is the gate's now: the sums before it say nothing of it (or are another run's)."""
        self.sums.clear()
        self.keep(header.seq, header.checksum)  # verified against the staged set before the swap

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
            self.keep(*summed)  # not over a snapshot's newer one, installed meanwhile
            self.publish()

    async def stop(self) -> None:
        """Let a sum in progress end, then say `offline` (waiting a little for the broker's PUBACK)."""
        if self._checksum_task is not None:
            await asyncio.gather(self._checksum_task, return_exceptions=True)
        if not self.link.connected:
            return
        offline = self.message("offline", self.port.outbox_depth(), self.health())
        info = self.link.publish(self.topic, offline.model_dump_json(), retain=True)
        if info is None:
            return
        try:
            await asyncio.to_thread(info.wait_for_publish, 2.0)
        except (RuntimeError, ValueError) as exc:
            log.warning("sync: could not publish the offline status: %s", exc)
