"""The gate side of sync: the ticket feed down, passage events up, peers' passages across.

One MQTT v5 client (paho) with a persistent session (client id ``gate-<site>-<gate>``,
``clean_start`` false, a session expiry) and QoS 1 everywhere, acknowledging by hand. paho's
network thread never touches the gate: it hands every message to the gate store's owner, the
asyncio task `GateSync.run`, which commits what the message carries (through its `GatePort`)
and only then sends the PUBACK. A message that was not acknowledged comes back after a reconnect.

Down: feed messages apply in strict sequence order; a gap, a fresh gate or a lost broker
session fetch a snapshot (`sync.snapshot_client`) and the feed resumes after its sequence.
The cloud's retained feed head (`FeedHead`, a heartbeat) keeps a quiet feed fresh, and a gate
that stays below it for `feed_gap_grace_s` without progress lost a message: snapshot.
Up: every outbox event is published until the cloud's `EventAck` names it. Across: the other
gates' passage events are journaled here as remote passages, so decisions count them.

MQTT v5 because its Receive Maximum lets the gate hold feed messages unacknowledged during a
snapshot without starving acks and peer events (Mosquitto caps v3.1.1 clients at its
``max_inflight_messages``, 20 by default).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import ValidationError

from models import PassageEvent
from models.credential import load_public_key
from models.keyset import KeySetSignatureError, verify_key_set
from models.sync import (
    MAX_MESSAGE_BYTES,
    EventAck,
    FeedHead,
    FeedMessage,
    GateConfigChange,
    GateRoster,
    GateStatus,
    KeySet,
    event_batch_json,
    parse_events,
)
from models.sync_config import SyncConfig, stale_feed
from sync import topics
from sync.errors import KeySetError, SnapshotError
from sync.snapshot_client import fetch_snapshot, snapshot_url

if TYPE_CHECKING:
    from sync.gate.port import GatePort

log = logging.getLogger("starfish.sync")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Delivery:
    gen: int  # which connection delivered it: a PUBACK goes back on that connection only
    mid: int
    qos: int


@dataclass(frozen=True, slots=True)
class _Inbound:
    topic: str
    payload: bytes
    delivery: _Delivery


@dataclass(frozen=True, slots=True)
class _Connected:
    gen: int
    session_present: bool


@dataclass(frozen=True, slots=True)
class _Disconnected:
    gen: int
    reason: str


class _Signal(enum.Enum):
    NUDGE = "nudge"
    TICK = "tick"
    STOP = "stop"


_Item = _Inbound | _Connected | _Disconnected | _Signal
_SiteMsg = TypeVar("_SiteMsg", FeedMessage, FeedHead)


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
        self.config = config
        if port.gate_id != config.gate:
            raise ValueError(f"the sync config is gate {config.gate!r}'s, the gate is {port.gate_id!r}")
        self.port = port
        self.clock = clock
        self.tick_s = tick_s
        self._password = password if password is not None else config.load_password()
        self._key_root = load_public_key(config.key_root)
        self.client_id = f"gate-{config.site}-{config.gate}"
        self._feed_topic = topics.feed(config.site)
        self._head_topic = topics.head(config.site)
        self._acks_topic = topics.acks(config.site, config.gate)
        self._events_topic = topics.events(config.site, config.gate)
        self._status_topic = topics.status(config.site, config.gate)
        self._peers_topic = topics.all_events(config.site)
        # State owned by the event loop.
        self.feed_seq = 0
        self.fresh_at: datetime | None = None
        self._fresh_saved: datetime | None = None
        self.connected = False
        self._gen = 0
        self._buffer: dict[int, tuple[FeedMessage, _Delivery]] = {}
        self._buffer_cap = max(1, config.receive_maximum // 2)
        self._dropped_max = 0
        self.head_seq = 0  # the cloud's last announced head
        self.epoch: str | None = None  # the run of the feed this gate follows (None: adopt the first seen)
        self._retired: set[str] = set()  # runs this gate left: their stragglers are dropped, not followed
        self.roster: frozenset[str] | None = None  # the site's gates, as the cloud named them (None: not yet)
        self.peer_events_dropped: collections.Counter[str] = collections.Counter()  # by why
        self._behind_since: float | None = None  # monotonic: when the gate was first seen below the head
        self._behind_at_seq = 0
        self._snapshot_task: asyncio.Task[None] | None = None
        self._abort = threading.Event()
        self._sent: dict[str, float] = {}  # event id -> monotonic time published, oldest first
        self._cursor = 0  # outbox seq of the last event published since the window restarted
        # Event acks and peers' passages are committed in groups: one fsync for many messages.
        self._batch_acked: list[uuid.UUID] = []
        self._batch_remote: list[PassageEvent] = []
        self._batch_deliveries: list[_Delivery] = []
        self._batch_scheduled = False
        self._status_sent: tuple[int, int] | None = None
        self.checksum: tuple[int, str] | None = None  # (feed seq, ticket-set checksum at that seq)
        self._checksum_task: asyncio.Task[None] | None = None
        self._checksum_at = float("-inf")
        self._status_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._client: mqtt.Client | None = None
        # Written by paho's network thread only.
        self._net_gen = 0
        self._last_refusal = ""

    # --- public API, called on the event loop ------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run `run` as a task of the running loop."""
        self._task = asyncio.create_task(self.run(), name="sync")
        self._task.add_done_callback(_report_end)
        return self._task

    async def stop(self) -> None:
        """Publish `offline`, disconnect cleanly and wait for `run` to end."""
        self._inbox.put_nowait(_Signal.STOP)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def nudge(self) -> None:
        """A new event is in the outbox: publish it now (safe from any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._inbox.put_nowait, _Signal.NUDGE)

    def feed_stale(self, now: datetime) -> bool:
        """Is the feed older than `max_feed_age_s` (plain codes must be refused)?"""
        return stale_feed(self.fresh_at, now, self.config.max_feed_age_s)

    @property
    def resyncing(self) -> bool:
        return self._snapshot_task is not None

    async def run(self) -> None:
        """Own the sync state until `stop`: connect, apply, publish, reconnect as needed."""
        self._loop = asyncio.get_running_loop()
        self.feed_seq = self.port.feed_seq()
        self.epoch = self.port.feed_epoch()
        self.roster = self.port.gate_roster()
        if self.roster is None:
            log.warning(
                "sync: no gate roster yet: peers' passages are taken from any gate of site %s", self.config.site
            )
        self.fresh_at = self._fresh_saved = self.port.fresh_at()
        self._client = client = self._make_client()
        client.connect_async(
            self.config.broker_host,
            self.config.broker_port,
            keepalive=self.config.keepalive_s,
            clean_start=False,
            properties=self._connect_properties(),
        )
        client.loop_start()
        ticker = asyncio.create_task(self._ticker(), name="sync-tick")
        if not self.port.has_feed_position():
            self._request_snapshot("this gate has never been synced")
        try:
            while (item := await self._inbox.get()) is not _Signal.STOP:
                try:
                    self._dispatch(item)
                except Exception:
                    log.exception("sync: could not handle %s", _describe(item))
        finally:
            ticker.cancel()
            await self._shutdown(client)

    # --- paho's network thread: hand over, touch nothing --------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        # paho's own logger stays off: it reports every clean disconnect as an error. Our
        # callbacks only hand over and catch their own errors.
        client.suppress_exceptions = True
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self._password)
        if self.config.tls_ca is not None:
            client.tls_set(ca_certs=str(self.config.tls_ca))
        client.will_set(self._status_topic, self._status("offline").model_dump_json(), qos=1, retain=True)
        client.max_inflight_messages_set(100)
        client.reconnect_delay_set(1, self.config.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        return props

    def _post(self, item: _Item) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
            loop.call_soon_threadsafe(self._inbox.put_nowait, item)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, props: Properties | None
    ) -> None:
        if rc.is_failure:
            if str(rc) != self._last_refusal:
                log.error("sync: broker %s refused gate %s: %s", self.config.broker_host, self.client_id, rc)
                self._last_refusal = str(rc)
            return
        self._last_refusal = ""
        self._net_gen += 1
        client.subscribe(
            [
                (self._feed_topic, SubscribeOptions(qos=1)),
                (self._head_topic, SubscribeOptions(qos=1)),
                (self._acks_topic, SubscribeOptions(qos=1)),
                (self._peers_topic, SubscribeOptions(qos=1, noLocal=True)),
            ]
        )
        self._post(_Connected(self._net_gen, flags.session_present))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho keeps the cause to itself (refused, unreachable, TLS); say it once per outage.
        if self._last_refusal != "unreachable":
            log.error(
                "sync: cannot reach broker %s:%d%s; retrying",
                self.config.broker_host,
                self.config.broker_port,
                " over TLS (check tls_ca and the host name)" if self.config.tls_ca else "",
            )
            self._last_refusal = "unreachable"

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        self._post(_Disconnected(self._net_gen, str(rc)))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = "<topic not UTF-8>"
        if len(msg.payload) > MAX_MESSAGE_BYTES:  # never parsed, never stored: acknowledged and gone
            log.warning(
                "sync: dropped a message of %d bytes on %s: over %d", len(msg.payload), topic, MAX_MESSAGE_BYTES
            )
            client.ack(msg.mid, msg.qos)
            return
        try:
            self._post(_Inbound(topic, bytes(msg.payload), _Delivery(self._net_gen, msg.mid, msg.qos)))
        except Exception:
            log.exception("sync: could not hand over a message on %s", topic)

    # --- the owner: dispatch -------------------------------------------------------------------

    def _dispatch(self, item: _Item) -> None:
        if isinstance(item, _Inbound):
            self._on_inbound(item)
        elif isinstance(item, _Connected):
            self._on_connected(item)
        elif isinstance(item, _Disconnected):
            if item.gen == self._gen and self.connected:
                self.connected = False
                log.warning("sync: lost the broker (%s); events wait in the outbox", item.reason)
        elif item is _Signal.NUDGE:
            self._top_up()
        elif item is _Signal.TICK:
            self._tick()

    def _on_connected(self, item: _Connected) -> None:
        self._gen = item.gen
        self.connected = True
        log.info("sync: gate %s connected (session %s)", self.client_id, "kept" if item.session_present else "new")
        self._publish_status()
        # Whatever the cloud has not confirmed goes again, oldest first; it stores by event id.
        self._sent.clear()
        self._cursor = 0
        self._top_up()
        if not item.session_present and self.port.has_feed_position():
            self._request_snapshot("the broker had no session for this gate: feed messages may be lost")

    def _on_inbound(self, item: _Inbound) -> None:
        if item.topic == self._feed_topic:
            self._on_feed(item)
        elif item.topic == self._head_topic:
            self._on_head(item)
        elif item.topic == self._acks_topic:
            self._on_event_ack(item)
        else:
            parsed = topics.parse_gate_topic(item.topic)
            if parsed is None or parsed[0] != self.config.site or parsed[2] != "events":
                self._reject(item, "unexpected topic")
            elif parsed[1] == self.config.gate:
                self._ack(item.delivery)  # our own event, echoed
            else:
                self._on_peer_event(item, parsed[1])

    def _ack(self, delivery: _Delivery) -> None:
        if delivery.gen == self._gen and self.connected and self._client is not None:
            self._client.ack(delivery.mid, delivery.qos)

    def _reject(self, item: _Inbound, why: str) -> None:
        log.warning("sync: dropped a message on %s: %s", item.topic, why)
        self._ack(item.delivery)

    # --- down: the feed -------------------------------------------------------------------------

    def _site_message(self, item: _Inbound, model: type[_SiteMsg], what: str) -> _SiteMsg | None:
        """The message, when it is a valid `model` of this gate's site; else rejected (None)."""
        try:
            msg = model.model_validate_json(item.payload)
        except ValidationError as exc:
            self._reject(item, f"not a {what} ({_first_error(exc)})")
            return None
        if msg.site != self.config.site:
            self._reject(item, f"{what} of site {msg.site!r}")
            return None
        return msg

    def _on_feed(self, item: _Inbound) -> None:
        msg = self._site_message(item, FeedMessage, "feed message")
        if msg is None:
            return
        if not self._same_epoch(msg.epoch):
            if msg.epoch in self._retired:
                self._ack(item.delivery)  # a straggler of a run this gate has left
            else:
                self._hold(msg, item.delivery)  # perhaps the new run's: kept until the snapshot says which
            return
        if msg.seq <= self.feed_seq:
            self._ack(item.delivery)  # a repeat: no news, and no proof of freshness either
        elif self.resyncing:
            self._hold(msg, item.delivery)
        elif msg.seq == self.feed_seq + 1:
            if self._apply(msg, item.delivery):
                self._apply_held()
        else:
            self._hold(msg, item.delivery)
            self._request_snapshot(f"feed gap: at {self.feed_seq}, received {msg.seq}")

    def _on_head(self, item: _Inbound) -> None:
        head = self._site_message(item, FeedHead, "feed head")
        if head is None:
            return
        self._ack(item.delivery)
        if not self._same_epoch(head.epoch):
            return
        self.head_seq = head.seq  # the latest word: a feed reset brings the head down too
        if head.seq <= self.feed_seq and not self.resyncing:
            # Up to date as of the cloud's `at` (a retained head may be old: the link may be down).
            at = min(head.at, self.clock())
            if self.fresh_at is None or at > self.fresh_at:
                self.fresh_at = at
        self._check_behind()

    def _same_epoch(self, epoch: str) -> bool:
        """Is `epoch` the run of the feed this gate follows? If not, fetch a snapshot of the new run."""
        if self.epoch is None and not self.resyncing:
            self.epoch = epoch  # a store synced before epochs existed: the first one seen is ours
        if epoch == self.epoch:
            return True
        if epoch in self._retired:
            return False
        self._request_snapshot(f"the cloud's feed started again (epoch {epoch!r}, this gate follows {self.epoch!r})")
        return False

    def _check_behind(self) -> None:
        """A gate below the announced head, making no progress for `feed_gap_grace_s`, lost a message."""
        if self.head_seq <= self.feed_seq or self.resyncing:
            self._behind_since = None
            return
        now = time.monotonic()
        if self._behind_since is None:
            self._behind_since = now
            self._behind_at_seq = self.feed_seq
        elif self.feed_seq != self._behind_at_seq:
            self._behind_since, self._behind_at_seq = now, self.feed_seq  # progress: give it time
        elif now - self._behind_since > self.config.feed_gap_grace_s:
            self._behind_since = None
            self._request_snapshot(f"the cloud's feed head is {self.head_seq}, this gate is stuck at {self.feed_seq}")

    def _hold(self, msg: FeedMessage, delivery: _Delivery) -> None:
        """Keep a message that cannot apply yet, unacknowledged, until the snapshot is in."""
        earlier = self._buffer.get(msg.seq)
        if earlier is not None:
            self._ack(earlier[1])
        elif len(self._buffer) >= self._buffer_cap:
            # Do not let the feed fill the broker's window: acks and peers' events must get through.
            self._dropped_max = max(self._dropped_max, msg.seq)
            self._ack(delivery)
            return
        self._buffer[msg.seq] = (msg, delivery)

    def _apply(self, msg: FeedMessage, delivery: _Delivery) -> bool:
        now = self.clock()
        try:
            try:
                if isinstance(msg.change, KeySet):
                    self._verify_keys(msg.change.keys, msg.change.signature)
                self.port.apply_change(msg.change, msg.seq, fresh=now)
            except KeySetError as exc:
                log.error("sync: feed %d: key set refused (%s); the gate keeps its current keys", msg.seq, exc)
                self.port.skip_change(msg.seq, fresh=now)
        except Exception:
            log.exception("sync: feed %d could not be applied; fetching a snapshot", msg.seq)
            self._hold(msg, delivery)
            self._request_snapshot("a feed change could not be applied")
            return False
        self.feed_seq = msg.seq
        self.fresh_at = self._fresh_saved = now
        if isinstance(msg.change, KeySet):
            self.port.reload_keys()
        if isinstance(msg.change, GateRoster):
            self.roster = frozenset(msg.change.gates)
        if isinstance(msg.change, GateConfigChange) and msg.change.gate_id == self.config.gate:
            log.info("sync: the cloud changed this gate's config: stored, not applied live")
        self._ack(delivery)
        return True

    def _apply_held(self) -> None:
        for seq in [s for s in self._buffer if s <= self.feed_seq]:
            self._ack(self._buffer.pop(seq)[1])
        while (held := self._buffer.get(self.feed_seq + 1)) is not None and held[0].epoch == self.epoch:
            del self._buffer[self.feed_seq + 1]
            if not self._apply(*held):
                return

    def _verify_keys(self, keys: dict[int, str], signature: str) -> None:
        """Raise `KeySetError` unless the pinned key-set root signed exactly these keys."""
        try:
            verify_key_set(self._key_root, keys, signature)
        except KeySetSignatureError as exc:
            raise KeySetError(str(exc)) from exc

    def _request_snapshot(self, why: str) -> None:
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
        if self._buffer or self._dropped_max > self.feed_seq:
            log.warning("sync: still behind the feed after the snapshot (at %d); fetching again", self.feed_seq)
            return False
        return True

    async def _snapshot_once(self) -> bool:
        staging = self.port.snapshot_scratch()
        try:
            header = await asyncio.to_thread(
                fetch_snapshot,
                url=snapshot_url(self.config.snapshot_url, self.config.site),
                site=self.config.site,
                open_sink=functools.partial(self.port.open_staging, staging),
                auth=None if self.config.username is None else (self.config.username, self._password or ""),
                ca_file=self.config.tls_ca,
                timeout_s=self.config.snapshot_timeout_s,
                abort=self._abort,
            )
            try:  # the cloud always sends its key set: a snapshot without one is no cloud's
                self._verify_keys(header.keys, header.keys_signature)
                self.port.check_keys(header.keys)
            except KeySetError as exc:
                # Whoever signs no key set with our root is not our cloud: none of its snapshot is taken.
                raise SnapshotError(f"snapshot refused: {exc}") from exc
            now = self.clock()
            # Synchronous on the loop: nothing else touches the store during the swap.
            self.port.install_snapshot(staging, header, fresh=now)
        except SnapshotError as exc:
            log.warning("sync: snapshot failed: %s", exc)
            return False
        except Exception:
            log.exception("sync: snapshot failed")
            return False
        finally:
            staging.unlink(missing_ok=True)
        if header.seq < self.feed_seq:
            log.warning(
                "sync: snapshot seq %d is behind this gate's %d: was the cloud's feed reset?", header.seq, self.feed_seq
            )
        for seq, (held, delivery) in list(self._buffer.items()):
            if held.epoch != header.epoch:  # of another run of the feed than the snapshot's
                del self._buffer[seq]
                self._ack(delivery)
        if header.epoch != self.epoch:
            self._dropped_max = 0  # counted in the old run's sequence numbers
            if self.epoch is not None:
                self._retired.add(self.epoch)
        self.feed_seq = header.seq
        self.epoch = header.epoch
        self.fresh_at = self._fresh_saved = now
        self.checksum = (header.seq, header.checksum)  # verified against the staged set before the swap
        if header.gates is not None:
            self.roster = frozenset(header.gates)
        self.head_seq = header.seq  # the snapshot is the cloud's latest word on the feed's head
        self.port.reload_keys()
        log.info("sync: snapshot installed: %d tickets, feed at %d, checksum verified", header.tickets, header.seq)
        return True

    # --- up: events -----------------------------------------------------------------------------

    def _top_up(self) -> None:
        """Publish outbox events after the cursor until the window is full: one event alone, a
        backlog in `EventBatch`es of up to `event_batch`."""
        if not self.connected or self._client is None:
            return
        room = self.config.publish_window - len(self._sent)
        while room > 0:
            rows = self.port.outbox_after(self._cursor, min(room, 500))
            if not rows:
                return
            now = time.monotonic()
            for i in range(0, len(rows), self.config.event_batch):
                chunk = rows[i : i + self.config.event_batch]
                self._client.publish(self._events_topic, event_batch_json([body for _, _, body in chunk]), qos=1)
                for seq, event_id, _ in chunk:
                    self._sent[event_id] = now
                    self._cursor = seq
            room -= len(rows)

    def _on_event_ack(self, item: _Inbound) -> None:
        try:
            ack = EventAck.model_validate_json(item.payload)
        except ValidationError as exc:
            self._reject(item, f"not an event ack ({_first_error(exc)})")
            return
        self._batch_acked.extend(ack.event_ids)
        self._batched(item.delivery)

    # --- across: the other gates' passages ------------------------------------------------------

    def _on_peer_event(self, item: _Inbound, peer: str) -> None:
        """Another gate's events, on its own topic (the broker lets a gate's login write only there).

        Taken only from a gate on the site's roster, and only those naming this site and that very
        gate; the time bounds are the port's (`GatePort.apply_batch`). Until the cloud sent a roster (a store
        synced before rosters; the cloud sends one at its start) any gate of the site is believed.
        """
        refused: list[str] = []
        try:
            events = parse_events(item.payload, refused)
        except ValidationError as exc:
            self._reject(item, f"not a passage event ({_first_error(exc)})")
            return
        for why in refused:
            log.warning("sync: left out a malformed passage event on %s: %s", item.topic, why)
        if self.roster is not None and peer not in self.roster:
            self.peer_events_dropped["unknown_gate"] += len(events)
            self._reject(item, f"gate {peer!r} is not on the site's roster ({len(events)} event(s))")
            return
        believed: list[PassageEvent] = []
        for e in events:
            if e.site_id != self.config.site:
                self._drop_peer_event(e, "wrong_site", item.topic)
            elif e.gate_id != peer:
                self._drop_peer_event(e, "gate_mismatch", item.topic)
            else:
                believed.append(e)
        self._batch_remote.extend(believed)
        self._batched(item.delivery)

    def _drop_peer_event(self, event: PassageEvent, why: str, topic: str) -> None:
        self.peer_events_dropped[why] += 1
        log.warning(
            "sync: dropped peer event %s on %s (%s): it says site %.40r gate %.40r at %s",
            event.event_id,
            topic,
            why,
            event.site_id,
            event.gate_id,
            event.at.isoformat(),
        )

    def _batched(self, delivery: _Delivery) -> None:
        """Commit when the inbox runs dry (or the group is large), then acknowledge the group."""
        self._batch_deliveries.append(delivery)
        if len(self._batch_deliveries) >= 500:
            self._flush_batch()
        elif not self._batch_scheduled and self._loop is not None:
            self._batch_scheduled = True
            self._loop.call_soon(self._flush_batch)

    def _flush_batch(self) -> None:
        self._batch_scheduled = False
        if not self._batch_deliveries:
            return
        acked, remote, deliveries = self._batch_acked, self._batch_remote, self._batch_deliveries
        self._batch_acked, self._batch_remote, self._batch_deliveries = [], [], []
        try:
            dropped = self.port.apply_batch(acknowledged=acked, remote=remote, now=self.clock())
        except Exception:
            log.exception(
                "sync: could not commit %d event ack(s) and peer passage(s); they come again", len(deliveries)
            )
            return
        for event, why in dropped:
            self._drop_peer_event(event, why, topics.events(self.config.site, event.gate_id))
        for event_id in acked:
            self._sent.pop(str(event_id), None)
        for delivery in deliveries:
            self._ack(delivery)
        self._top_up()

    # --- status and housekeeping ----------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self._inbox.put_nowait(_Signal.TICK)

    def _tick(self) -> None:
        self._check_behind()
        self._maybe_sum_tickets()
        oldest = next(iter(self._sent.values()), None)
        if oldest is not None and time.monotonic() - oldest > self.config.ack_timeout_s:
            log.info(
                "sync: %d event(s) unconfirmed after %.0f s: publishing again",
                len(self._sent),
                self.config.ack_timeout_s,
            )
            self._sent.clear()
            self._cursor = 0
        self._top_up()  # also picks up events journaled without a nudge
        depth = self.port.outbox_depth()
        if (
            self.feed_seq,
            depth,
        ) != self._status_sent or time.monotonic() - self._status_at >= self.config.status_interval_s:
            self._publish_status(depth)
        if self.fresh_at is not None and self.fresh_at != self._fresh_saved:
            self.port.save_fresh_at(self.fresh_at)
            self._fresh_saved = self.fresh_at

    def _maybe_sum_tickets(self) -> None:
        """Sum the ticket set for the status when the feed moved on, at most every `checksum_interval_s`
        (a store never synced sums to nothing: `read_checksum` says None)."""
        if (
            self._checksum_task is not None
            or self.resyncing
            or (self.checksum is not None and self.checksum[0] == self.feed_seq)
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
            self._publish_status()

    def _status(self, state: Literal["online", "offline"], depth: int = 0) -> GateStatus:
        checksum_seq, checksum = self.checksum if self.checksum is not None else (None, None)
        return GateStatus(
            site=self.config.site,
            gate=self.config.gate,
            state=state,
            feed_seq=self.feed_seq,
            outbox_depth=depth,
            at=self.clock(),
            checksum=checksum,
            checksum_seq=checksum_seq,
        )

    def _publish_status(self, depth: int | None = None) -> None:
        if not self.connected or self._client is None:
            return
        depth = self.port.outbox_depth() if depth is None else depth
        online = self._status("online", depth)
        self._client.publish(self._status_topic, online.model_dump_json(), qos=1, retain=True)
        # The Will carries the last numbers, so `offline` still says how far the gate got.
        offline = online.model_copy(update={"state": "offline"})
        self._client.will_set(self._status_topic, offline.model_dump_json(), qos=1, retain=True)
        self._status_sent = (self.feed_seq, depth)
        self._status_at = time.monotonic()

    async def _shutdown(self, client: mqtt.Client) -> None:
        self._abort.set()
        self._flush_batch()
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
            await asyncio.gather(self._snapshot_task, return_exceptions=True)
            self._snapshot_task = None
        if self._checksum_task is not None:
            await asyncio.gather(self._checksum_task, return_exceptions=True)
        if self.fresh_at is not None and self.fresh_at != self._fresh_saved:
            self.port.save_fresh_at(self.fresh_at)
        if self.connected:
            offline = self._status("offline", self.port.outbox_depth())
            info = client.publish(self._status_topic, offline.model_dump_json(), qos=1, retain=True)
            try:
                await asyncio.to_thread(info.wait_for_publish, 2.0)
            except (RuntimeError, ValueError) as exc:
                log.warning("sync: could not publish the offline status: %s", exc)
        self.connected = False
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
        log.info("sync: gate %s disconnected", self.client_id)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def _describe(item: _Item) -> str:
    return f"a message on {item.topic}" if isinstance(item, _Inbound) else repr(item)


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # The gate goes on deciding offline; what it journals waits in the outbox.
        log.critical("sync stopped: %s", task.exception(), exc_info=task.exception())
