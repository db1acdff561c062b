"""The gate as its sync client sees it: `sync.gate.GatePort` over the gate's store and decision service.

The sync client (`sync.gate.GateSync`) knows neither the store nor the daemon; the daemon hands
it this port. Everything here runs on the event loop that owns the store, except `open_staging`
and `read_checksum`, which the client calls from a worker thread: they open files and
connections of their own.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge import store as gate_store
from edge.store import GateStore
from models import PassageEvent
from models.sync import Change, SnapshotHeader

if TYPE_CHECKING:
    from edge.gate import GateService


class StorePort:
    """`GatePort` over a `GateStore`; `service` (when given) reloads its keys after a new key set."""

    def __init__(self, store: GateStore, *, gate_id: str, service: GateService | None = None) -> None:
        self.store = store
        self._gate_id = gate_id
        self.service = service

    @property
    def gate_id(self) -> str:
        return self._gate_id

    def feed_seq(self) -> int:
        return gate_store.feed_seq(self.store)

    def feed_epoch(self) -> str | None:
        return gate_store.feed_epoch(self.store)

    def has_feed_position(self) -> bool:
        return gate_store.has_feed_position(self.store)

    def gate_roster(self) -> frozenset[str] | None:
        return gate_store.gate_roster(self.store)

    def fresh_at(self) -> datetime | None:
        return gate_store.fresh_at(self.store)

    def save_fresh_at(self, at: datetime) -> None:
        gate_store.save_fresh_at(self.store, at)

    def apply_change(self, change: Change, seq: int, *, fresh: datetime) -> None:
        gate_store.apply_change(self.store, change, seq, gate=self._gate_id, fresh=fresh)

    def skip_change(self, seq: int, *, fresh: datetime) -> None:
        gate_store.skip_change(self.store, seq, fresh=fresh)

    def check_keys(self, keys: dict[int, str]) -> None:
        gate_store.check_keys(keys)

    def reload_keys(self) -> None:
        if self.service is not None:
            self.service.reload_keys()

    def snapshot_scratch(self) -> Path:
        """Next to the store: installing attaches the staged file, best on the same disk."""
        parent = Path(self.store.path).parent
        fd, name = tempfile.mkstemp(prefix=".snapshot-", suffix=".db", dir=parent if parent.is_dir() else None)
        os.close(fd)
        return Path(name)

    def open_staging(self, path: Path) -> gate_store.SnapshotStaging:
        return gate_store.SnapshotStaging(path)

    def install_snapshot(self, staging: Path, header: SnapshotHeader, *, fresh: datetime) -> None:
        gate_store.install_snapshot(
            self.store,
            staging,
            seq=header.seq,
            keys=header.keys,
            checksum=header.checksum,
            fresh=fresh,
            epoch=header.epoch,
            gates=header.gates,
        )

    def read_checksum(self) -> tuple[int, str] | None:
        return gate_store.read_checksum(Path(self.store.path))

    def outbox_after(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        return gate_store.outbox_after(self.store, after, limit)

    def outbox_depth(self) -> int:
        return self.store.outbox_depth()

    def apply_batch(
        self, *, acknowledged: Iterable[uuid.UUID], remote: Iterable[PassageEvent], now: datetime
    ) -> list[tuple[PassageEvent, str]]:
        return gate_store.apply_batch(self.store, acknowledged=acknowledged, remote=remote, now=now)
