"""The cloud's ticket feed at the gate: its position, applying one change, keys, gate config, roster, faces,
technicians, handhelds' verifications.

Functions over a `GateStore`, called only by the store's owner (the daemon's event loop). Each
that changes the store commits exactly once, so the caller can acknowledge the MQTT message that
carried the change right after it returns (acknowledge after commit).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from edge.store import faces, journal, technicians, tickets
from edge.store.gate_store import GateStore
from edge.store.schema import get_meta, iso, set_meta
from models import Direction, GateConfig, Outcome, PassageEvent
from models.credential import load_public_key
from models.sync import (
    Change,
    FaceDelete,
    FaceUpsert,
    GateConfigChange,
    GateRoster,
    KeySet,
    StatusChange,
    Technicians,
    TicketUpsert,
    Usage,
)
from sync.errors import KeySetError

FEED_SEQ = "sync.feed_seq"
FEED_EPOCH = "sync.feed_epoch"
FRESH_AT = "sync.fresh_at"
GATE_CONFIG = "sync.gate_config"  # the cloud's rules for this gate (`GateConfigChange`), as received
GATE_CONFIG_SINCE = "sync.gate_config_since"  # when this gate took them on (its clock)
GATE_ROSTER = "sync.gate_roster"
SNAPSHOT_CHECKSUM = "sync.snapshot_checksum"
HANDHELD = "handheld:"  # the gate id of a handheld's verification in the journal, before the device's name


def feed_seq(store: GateStore) -> int:
    """The last feed sequence applied (0: never synced)."""
    value = store.get_meta(FEED_SEQ)
    return 0 if value is None else int(value)


def feed_epoch(store: GateStore) -> str | None:
    """The run of the cloud's feed this store follows (None: not known, e.g. synced before epochs)."""
    return store.get_meta(FEED_EPOCH)


def has_feed_position(store: GateStore) -> bool:
    """Has this store ever been synced (from a snapshot or the feed)?"""
    return store.get_meta(FEED_SEQ) is not None


def fresh_at(store: GateStore) -> datetime | None:
    """When the feed was last confirmed fresh, as persisted."""
    value = store.get_meta(FRESH_AT)
    return None if value is None else datetime.fromisoformat(value)


def gate_roster(store: GateStore) -> frozenset[str] | None:
    """The codes of the site's gates as the cloud last named them (None: never named, an older store)."""
    value = store.get_meta(GATE_ROSTER)
    return None if value is None else frozenset(json.loads(value))


def set_roster(c: sqlite3.Connection, gates: Sequence[str]) -> None:
    set_meta(c, GATE_ROSTER, json.dumps(sorted(gates)))


def save_fresh_at(store: GateStore, at: datetime) -> None:
    store.set_meta(FRESH_AT, iso(at))


def check_keys(keys: dict[int, str]) -> None:
    """Raise `KeySetError` unless every key loads (and there is at least one)."""
    if not keys:
        raise KeySetError("an empty key set would make every signed ticket unknown")
    for key_id, b64 in keys.items():
        try:
            load_public_key(b64)
        except ValueError as exc:
            raise KeySetError(f"key {key_id}: {exc}") from exc


def apply_change(store: GateStore, change: Change, seq: int, *, gate: str, fresh: datetime) -> None:
    """Apply one feed change and record `seq` as applied, in one transaction.

    A key set whose keys do not load raises `KeySetError` before anything is written.
    `gate` names this gate: only its own gate config is kept (`put_cloud_rules`; None withdraws it). A
    face template is kept sealed, as received; a `FaceUpsert` the cloud scrubbed (sealed None: deleted
    since, a `FaceDelete` follows) changes nothing, so a gate catching up never holds a deleted face even
    for a moment. A technician list replaces the last one. A handheld's verification (`Usage`) is
    journaled as another gate's passage, never to go up to the cloud (`apply_usage`).
    """
    if isinstance(change, KeySet):
        check_keys(change.keys)
    with store.conn as c:
        if isinstance(change, TicketUpsert):
            tickets.put(c, change.ticket)
            tickets.set_status(c, change.ticket.ticket_id, change.ticket.status, None)
        elif isinstance(change, StatusChange):
            tickets.set_status(c, change.ticket_id, change.status, change.reason)
            tickets.set_body_status(c, change.ticket_id, change.status)
        elif isinstance(change, KeySet):
            tickets.replace_keys(c, change.keys)
        elif isinstance(change, GateConfigChange) and change.gate_id == gate:
            put_cloud_rules(c, change.config, fresh)
        elif isinstance(change, GateRoster):
            set_roster(c, change.gates)
        elif isinstance(change, FaceUpsert) and change.sealed is not None:
            faces.put(c, change.ticket_id, change.holder_id, change.sealed)
        elif isinstance(change, FaceDelete):
            faces.delete(c, change.ticket_id)
        elif isinstance(change, Technicians):
            technicians.replace(c, change.accounts)
        elif isinstance(change, Usage):
            apply_usage(c, change)
        set_meta(c, FEED_SEQ, str(seq))
        set_meta(c, FRESH_AT, iso(fresh))


def put_cloud_rules(c: sqlite3.Connection, config: GateConfig | None, at: datetime) -> None:
    """Keep the cloud's rules for this gate (None: withdrawn, the file's rules again); the same rules again
    keep the time they were first taken on. Only ever inside the transaction that moves the feed position
    (`apply_change`, `install_snapshot`): rules and seq must never part."""
    if config is None:
        c.execute("DELETE FROM meta WHERE key IN (?, ?)", (GATE_CONFIG, GATE_CONFIG_SINCE))
        return
    body = config.model_dump_json()
    if get_meta(c, GATE_CONFIG) != body or get_meta(c, GATE_CONFIG_SINCE) is None:
        set_meta(c, GATE_CONFIG, body)
        set_meta(c, GATE_CONFIG_SINCE, iso(at))


def cloud_rules(store: GateStore) -> tuple[GateConfig, datetime] | None:
    """The cloud's rules for this gate and since when it runs by them; None: none (its file's rules).

    Rules stored by a release that wrote no time count from now; rules that no longer parse are none."""
    body = store.get_meta(GATE_CONFIG)
    if body is None:
        return None
    try:
        config = GateConfig.model_validate_json(body)
    except ValueError:
        return None
    since = store.get_meta(GATE_CONFIG_SINCE)
    return config, datetime.fromisoformat(since) if since is not None else datetime.now().astimezone()


def apply_usage(c: sqlite3.Connection, usage: Usage) -> None:
    """Journal a handheld's verification as a remote passage (gate id ``handheld:<device>``, never one of the
    site's gate codes), or remove it when undone; and take the cloud's count onto the cached ticket."""
    if usage.undone:
        journal.forget_remote(c, usage.event_id)
    else:
        passage = PassageEvent(
            event_id=usage.event_id,
            gate_id=f"{HANDHELD}{usage.device}",
            site_id=usage.site,
            at=usage.at,
            direction=Direction.IN,
            outcome=Outcome.ADMIT,
            code="ok",
            ticket_id=usage.ticket_id,
            passed=True,
            counted=True,
        )
        journal.record_remote(c, [passage], journal.REMOTE)
    cached = tickets.ticket(c, usage.ticket_id)
    if cached is not None:
        counts = {"entries_used": usage.entries_used, "first_entry_at": usage.first_entry_at}
        tickets.put(c, cached.model_copy(update=counts))


def skip_change(store: GateStore, seq: int, *, fresh: datetime) -> None:
    """Record `seq` as applied without applying its change (one that cannot be applied)."""
    with store.conn as c:
        set_meta(c, FEED_SEQ, str(seq))
        set_meta(c, FRESH_AT, iso(fresh))


def ticket_checksum(store: GateStore) -> str:
    """`models.sync.ticket_set_checksum` of the cached tickets with their effective status."""
    return tickets.checksum(store.conn)
