"""The gate as its sync client sees it: `sync.gate.GatePort` over the gate's store and decision service.

The sync client (`sync.gate.GateSync`) knows neither the store nor the daemon; the daemon hands
it this port. Everything here runs on the event loop that owns the store, except `open_staging`
and `read_checksum`, which the client calls from a worker thread: they open files and
connections of their own.

Face templates: the gate's face matcher follows the store through a `FaceListener`, told after
each commit. What it does with the news never undoes or holds up the commit or the message's
acknowledgement: a listener that raises is logged, and the store stays the truth it reloads from.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edge import store as gate_store
from edge.store import GateStore
from models import PassageEvent
from models.ops import GateHealth
from models.sync import Change, FaceDelete, FaceUpsert, GateConfigChange, SnapshotHeader

if TYPE_CHECKING:
    from edge.gate import GateService

log = logging.getLogger("starfish.sync")


class FaceListener(Protocol):
    """Who keeps face templates in memory (the gate's matcher); each call comes after the store's commit,
    on the event loop that owns the store. The templates are sealed as received."""

    def face_put(self, ticket_id: str, holder_id: str, sealed: str) -> None:
        """A pass's template was stored, replacing any earlier one."""
        ...

    def face_deleted(self, ticket_id: str) -> None:
        """A pass's template was deleted (perhaps one the store never held)."""
        ...

    def faces_reloaded(self) -> None:
        """A snapshot replaced every template: read them again (`edge.store.faces.all_faces`)."""
        ...


class StorePort:
    """`GatePort` over a `GateStore`; `service` (when given) reloads its keys after a new key set and its
    rules after the cloud's rules for this gate changed (a feed change or a snapshot),
    `faces` (when given) hears of every face template change after its commit, `health` (when given)
    tells the gate's health for its status (`edge.vitals.GateVitals.health`)."""

    def __init__(
        self,
        store: GateStore,
        *,
        gate_id: str,
        service: GateService | None = None,
        faces: FaceListener | None = None,
        health: Callable[[], GateHealth | None] | None = None,
    ) -> None:
        self.store = store
        self._gate_id = gate_id
        self.service = service
        self.faces = faces
        self._health = health

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
        if isinstance(change, GateConfigChange) and change.gate_id == self._gate_id and self.service is not None:
            self.service.reload_rules()  # the cloud's rules take effect now (issue 13)
        faces = self.faces
        if faces is None:
            return
        if isinstance(change, FaceUpsert) and change.sealed is not None:
            _tell(faces.face_put, change.ticket_id, change.holder_id, change.sealed)
        elif isinstance(change, FaceDelete):
            _tell(faces.face_deleted, change.ticket_id)

    def skip_change(self, seq: int, *, fresh: datetime) -> None:
        gate_store.skip_change(self.store, seq, fresh=fresh)

    def check_keys(self, keys: dict[int, str]) -> None:
        gate_store.check_keys(keys)

    def reload_keys(self) -> None:
        if self.service is not None:
            self.service.reload_keys()

    def open_staging(self) -> gate_store.SnapshotStaging:
        """In the store's own file (`edge.store.snapshot`): installing renames the staged tickets, copies nothing."""
        return gate_store.SnapshotStaging(Path(self.store.path))

    def install_snapshot(self, header: SnapshotHeader, *, fresh: datetime) -> None:
        gate_store.install_snapshot(
            self.store,
            seq=header.seq,
            keys=header.keys,
            checksum=header.checksum,
            fresh=fresh,
            epoch=header.epoch,
            gates=header.gates,
            technicians=header.technicians,
            gate_config=header.gate_config,  # in the swap's transaction; none: the file's rules again
        )
        if self.service is not None:
            self.service.reload_rules()
        if self.faces is not None:
            _tell(self.faces.faces_reloaded)

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

    def health(self) -> GateHealth | None:
        return None if self._health is None else self._health()


def _tell(call: Callable[..., None], *args: str) -> None:
    """Tell the face listener; what it raises is logged, never passed on (the change is committed)."""
    try:
        call(*args)
    except Exception:
        log.exception("face templates: the listener failed in %s%s", getattr(call, "__name__", call), args[:1])
