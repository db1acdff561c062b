"""The group commit: what the cloud confirmed and what other gates passed, committed together.

Owns what waits for the next commit: event ids the cloud confirmed or refused (both leave the
outbox), other gates' passages, and the deliveries that brought them. It commits when the inbox
runs dry (or the group is large), in one transaction (one fsync for many messages), and only
then acknowledges the group (acknowledge after commit). A group that fails to commit is not
acknowledged: it comes again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from models import PassageEvent
from models.sync import RefusedEvent
from sync.gate.network import GateLink
from sync.link import Delivery

if TYPE_CHECKING:
    from sync.gate.port import GatePort

log = logging.getLogger("starfish.sync")

GROUP_MAX = 500  # deliveries in one commit

Committed = Callable[[list[uuid.UUID], list[RefusedEvent], list[tuple[PassageEvent, str]]], None]


class GroupCommit:
    """Collects on the event loop; `on_committed(acknowledged, refused, dropped)` follows each commit."""

    def __init__(
        self, *, port: GatePort, link: GateLink, clock: Callable[[], datetime], on_committed: Committed
    ) -> None:
        self.port = port
        self.link = link
        self.clock = clock
        self.on_committed = on_committed
        self._acked: list[uuid.UUID] = []
        self._refused: list[RefusedEvent] = []
        self._remote: list[PassageEvent] = []
        self._deliveries: list[Delivery] = []
        self._scheduled = False

    def add(
        self,
        delivery: Delivery,
        *,
        acknowledged: Iterable[uuid.UUID] = (),
        refused: Iterable[RefusedEvent] = (),
        remote: Iterable[PassageEvent] = (),
    ) -> None:
        """Commit these with the next group, then acknowledge `delivery`."""
        self._acked.extend(acknowledged)
        self._refused.extend(refused)
        self._remote.extend(remote)
        self._deliveries.append(delivery)
        if len(self._deliveries) >= GROUP_MAX:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._deliveries:
            return
        acked, refused, remote, deliveries = self._acked, self._refused, self._remote, self._deliveries
        self._acked, self._refused, self._remote, self._deliveries = [], [], [], []
        gone = [*acked, *(r.event_id for r in refused)]  # resending a refused event cannot help
        try:
            dropped = self.port.apply_batch(acknowledged=gone, remote=remote, now=self.clock())
        except Exception:
            log.exception(
                "sync: could not commit %d event ack(s) and peer passage(s); they come again", len(deliveries)
            )
            return
        for delivery in deliveries:
            self.link.ack(delivery)
        self.on_committed(acked, refused, dropped)
