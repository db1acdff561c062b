"""The gate side of sync: the ticket feed down, passage events up, peers' passages across.

One MQTT v5 client (paho) with a persistent session (client id ``gate-<site>-<gate>``,
``clean_start`` false, a session expiry) and QoS 1 everywhere, acknowledging by hand. paho's
network thread never touches the gate: it hands every message to the gate store's owner, the
asyncio task `GateSync.run`, which commits what the message carries (through its `GatePort`)
and only then sends the PUBACK. A message that was not acknowledged comes back after a reconnect.

`GateSync` composes the pieces, each owning its state: the link (`network`), the feed and its
snapshots (`feed`), the outbox going up (`uplink`), other gates' passages (`peers`), the group
commit of what comes back (`commit`) and the gate's status (`status`).

One name for a gate: a gate whose configured id is not the one its broker login may publish as
(the broker answers its publishes "Not authorized"), or that the cloud's gate roster does not
name, would have every event dropped without a word. It says so instead: an ERROR naming the
configured gate, the site and the broker login, and `GateSync.problem` for whoever shows the
gate's state. The gate keeps deciding and journaling: its outbox waits for the fix.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from paho.mqtt.subscribeoptions import SubscribeOptions

from models import PassageEvent
from models.sync import RefusedEvent, SnapshotHeader
from models.sync_config import SyncConfig, stale_feed
from sync import topics
from sync.gate.commit import GroupCommit
from sync.gate.feed import Feed
from sync.gate.network import Authorization, Connected, Disconnected, GateLink, Item, Signal
from sync.gate.peers import Peers
from sync.gate.status import Status
from sync.gate.uplink import Uplink
from sync.link import Received

if TYPE_CHECKING:
    import collections

    from sync.gate.port import GatePort

log = logging.getLogger("starfish.sync")


def utc_now() -> datetime:
    return datetime.now(UTC)


class GateSync:
    """Sync for one gate. Everything but paho's callbacks runs on the store owner's event loop."""

    def __init__(
        self,
        config: SyncConfig,
        *,
        port: GatePort,
        clock: Callable[[], datetime] = utc_now,
        password: str | None = None,
        tick_s: float = 1.0,
    ) -> None:
        if port.gate_id != config.gate:
            raise ValueError(f"the sync config is gate {config.gate!r}'s, the gate is {port.gate_id!r}")
        self.config = config
        self.port = port
        self.clock = clock
        self.tick_s = tick_s
        password = password if password is not None else config.load_password()
        self.client_id = f"gate-{config.site}-{config.gate}"
        self._feed_topic = topics.feed(config.site)
        self._head_topic = topics.head(config.site)
        self._acks_topic = topics.acks(config.site, config.gate)
        subscriptions = [
            (self._feed_topic, SubscribeOptions(qos=1)),
            (self._head_topic, SubscribeOptions(qos=1)),
            (self._acks_topic, SubscribeOptions(qos=1)),
            (topics.all_events(config.site), SubscribeOptions(qos=1, noLocal=True)),
        ]
        self.link = GateLink(config, client_id=self.client_id, password=password, subscriptions=subscriptions)
        self.feed = Feed(
            config, port=port, link=self.link, clock=clock, password=password, on_snapshot=self._snapshot_installed
        )
        self.status = Status(config, port=port, link=self.link, feed=self.feed, clock=clock)
        self.commit = GroupCommit(port=port, link=self.link, clock=clock, on_committed=self._committed)
        self.uplink = Uplink(config, port=port, link=self.link, commit=self.commit)
        self.peers = Peers(config, link=self.link, commit=self.commit, roster=lambda: self.feed.roster)
        self._task: asyncio.Task[None] | None = None
        self._problems: dict[str, str] = {}  # what is wrong with this gate's name, by who said so
        self._last_message_at: float | None = None  # monotonic: the last message of any kind from the broker

    # --- public API, called on the event loop ------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run `run` as a task of the running loop."""
        self._task = asyncio.create_task(self.run(), name="sync")
        self._task.add_done_callback(_report_end)
        return self._task

    async def stop(self) -> None:
        """Publish `offline`, disconnect cleanly and wait for `run` to end."""
        self.link.inbox.put_nowait(Signal.STOP)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def nudge(self) -> None:
        """A new event is in the outbox: publish it now (safe from any thread)."""
        self.link.post(Signal.NUDGE)

    def request_resync(self, why: str) -> bool:
        """Fetch a snapshot now (a technician asked, saying `why`); False when one is already under way."""
        if self.feed.resyncing:
            return False
        self.feed.request_snapshot(why)
        return True

    def last_message_age_s(self, now_monotonic: float) -> float | None:
        """Seconds since the broker last sent this gate anything (the feed head comes every few seconds);
        None: nothing yet."""
        at = self._last_message_at
        return None if at is None else max(0.0, now_monotonic - at)

    def feed_stale(self, now: datetime) -> bool:
        """Is the feed older than `max_feed_age_s` (plain codes must be refused)?"""
        return stale_feed(self.feed.fresh_at, now, self.config.max_feed_age_s)

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def resyncing(self) -> bool:
        return self.feed.resyncing

    @property
    def feed_seq(self) -> int:
        return self.feed.seq

    @property
    def epoch(self) -> str | None:
        return self.feed.epoch

    @property
    def head_seq(self) -> int:
        return self.feed.head_seq

    @property
    def fresh_at(self) -> datetime | None:
        return self.feed.fresh_at

    @property
    def roster(self) -> frozenset[str] | None:
        return self.feed.roster

    @property
    def checksum(self) -> tuple[int, str] | None:
        return self.status.checksum

    @property
    def in_step(self) -> bool | None:
        """Does the gate's ticket set equal the cloud's, by the checksum the cloud's feed head last announced?

        None (unknown) until both sides summed their set at the same feed seq: the cloud sums now and
        then, the gate every `checksum_interval_s` while its feed moves, keeping its last few sums.
        """
        cloud = self.feed.head_checksum
        if cloud is None:
            return None
        own = self.status.sums.get(cloud[0])
        return None if own is None else own == cloud[1]

    @property
    def peer_events_dropped(self) -> collections.Counter[str]:
        return self.peers.dropped

    @property
    def events_refused(self) -> collections.Counter[str]:
        """Refusals of this gate's events the cloud sent (their ids left the outbox), by the cloud's reason;
        an event the gate published twice before the refusal came can be refused, and counted, twice."""
        return self.uplink.events_refused

    @property
    def problem(self) -> str | None:
        """Why this gate's sync cannot work as configured (None: nothing known to be wrong)."""
        return "; ".join(self._problems.values()) or None

    async def run(self) -> None:
        """Own the sync state until `stop`: connect, apply, publish, reconnect as needed."""
        self.feed.load()
        self._check_roster()
        self.status.will()
        self.link.start(asyncio.get_running_loop())
        ticker = asyncio.create_task(self._ticker(), name="sync-tick")
        try:
            while (item := await self.link.inbox.get()) is not Signal.STOP:
                try:
                    self._dispatch(item)
                except Exception:
                    log.exception("sync: could not handle %s", _describe(item))
        finally:
            ticker.cancel()
            await self._shutdown()

    # --- the owner: dispatch -------------------------------------------------------------------

    def _dispatch(self, item: Item) -> None:
        if isinstance(item, Received):
            self._last_message_at = time.monotonic()
            self._on_message(item)
        elif isinstance(item, Connected):
            self._on_connected(item)
        elif isinstance(item, Disconnected):
            if self.link.down(item):
                log.warning("sync: lost the broker (%s); events wait in the outbox", item.reason)
        elif isinstance(item, Authorization):
            self._on_authorization(item)
        elif item is Signal.NUDGE:
            self.uplink.top_up()
        elif item is Signal.TICK:
            self._tick()

    def _on_connected(self, item: Connected) -> None:
        self.link.up(item)
        log.info("sync: gate %s connected (session %s)", self.client_id, "kept" if item.session_present else "new")
        self.status.publish()
        self.uplink.restart()  # the cloud stores by event id: a repeat is harmless
        self.uplink.top_up()
        self.feed.connected(item.session_present)

    def _on_message(self, item: Received) -> None:
        if item.topic == self._feed_topic:
            self.feed.on_feed(item)
        elif item.topic == self._head_topic:
            self.feed.on_head(item)
        elif item.topic == self._acks_topic:
            self.uplink.on_ack(item)
        else:
            parsed = topics.parse_gate_topic(item.topic)
            if parsed is None or parsed[0] != self.config.site or parsed[2] != "events":
                self.link.reject(item, "unexpected topic")
            elif parsed[1] == self.config.gate:
                self.link.ack(item.delivery)  # our own event, echoed
            else:
                self.peers.on_events(item, parsed[1])

    # --- one name for a gate ----------------------------------------------------------------------

    def _who(self) -> str:
        return f"gate {self.config.gate!r} of site {self.config.site!r} (broker login {self.config.username!r})"

    def _set_problem(self, source: str, problem: str | None) -> None:
        if problem == self._problems.get(source):
            return
        if problem is None:
            del self._problems[source]
            log.info("sync: %s: %s is resolved", self._who(), source)
        else:
            self._problems[source] = problem
            log.error("sync: %s", problem)
        self.status.problem = self.problem
        self.status.publish()  # the cloud sees it too, when the broker lets this gate publish its status

    def _on_authorization(self, item: Authorization) -> None:
        problem = None
        if item.denied:
            problem = (
                f"the broker refuses what {self._who()} publishes ({item.reason}): that login may not publish as "
                f"this gate, so its events never reach the cloud; check sync.gate and sync.username"
            )
        self._set_problem("broker", problem)

    def _check_roster(self) -> None:
        roster = self.feed.roster
        problem = None
        if roster is not None and self.config.gate not in roster:
            problem = (
                f"the cloud's roster of site {self.config.site!r} ({', '.join(sorted(roster)) or 'no gate'}) "
                f"does not name {self._who()}; check sync.gate against the gate's code in the cloud"
            )
        self._set_problem("roster", problem)

    def _snapshot_installed(self, header: SnapshotHeader) -> None:
        self.status.snapshot_installed(header)

    def _committed(
        self, acknowledged: list[uuid.UUID], refused: list[RefusedEvent], dropped: list[tuple[PassageEvent, str]]
    ) -> None:
        self.peers.not_recorded(dropped)
        self.uplink.confirmed(acknowledged, refused)

    # --- housekeeping ---------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.link.inbox.put_nowait(Signal.TICK)

    def _tick(self) -> None:
        self.feed.check_behind()
        self.status.maybe_sum_tickets()
        self.uplink.check_timeouts()
        self.uplink.top_up()  # also picks up events journaled without a nudge
        self.status.tick(self.port.outbox_depth())
        self.feed.save_fresh_at()
        self._check_roster()

    async def _shutdown(self) -> None:
        self.commit.flush()
        await self.feed.stop()
        await self.status.stop()
        self.feed.save_fresh_at()
        await self.link.close()
        log.info("sync: gate %s disconnected", self.client_id)


def _describe(item: Item) -> str:
    return f"a message on {item.topic}" if isinstance(item, Received) else repr(item)


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # The gate goes on deciding offline; what it journals waits in the outbox.
        log.critical("sync stopped: %s", task.exception(), exc_info=task.exception())
