"""The cloud's one MQTT connection: publishes each site's feed, consumes gates' passage events and status.

Threads, not asyncio: paho runs its own network thread, and the database calls block anyway.

- Publisher, in the one process holding the feed lease (`cloud.sync.leader`): wakes right after a commit
  that appended feed changes (an after-commit hook here, PostgreSQL's NOTIFY from other processes) and
  every `poll_s`, publishes the unpublished changes QoS 1 in sequence order, and sets `published_at` when
  the broker's PUBACK came back. Taking the lease, it first reads the sites' retained heads: one above its
  own in the same epoch means a restored backup, and the site starts a new epoch (`feed.restart_behind`).
- Heartbeat: every `heartbeat_s` each site's feed head (`FeedHead`: all changes up to seq are
  published) goes out retained on ``sf/<site>/head``. Gates take it as "the feed is fresh as of
  then" on a quiet night, and as a lost message when they stay below it. It carries the site's last
  computed ticket-set checksum (`cloud.sync.checksums`); at each heartbeat the sites whose feed moved
  since theirs, older than `checksum_interval_s`, are summed again on a worker thread
  (`cloud.sync.recompute`), so the publisher never waits for a million tickets to be read.
- Consumer, in every process: a persistent session (its own fixed client id, `cloud.sync.instance`) in
  the MQTT v5 shared subscription ``$share/<group>/...`` (each event goes to one process), QoS 1 with manual
  acknowledgement. A batch is stored and committed first; only then are the broker's messages acknowledged
  and the EventAcks published (convention 9). A crash means redelivery, and redelivery means a duplicate
  event id: a no-op. Two processes storing one event at once (a gate's resend) meet at its unique key: the
  loser stores its batch again, finds the event stored, and acknowledges it.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import utcnow
from cloud.settings import Settings
from cloud.sites.models import Site
from cloud.staff import technicians
from cloud.sync import checksums, feed, inbound, instance, leader, service
from cloud.sync.recompute import ChecksumRecompute
from models.sync import EVENT_BATCH_MAX, FeedHead, FeedMessage
from sync import topics
from sync.link import Login, MqttLink, Received

log = logging.getLogger("starfish.cloud.sync")

EVENTS = topics.ANY_SITE_EVENTS
STATUS = topics.ANY_SITE_STATUS
SHARE_GROUP = "starfish-cloud"
TAKEN_OVER = 0x8E  # MQTT v5 "session taken over": another client logged in with this one's client id
ACK_CHUNK = EVENT_BATCH_MAX  # event ids per EventAck message (the most one may carry)

Store = Callable[[Session, Sequence[inbound.Inbound]], service.Stored]


class CloudSync:
    """Feed publisher and event consumer over one MQTT connection; `start()`, then `stop()`."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        host: str,
        port: int = 1883,
        client_id: str = "starfish-cloud",
        username: str | None = None,
        password: str | None = None,
        tls_ca_file: str | None = None,
        poll_s: float = 1.0,
        heartbeat_s: float = 15.0,
        keepalive: int = 30,
        batch: int = 500,
        max_in_flight: int = 1000,
        receive_maximum: int = 2000,
        session_expiry_s: int = 7 * 24 * 3600,
        republish_after_s: float = 30.0,
        checksum_interval_s: float = 300.0,
        store: Store = service.store,
        lease: leader.Lease | None = None,
        share_group: str = SHARE_GROUP,
    ) -> None:
        self._factory = factory
        self._host, self._port = host, port
        self._poll_s = min(poll_s, heartbeat_s)
        self._heartbeat_s = heartbeat_s
        self._head_at = 0.0  # publisher thread: when the heads went out last
        self._batch = batch
        self._max_in_flight = max_in_flight
        self._republish_after_s = republish_after_s
        self._store = store
        self._lease = lease or leader.Sole()
        self._leading = False  # publisher thread: holds the lease and checked the heads since taking it
        self._subscriptions = [(f"$share/{share_group}/{EVENTS}", 1), (f"$share/{share_group}/{STATUS}", 1)]
        self._heads: queue.Queue[Received] = queue.Queue()
        self._subacks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.identity: instance.Identity | None = None  # released on stop
        self.recompute = ChecksumRecompute(factory, interval_s=checksum_interval_s)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # connected, and the broker confirmed the subscriptions
        self._connected_at = 0.0
        self._inbox: queue.Queue[Received] = queue.Queue()
        self._acked: queue.SimpleQueue[int] = queue.SimpleQueue()
        # Publisher thread only: broker message id -> (feed change id, when sent); changes to mark published.
        self._in_flight: dict[int, tuple[int, float]] = {}
        self._to_mark: list[int] = []
        self._threads: list[threading.Thread] = []
        self._attached: list[sessionmaker[Session]] = []

        # A persistent MQTT v5 session: its Receive Maximum lets the broker send `receive_maximum` events
        # before our acks, so batches commit hundreds at once.
        login = Login(
            host=host,
            port=port,
            client_id=client_id,
            username=username,
            password=password,
            tls_ca=tls_ca_file,
            keepalive_s=keepalive,
            session_expiry_s=session_expiry_s,
            receive_maximum=receive_maximum,
            reconnect_max_s=10,
        )
        self._link = MqttLink(
            login,
            log=log,
            paho_log=logging.getLogger("starfish.cloud.sync.paho"),
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_message=self._on_message,
        )
        client = self._link.client
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self._client = client

    @classmethod
    def from_settings(cls, factory: sessionmaker[Session], settings: Settings) -> CloudSync:
        """This process's sync: its own identity (`cloud.sync.instance`), the lease fitting the database."""
        me = instance.claim_for(settings)
        sync = cls(
            factory,
            host=settings.mqtt_host or "",
            port=settings.mqtt_port,
            client_id=settings.mqtt_client_id + me.suffix,
            username=settings.mqtt_username + me.suffix if settings.mqtt_username else None,  # empty: no login
            password=settings.mqtt_password.get_secret_value() or None,
            tls_ca_file=settings.mqtt_tls_ca_file,
            poll_s=settings.sync_poll_seconds,
            heartbeat_s=settings.sync_heartbeat_seconds,
            checksum_interval_s=settings.checksum_interval_s,
            session_expiry_s=instance.session_expiry_s(settings),
        )
        sync._lease = leader.for_database(settings.database_url, sync.wake)
        sync.identity = me
        return sync

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> CloudSync:
        """Connect (retrying in the background while the broker is away) and start both loops."""
        self.attach(self._factory)
        self._link.start()
        self._lease.start()
        for target, name in ((self._publish_loop, "sync-publisher"), (self._consume_loop, "sync-consumer")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both loops and disconnect; messages not yet committed stay unacknowledged at the broker."""
        self._stop.set()
        self._wake.set()
        self._lease.stop()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self.recompute.stop(timeout)
        for factory in self._attached:
            event.remove(factory, "after_commit", self._after_commit)
        self._attached.clear()
        self._link.stop()
        if self.identity is not None:
            self.identity.release()

    def attach(self, factory: sessionmaker[Session]) -> None:
        """Wake the publisher whenever a session of `factory` commits feed changes."""
        if factory not in self._attached:
            event.listen(factory, "after_commit", self._after_commit)
            self._attached.append(factory)

    def wake(self) -> None:
        """Look for unpublished changes now."""
        self._wake.set()

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(feed.APPENDED, False):
            self._wake.set()

    # --- paho callbacks (paho's network thread: quick, never blocking on our locks) ----------------

    def _on_connect(self, client: mqtt.Client, _connection: int, session_present: bool) -> None:
        self._connected_at = time.monotonic()
        self._head_at = 0.0  # heads go out again right away
        if session_present:  # a session from before the shared subscription would get every event twice
            client.unsubscribe([EVENTS, STATUS])
        client.subscribe(self._subscriptions)
        log.info("connected to %s:%s (session present: %s)", self._host, self._port, session_present)
        self.connected.set()
        self._wake.set()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Properties | None
    ) -> None:
        self._subacks.put(mid)
        if any(r.is_failure for r in reasons):
            log.error("the cloud broker refused a subscription: %s", reasons)
        else:
            self.subscribed.set()

    def _on_disconnect(self, _connection: int, reason: ReasonCode) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if reason.value == TAKEN_OVER:
            log.error(
                "another process logged in as %s: set STARFISH_CLOUD_INSTANCE per host", self._link.login.client_id
            )
        elif not self._stop.is_set():
            log.warning("disconnected from %s:%s (%s); reconnecting", self._host, self._port, reason)

    def _on_message(self, received: Received) -> None:
        if received.topic.endswith("/head"):  # retained heads, read when taking the lease
            self._link.ack(received.delivery)
            self._heads.put(received)
        else:
            self._inbox.put(received)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _r: ReasonCode, _p: Properties | None) -> None:
        self._acked.put(mid)
        # Only a feed change's PUBACK gives the publisher work: the EventAcks' (one per 500 drained events)
        # would wake it to query the feed each time. One that comes back before its change is in `_in_flight`
        # waits in `_acked` for the next round (`poll_s`).
        if self._in_flight:
            self._wake.set()

    # --- publisher --------------------------------------------------------------------------------

    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                if self._lead():
                    self._publish_round()
            except Exception:
                log.exception("feed publisher failed; retrying")
                self._stop.wait(1.0)

    def _lead(self) -> bool:
        """Whether to publish now: holding the lease, and the heads checked since it was taken."""
        if not self._lease.held():
            self._leading = False
            self._mark_acked()  # what the broker took is published, lease or not
            self._in_flight.clear()  # the next holder publishes the rest again
            return False
        if not self._leading and self._client.is_connected():
            self._check_heads()
            self._leading = True
            self._head_at = 0.0
        return self._leading

    def _check_heads(self) -> None:
        """Before publishing: a site whose retained head is above this database's starts a new epoch."""
        with self._factory() as session:
            codes = list(session.scalars(select(Site.code)))
        heads = leader.retained_heads(self._client, self._heads, self._subacks, codes)
        with self._factory() as session:
            feed.restart_behind(session, heads)

    def _mark_acked(self, *, write: bool = True) -> None:
        while True:
            try:
                mid = self._acked.get_nowait()
            except queue.Empty:
                break
            sent = self._in_flight.pop(mid, None)
            if sent is not None:
                self._to_mark.append(sent[0])
        if self._to_mark and write:
            with self._factory() as session:
                feed.mark_published(session, self._to_mark)
            self._to_mark = []

    def _publish_round(self) -> None:
        self._mark_acked(write=False)  # written after this round's publishes: a sale's change goes out first
        if not self._client.is_connected():
            return
        now = time.monotonic()
        for mid, (_, sent_at) in list(self._in_flight.items()):
            if now - max(sent_at, self._connected_at) > self._republish_after_s:
                del self._in_flight[mid]  # no PUBACK while connected: publish it again (gates skip repeats)
        if len(self._in_flight) >= self._max_in_flight:
            return
        in_flight = {change_id for change_id, _ in self._in_flight.values()} | set(self._to_mark)
        with self._factory() as session:
            rows = feed.unpublished(session, limit=self._max_in_flight - len(self._in_flight), skip=in_flight)
        for change_id, site, epoch, seq, at, body in rows:
            payload = _feed_message(site, epoch, seq, at, body)
            if payload is None:
                self._to_mark.append(change_id)  # unpublishable: gates see a gap and fetch a snapshot
                continue
            info = self._client.publish(topics.feed(site), payload, qos=1)
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                break
            self._in_flight[info.mid] = (change_id, now)  # also when not connected: paho sends it on reconnect
        self._mark_acked()  # (an early return above leaves them to the next round, or to `_lead` losing the lease)
        if now - self._head_at >= self._heartbeat_s:
            self._publish_heads()

    def _publish_heads(self) -> None:
        """Each site's published head, retained; only while connected (a queued heartbeat would lie)."""
        now = utcnow()  # before the read: a change committed after it is not vouched for
        with self._factory() as session:
            heads = feed.published_heads(session, now)
            summed = checksums.by_site_code(session)
        for site, epoch, seq, at in heads:
            checksum_seq, checksum = summed.get(site, (None, None))
            head = FeedHead(site=site, epoch=epoch, seq=seq, at=at, checksum=checksum, checksum_seq=checksum_seq)
            self._client.publish(topics.head(site), head.model_dump_json(), qos=1, retain=True)
        self._head_at = time.monotonic()
        self.recompute.kick()  # the next heads carry what it sums

    # --- consumer ---------------------------------------------------------------------------------

    def _consume_loop(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._inbox.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < self._batch:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            try:
                self._consume(batch)
            except Exception:
                # Not acknowledged: the broker delivers these again after the next reconnect.
                log.exception("consumer failed on %d message(s); they stay unacknowledged", len(batch))

    def _consume(self, batch: list[Received]) -> None:
        items = [item for r in batch for item in inbound.parse_message(r.topic, r.payload)]
        stored = self._store_until_done(items)
        if stored is None:
            return  # stopping before the database came back: nothing acknowledged
        for r in batch:
            if r.delivery.qos > 0:
                self._link.ack(r.delivery)  # only on the connection it came on
        for (site, gate), ack in stored.event_acks(ACK_CHUNK):
            self._client.publish(topics.acks(site, gate), ack.model_dump_json(), qos=1)

    def _store_until_done(self, items: list[inbound.Inbound]) -> service.Stored | None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                return self._store_isolating(items)
            except OperationalError as exc:
                log.warning("database unavailable (%s); retrying in %.1f s, nothing acknowledged", exc.orig, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        return None

    def _store_isolating(self, items: list[inbound.Inbound]) -> service.Stored:
        """Store the batch; if it fails for another reason than the database, store its messages one by one."""
        for again in (True, False):
            try:
                with self._factory() as session:
                    return self._store(session, items)
            except OperationalError:
                raise
            except Exception as exc:
                failure = exc
                if again and isinstance(exc, IntegrityError):  # another process stored some first: now duplicates
                    continue
            break
        if len(items) <= 1:
            log.error("dropped a message that cannot be stored: %r", items, exc_info=failure)
            return service.Stored()
        merged = service.Stored()
        for item in items:
            one = self._store_isolating([item])
            for key, ids in one.acks.items():
                merged.acks[key].extend(ids)
            for key, refused in one.refused.items():
                merged.refused[key].extend(refused)
        return merged


def _feed_message(site: str, epoch: str, seq: int, at: datetime, body: dict[str, Any]) -> str | None:
    try:
        message = {"site": site, "epoch": epoch, "seq": seq, "at": at, "change": body}
        return FeedMessage.model_validate(message).model_dump_json()
    except ValidationError:
        log.exception("feed change %s/%d is not a valid change; skipped", site, seq)
        return None


def start(factory: sessionmaker[Session], settings: Settings) -> CloudSync | None:
    """At start-up: put the current public keys, gate rosters and technicians on every site's feed, then start
    MQTT if a broker is set."""
    with factory() as session:
        feed.ensure_key_sets(session, feed.trusted_key_set(settings))
        feed.ensure_rosters(session)
        technicians.ensure(session)
    if not settings.mqtt_host:
        return None
    _freeze_start_up_objects()
    return CloudSync.from_settings(factory, settings).start()


def _freeze_start_up_objects() -> None:
    """Once per process: what start-up built (app, models, SQLAlchemy's and pydantic's machinery) out of the
    cyclic garbage collector's reach. A backlog's batches allocate enough to trigger full collections, and each
    walked every start-up object: a third of the consumer's CPU (bench.sync: ~85 -> ~55 µs per event). Only
    objects alive after a collection are frozen; if one of them later becomes cyclic garbage, it stays."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


_frozen = False
