"""Across: the other gates' passage events, journaled here as remote passages so decisions count them.

Owns the count of peers' events not believed, by why. An event is taken only from a gate on the
site's roster, on that gate's own topic (the broker lets a gate's login write only there), and
only when it names this site and that very gate; the time bounds are the port's
(`GatePort.apply_batch`). Until the cloud sent a roster (a store synced before rosters; the
cloud sends one at its start) any gate of the site is believed.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from pydantic import ValidationError

from models import PassageEvent
from models.sync import parse_events
from models.sync_config import SyncConfig
from sync import topics
from sync.errors import first_error
from sync.gate.commit import GroupCommit
from sync.gate.network import GateLink
from sync.link import Received

log = logging.getLogger("starfish.sync")


class Peers:
    """Other gates' passages on their way into this gate's journal; runs on the event loop."""

    def __init__(
        self,
        config: SyncConfig,
        *,
        link: GateLink,
        commit: GroupCommit,
        roster: Callable[[], frozenset[str] | None],
    ) -> None:
        self.config = config
        self.link = link
        self.commit = commit
        self.roster = roster
        self.dropped: collections.Counter[str] = collections.Counter()  # by why

    def on_events(self, item: Received, peer: str) -> None:
        """Gate `peer`'s events, from its own topic."""
        refused: list[str] = []
        try:
            events = parse_events(item.payload, refused)
        except ValidationError as exc:
            self.link.reject(item, f"not a passage event ({first_error(exc)})")
            return
        for why in refused:
            log.warning("sync: left out a malformed passage event on %s: %s", item.topic, why)
        roster = self.roster()
        if roster is not None and peer not in roster:
            self.dropped["unknown_gate"] += len(events)
            self.link.reject(item, f"gate {peer!r} is not on the site's roster ({len(events)} event(s))")
            return
        believed: list[PassageEvent] = []
        for e in events:
            if e.site_id != self.config.site:
                self.drop(e, "wrong_site", item.topic)
            elif e.gate_id != peer:
                self.drop(e, "gate_mismatch", item.topic)
            else:
                believed.append(e)
        self.commit.add(item.delivery, remote=believed)

    def not_recorded(self, dropped: list[tuple[PassageEvent, str]]) -> None:
        """The store would not journal these (their time cannot be true)."""
        for event, why in dropped:
            self.drop(event, why, topics.events(self.config.site, event.gate_id))

    def drop(self, event: PassageEvent, why: str, topic: str) -> None:
        self.dropped[why] += 1
        log.warning(
            "sync: dropped peer event %s on %s (%s): it says site %.40r gate %.40r at %s",
            event.event_id,
            topic,
            why,
            event.site_id,
            event.gate_id,
            event.at.isoformat(),
        )
