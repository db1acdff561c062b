"""Up: the gate's outbox to the cloud, until the cloud's `EventAck` names each event.

Owns the publish window: which events are out and not yet confirmed (with when they went), and
the outbox cursor after which the next ones are read. Events the cloud did not confirm within
`ack_timeout_s`, or by a reconnect, go again: the cloud stores an event once however often it
arrives. An event the cloud refused (`EventAck.refused`: it will never store it) leaves the
outbox too, with a warning, and is counted by reason (`events_refused`). What a confirmation or
a refusal removes from the outbox is committed by the group commit (`sync.gate.commit`), which
hands back what it committed.
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from models.sync import EventAck, RefusedEvent, event_batch_json
from models.sync_config import SyncConfig
from sync import topics
from sync.errors import first_error
from sync.gate.commit import GroupCommit
from sync.gate.network import GateLink
from sync.link import Received

if TYPE_CHECKING:
    from sync.gate.port import GatePort

log = logging.getLogger("starfish.sync")


class Uplink:
    """The publish window over the outbox; every method runs on the event loop."""

    def __init__(self, config: SyncConfig, *, port: GatePort, link: GateLink, commit: GroupCommit) -> None:
        self.config = config
        self.port = port
        self.link = link
        self.commit = commit
        self._topic = topics.events(config.site, config.gate)
        self._sent: dict[str, float] = {}  # event id -> monotonic time published, oldest first
        self._cursor = 0  # outbox seq of the last event published since the window restarted
        self.events_refused: collections.Counter[str] = collections.Counter()  # by the cloud's reason

    def restart(self) -> None:
        """Whatever the cloud has not confirmed goes again, oldest first."""
        self._sent.clear()
        self._cursor = 0

    def top_up(self) -> None:
        """Publish outbox events after the cursor until the window is full: one event alone, a
        backlog in `EventBatch`es of up to `event_batch`."""
        if not self.link.connected:
            return
        room = self.config.publish_window - len(self._sent)
        while room > 0:
            rows = self.port.outbox_after(self._cursor, min(room, 500))
            if not rows:
                return
            now = time.monotonic()
            for i in range(0, len(rows), self.config.event_batch):
                chunk = rows[i : i + self.config.event_batch]
                self.link.publish(self._topic, event_batch_json([body for _, _, body in chunk]))
                for seq, event_id, _ in chunk:
                    self._sent[event_id] = now
                    self._cursor = seq
            room -= len(rows)

    def on_ack(self, item: Received) -> None:
        try:
            ack = EventAck.model_validate_json(item.payload)
        except ValidationError as exc:
            self.link.reject(item, f"not an event ack ({first_error(exc)})")
            return
        self.commit.add(item.delivery, acknowledged=ack.event_ids, refused=ack.refused)

    def confirmed(self, event_ids: Iterable[uuid.UUID], refused: Iterable[RefusedEvent] = ()) -> None:
        """These left the outbox (committed): out of the window, and room for more."""
        for event_id in event_ids:
            self._sent.pop(str(event_id), None)
        for r in refused:
            self._sent.pop(str(r.event_id), None)
            self.events_refused[r.reason] += 1
            log.warning("sync: the cloud refused event %s (%s): dropped from the outbox", r.event_id, r.reason)
        self.top_up()

    def check_timeouts(self) -> None:
        oldest = next(iter(self._sent.values()), None)
        if oldest is not None and time.monotonic() - oldest > self.config.ack_timeout_s:
            log.info(
                "sync: %d event(s) unconfirmed after %.0f s: publishing again",
                len(self._sent),
                self.config.ack_timeout_s,
            )
            self.restart()
