"""The gate's store: the only code that reads or writes the gate's SQLite file with SQL.

`GateStore` (gate_store.py) is the owner's handle; the journal, outbox, ticket cache, feed,
snapshot and upload modules hold the SQL of each part.
"""

from edge.store.feed import (
    FEED_EPOCH,
    FEED_SEQ,
    FRESH_AT,
    GATE_CONFIG,
    GATE_ROSTER,
    SNAPSHOT_CHECKSUM,
    KeySetError,
    apply_change,
    check_keys,
    feed_epoch,
    feed_seq,
    fresh_at,
    gate_roster,
    has_feed_position,
    save_fresh_at,
    skip_change,
    ticket_checksum,
)
from edge.store.gate_store import GateStore
from edge.store.journal import JournalEntry
from edge.store.reader import GateStoreReader
from edge.store.schema import SCHEMA, StoreError
from edge.store.snapshot import SnapshotError, SnapshotStaging, install_snapshot, read_checksum
from edge.store.upload import REMOTE, apply_batch, outbox_after

__all__ = [
    "FEED_EPOCH",
    "FEED_SEQ",
    "FRESH_AT",
    "GATE_CONFIG",
    "GATE_ROSTER",
    "REMOTE",
    "SCHEMA",
    "SNAPSHOT_CHECKSUM",
    "GateStore",
    "GateStoreReader",
    "JournalEntry",
    "KeySetError",
    "SnapshotError",
    "SnapshotStaging",
    "StoreError",
    "apply_batch",
    "apply_change",
    "check_keys",
    "feed_epoch",
    "feed_seq",
    "fresh_at",
    "gate_roster",
    "has_feed_position",
    "install_snapshot",
    "outbox_after",
    "read_checksum",
    "save_fresh_at",
    "skip_change",
    "ticket_checksum",
]
