"""What the gate's sync client needs of its gate: one narrow, typed port.

The client never sees the gate's store, decision service or daemon: the edge implements this
Protocol (`edge.sync_port`) over its store. Every method runs on the event loop that owns the
store, except `open_staging` and `read_checksum`, which run in a worker thread and touch only
their own files and connections. A method that changes the gate commits before it returns, so
the client may acknowledge the MQTT message that carried the change right after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from models import PassageEvent
from models.ops import GateHealth
from models.sync import Change, SnapshotHeader
from sync.snapshot_client import SnapshotSink


class GatePort(Protocol):
    """The gate as its sync client sees it."""

    @property
    def gate_id(self) -> str:
        """The gate's own code: the one its events carry."""
        ...

    # --- the feed position ----------------------------------------------------------------------

    def feed_seq(self) -> int:
        """The last feed sequence applied (0: never synced)."""
        ...

    def feed_epoch(self) -> str | None:
        """The run of the cloud's feed the gate follows (None: not known)."""
        ...

    def has_feed_position(self) -> bool:
        """Has the gate ever been synced (from a snapshot or the feed)?"""
        ...

    def gate_roster(self) -> frozenset[str] | None:
        """The site's gates as the cloud last named them (None: never named)."""
        ...

    def fresh_at(self) -> datetime | None:
        """When the feed was last confirmed fresh, as saved."""
        ...

    def save_fresh_at(self, at: datetime) -> None:
        """Keep when the feed was last confirmed fresh."""
        ...

    # --- down: the feed and snapshots -----------------------------------------------------------

    def apply_change(self, change: Change, seq: int, *, fresh: datetime) -> None:
        """Apply one feed change and record `seq` as applied; `KeySetError` for keys that do not load."""
        ...

    def skip_change(self, seq: int, *, fresh: datetime) -> None:
        """Record `seq` as applied without applying its change."""
        ...

    def check_keys(self, keys: dict[int, str]) -> None:
        """Raise `KeySetError` unless the gate could use every key of this set."""
        ...

    def reload_keys(self) -> None:
        """The key set changed: decisions verify with the new one from now on."""
        ...

    def open_staging(self) -> SnapshotSink:
        """Where the snapshot client streams a snapshot's lines (worker thread), replacing whatever an earlier
        staging left."""
        ...

    def install_snapshot(self, header: SnapshotHeader, *, fresh: datetime) -> None:
        """Replace the gate's tickets, face templates, keys, roster and the cloud's rules for it
        (`header.gate_config`; None: none, the file's rules again) by the verified snapshot just staged, in one
        commit with the new feed position; `SnapshotError` if not."""
        ...

    def read_checksum(self) -> tuple[int, str] | None:
        """(feed seq, ticket-set checksum) read together; None: never synced (worker thread)."""
        ...

    # --- up and across: the outbox and other gates' passages ------------------------------------

    def outbox_after(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """(outbox seq, event id, event JSON) of the oldest events queued after `after`."""
        ...

    def outbox_depth(self) -> int:
        """Events waiting for the cloud's confirmation."""
        ...

    def apply_batch(
        self, *, acknowledged: Iterable[uuid.UUID], remote: Iterable[PassageEvent], now: datetime
    ) -> list[tuple[PassageEvent, str]]:
        """In one commit: drop `acknowledged` from the outbox and journal other gates' passages;
        returns the passages not believed, each with why."""
        ...

    # --- the gate's own health, for its status --------------------------------------------------

    def health(self) -> GateHealth | None:
        """Devices, backlog and disk as the gate knows them now (cheap: called every tick); None: not known."""
        ...
