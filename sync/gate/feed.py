"""Down: the cloud's ticket feed, applied in strict sequence order, and the snapshots that mend it.

Owns where the gate is on the feed: the last sequence applied, the run of the feed it follows
(its epoch) and the runs it left, the cloud's announced head (and the last ticket-set checksum it
announced), when the feed was last confirmed fresh, the site's gate roster, the messages held back
(unacknowledged) until they can apply, and the snapshot task. A gap, a new run of the feed, a fresh
gate or a lost broker session fetch a snapshot (`sync.snapshot_client`) and the feed resumes after
its sequence. The retained feed head (`FeedHead`, a heartbeat) keeps a quiet feed fresh, and a gate
that stays below it for `feed_gap_grace_s` without progress lost a message: snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from models import GateConfig
from models.credential import load_public_key
from models.keyset import KeySetSignatureError, verify_key_set
from models.sync import FeedHead, FeedMessage, GateConfigChange, GateRoster, KeySet, SnapshotHeader
from models.sync_config import SyncConfig
from sync.errors import KeySetError, SnapshotError, first_error
from sync.gate.network import GateLink
from sync.link import Delivery, Received
from sync.snapshot_client import fetch_snapshot, snapshot_url

if TYPE_CHECKING:
    from sync.gate.port import GatePort

log = logging.getLogger("starfish.sync")

_SiteMsg = TypeVar("_SiteMsg", FeedMessage, FeedHead)


class _RulesRefused(Exception):
    """The cloud's rules for this gate name another site or gate (logged where raised)."""


class Feed:
    """The gate's place on the cloud's feed; every method runs on the event loop."""

    def __init__(
        self,
        config: SyncConfig,
        *,
        port: GatePort,
        link: GateLink,
        clock: Callable[[], datetime],
        password: str | None,
        on_snapshot: Callable[[SnapshotHeader], None],
    ) -> None:
        self.config = config
        self.port = port
        self.link = link
        self.clock = clock
        self._password = password
        self._on_snapshot = on_snapshot
        self._key_root = load_public_key(config.key_root)
        self.seq = 0
        self.fresh_at: datetime | None = None
        self._fresh_saved: datetime | None = None
        self.head_seq = 0  # the cloud's last announced head
        self.head_checksum: tuple[int, str] | None = None  # the cloud's last (seq, ticket-set checksum), as announced
        self.epoch: str | None = None  # the run of the feed this gate follows (None: adopt the first seen)
        self._retired: set[str] = set()  # runs this gate left: their stragglers are dropped, not followed
        self.roster: frozenset[str] | None = None  # the site's gates, as the cloud named them (None: not yet)
        self._buffer: dict[int, tuple[FeedMessage, Delivery]] = {}
        self._buffer_cap = max(1, config.receive_maximum // 2)
        self._dropped_max = 0
        self._behind_since: float | None = None  # monotonic: when the gate was first seen below the head
        self._behind_at_seq = 0
        self._snapshot_task: asyncio.Task[None] | None = None
        self._abort = threading.Event()

    def load(self) -> None:
        """Take up the position the gate saved."""
        self.seq = self.port.feed_seq()
        self.epoch = self.port.feed_epoch()
        self.roster = self.port.gate_roster()
        if self.roster is None:
            log.warning(
                "sync: no gate roster yet: peers' passages are taken from any gate of site %s", self.config.site
            )
        self.fresh_at = self._fresh_saved = self.port.fresh_at()
        if not self.port.has_feed_position():
            self.request_snapshot("this gate has never been synced")

    @property
    def resyncing(self) -> bool:
        return self._snapshot_task is not None

    def connected(self, session_present: bool) -> None:
        if not session_present and self.port.has_feed_position():
            self.request_snapshot("the broker had no session for this gate: feed messages may be lost")

    def save_fresh_at(self) -> None:
        """Keep a freshness the heads confirmed (changes and snapshots save their own)."""
        if self.fresh_at is not None and self.fresh_at != self._fresh_saved:
            self.port.save_fresh_at(self.fresh_at)
            self._fresh_saved = self.fresh_at

    async def stop(self) -> None:
        self._abort.set()
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
            await asyncio.gather(self._snapshot_task, return_exceptions=True)
            self._snapshot_task = None

    # --- messages ---------------------------------------------------------------------------------

    def _site_message(self, item: Received, model: type[_SiteMsg], what: str) -> _SiteMsg | None:
        """The message, when it is a valid `model` of this gate's site; else rejected (None)."""
        try:
            msg = model.model_validate_json(item.payload)
        except ValidationError as exc:
            self.link.reject(item, f"not a {what} ({first_error(exc)})")
            return None
        if msg.site != self.config.site:
            self.link.reject(item, f"{what} of site {msg.site!r}")
            return None
        return msg

    def on_feed(self, item: Received) -> None:
        msg = self._site_message(item, FeedMessage, "feed message")
        if msg is None:
            return
        if not self._same_epoch(msg.epoch):
            if msg.epoch in self._retired:
                self.link.ack(item.delivery)  # a straggler of a run this gate has left
            else:
                self._hold(msg, item.delivery)  # perhaps the new run's: kept until the snapshot says which
            return
        if msg.seq <= self.seq:
            self.link.ack(item.delivery)  # a repeat: no news, and no proof of freshness either
        elif self.resyncing:
            self._hold(msg, item.delivery)
        elif msg.seq == self.seq + 1:
            if self._apply(msg, item.delivery):
                self._apply_held()
        else:
            self._hold(msg, item.delivery)
            self.request_snapshot(f"feed gap: at {self.seq}, received {msg.seq}")

    def on_head(self, item: Received) -> None:
        head = self._site_message(item, FeedHead, "feed head")
        if head is None:
            return
        self.link.ack(item.delivery)
        if not self._same_epoch(head.epoch):
            return
        self.head_seq = head.seq  # the latest word: a feed reset brings the head down too
        if head.checksum is not None and head.checksum_seq is not None:
            self.head_checksum = (head.checksum_seq, head.checksum)
        else:
            self.head_checksum = None  # a cloud that no longer says: nothing to compare with
        if head.seq <= self.seq and not self.resyncing:
            # Up to date as of the cloud's `at` (a retained head may be old: the link may be down).
            at = min(head.at, self.clock())
            if self.fresh_at is None or at > self.fresh_at:
                self.fresh_at = at
        self.check_behind()

    def _same_epoch(self, epoch: str) -> bool:
        """Is `epoch` the run of the feed this gate follows? If not, fetch a snapshot of the new run."""
        if self.epoch is None and not self.resyncing:
            self.epoch = epoch  # a store synced before epochs existed: the first one seen is ours
        if epoch == self.epoch:
            return True
        if epoch in self._retired:
            return False
        self.request_snapshot(f"the cloud's feed started again (epoch {epoch!r}, this gate follows {self.epoch!r})")
        return False

    def check_behind(self) -> None:
        """A gate below the announced head, making no progress for `feed_gap_grace_s`, lost a message."""
        if self.head_seq <= self.seq or self.resyncing:
            self._behind_since = None
            return
        now = time.monotonic()
        if self._behind_since is None:
            self._behind_since = now
            self._behind_at_seq = self.seq
        elif self.seq != self._behind_at_seq:
            self._behind_since, self._behind_at_seq = now, self.seq  # progress: give it time
        elif now - self._behind_since > self.config.feed_gap_grace_s:
            self._behind_since = None
            self.request_snapshot(f"the cloud's feed head is {self.head_seq}, this gate is stuck at {self.seq}")

    def _hold(self, msg: FeedMessage, delivery: Delivery) -> None:
        """Keep a message that cannot apply yet, unacknowledged, until the snapshot is in."""
        earlier = self._buffer.get(msg.seq)
        if earlier is not None:
            self.link.ack(earlier[1])
        elif len(self._buffer) >= self._buffer_cap:
            # Do not let the feed fill the broker's window: acks and peers' events must get through.
            self._dropped_max = max(self._dropped_max, msg.seq)
            self.link.ack(delivery)
            return
        self._buffer[msg.seq] = (msg, delivery)

    def _apply(self, msg: FeedMessage, delivery: Delivery) -> bool:
        now = self.clock()
        change = msg.change
        try:
            try:
                if isinstance(change, KeySet):
                    self._verify_keys(change.keys, change.signature)
                if isinstance(change, GateConfigChange) and change.gate_id == self.config.gate:
                    self._check_rules(change.config, f"feed {msg.seq}")
                self.port.apply_change(change, msg.seq, fresh=now)
            except KeySetError as exc:
                log.error("sync: feed %d: key set refused (%s); the gate keeps its current keys", msg.seq, exc)
                self.port.skip_change(msg.seq, fresh=now)
            except _RulesRefused:
                self.port.skip_change(msg.seq, fresh=now)
        except Exception:
            log.exception("sync: feed %d could not be applied; fetching a snapshot", msg.seq)
            self._hold(msg, delivery)
            self.request_snapshot("a feed change could not be applied")
            return False
        self.seq = msg.seq
        self.fresh_at = self._fresh_saved = now
        if isinstance(msg.change, KeySet):
            self.port.reload_keys()
        if isinstance(msg.change, GateRoster):
            self.roster = frozenset(msg.change.gates)
        if isinstance(change, GateConfigChange) and change.gate_id == self.config.gate:
            what = "withdrew its rules: the file's again" if change.config is None else "changed this gate's rules"
            log.warning("sync: feed %d: the cloud %s", msg.seq, what)
        self.link.ack(delivery)
        return True

    def _check_rules(self, config: GateConfig | None, where: str) -> None:
        """Raise `_RulesRefused` (logged) for cloud rules naming another site or gate than this one."""
        if config is None or (config.site_id, config.gate_id) == (self.config.site, self.config.gate):
            return
        log.error(
            "sync: %s: gate rules for %s/%s refused: this gate is %s/%s; it keeps its rules",
            where,
            config.site_id,
            config.gate_id,
            self.config.site,
            self.config.gate,
        )
        raise _RulesRefused

    def _apply_held(self) -> None:
        for seq in [s for s in self._buffer if s <= self.seq]:
            self.link.ack(self._buffer.pop(seq)[1])
        while (held := self._buffer.get(self.seq + 1)) is not None and held[0].epoch == self.epoch:
            del self._buffer[self.seq + 1]
            if not self._apply(*held):
                return

    def _verify_keys(self, keys: dict[int, str], signature: str) -> None:
        """Raise `KeySetError` unless the pinned key-set root signed exactly these keys."""
        try:
            verify_key_set(self._key_root, keys, signature)
        except KeySetSignatureError as exc:
            raise KeySetError(str(exc)) from exc

    # --- snapshots --------------------------------------------------------------------------------

    def request_snapshot(self, why: str) -> None:
        if self._snapshot_task is not None:
            return
        log.warning("sync: fetching a snapshot: %s", why)
        self._snapshot_task = asyncio.create_task(self._resync(), name="sync-snapshot")

    async def _resync(self) -> None:
        delay = 0.5
        while not await self._snapshot_once() or not self._caught_up():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        self._snapshot_task = None

    def _caught_up(self) -> bool:
        self._apply_held()
        if self._buffer or self._dropped_max > self.seq:
            log.warning("sync: still behind the feed after the snapshot (at %d); fetching again", self.seq)
            return False
        return True

    async def _snapshot_once(self) -> bool:
        try:
            header = await asyncio.to_thread(
                fetch_snapshot,
                url=snapshot_url(self.config.snapshot_url, self.config.site),
                site=self.config.site,
                open_sink=self.port.open_staging,
                auth=None if self.config.username is None else (self.config.username, self._password or ""),
                ca_file=self.config.tls_ca,
                timeout_s=self.config.snapshot_timeout_s,
                abort=self._abort,
            )
            try:
                self._check_rules(header.gate_config, "snapshot")
            except _RulesRefused:
                header = header.model_copy(update={"gate_config": None})  # the file's rules: the safe ones
            try:  # the cloud always sends its key set: a snapshot without one is no cloud's
                self._verify_keys(header.keys, header.keys_signature)
                self.port.check_keys(header.keys)
            except KeySetError as exc:
                # Whoever signs no key set with our root is not our cloud: none of its snapshot is taken.
                raise SnapshotError(f"snapshot refused: {exc}") from exc
            now = self.clock()
            # Synchronous on the loop: nothing else touches the store during the swap. The header's rules
            # (or none) are committed with the tickets and the feed position, never after them.
            self.port.install_snapshot(header, fresh=now)
        except SnapshotError as exc:
            log.warning("sync: snapshot failed: %s", exc)
            return False
        except Exception:
            log.exception("sync: snapshot failed")
            return False
        if header.seq < self.seq:
            log.warning(
                "sync: snapshot seq %d is behind this gate's %d: was the cloud's feed reset?", header.seq, self.seq
            )
        for seq, (held, delivery) in list(self._buffer.items()):
            if held.epoch != header.epoch:  # of another run of the feed than the snapshot's
                del self._buffer[seq]
                self.link.ack(delivery)
        if header.epoch != self.epoch:
            self._dropped_max = 0  # counted in the old run's sequence numbers
            self.head_checksum = None  # the old run's
            if self.epoch is not None:
                self._retired.add(self.epoch)
        self.seq = header.seq
        self.epoch = header.epoch
        self.fresh_at = self._fresh_saved = now
        if header.gates is not None:
            self.roster = frozenset(header.gates)
        self.head_seq = header.seq  # the snapshot is the cloud's latest word on the feed's head
        self._on_snapshot(header)
        self.port.reload_keys()
        log.info(
            "sync: snapshot installed: %d tickets, %d face templates, feed at %d, checksum verified",
            header.tickets,
            header.faces or 0,
            header.seq,
        )
        return True
