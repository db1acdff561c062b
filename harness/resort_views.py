"""What each side of the resort knows, and the exactly-once check.

A gate's side (`GateView`, its `Decision`s) is read from its store through `GateStoreReader`; the
cloud's (`CloudView`) from its database, read-only, and its sync-status API. `ExactlyOnce` compares
every gate's journal with the passages the cloud stored, by the event id each gate made.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.store import GateStoreReader, JournalEntry
from harness.cloud_db import query, read_rows
from models import Outcome

_PASSAGES = "SELECT g.code, p.event_id FROM gate_passages p JOIN gates g ON g.id = p.gate_id"
_STORED = "SELECT g.code, count(*) FROM gate_passages p JOIN gates g ON g.id = p.gate_id GROUP BY g.code"


@dataclass(frozen=True)
class Decision:
    """A gate's decision on one scan, as its journal holds it."""

    gate: str
    event_id: uuid.UUID
    admit: bool
    code: str
    passed: bool
    ticket_id: str | None

    @classmethod
    def of(cls, gate: str, entry: JournalEntry) -> Decision:
        return cls(
            gate, entry.event_id, entry.outcome is Outcome.ADMIT, entry.code, bool(entry.passed), entry.ticket_id
        )


@dataclass(frozen=True)
class GateView:
    """One gate as its own store tells it."""

    gate: str
    running: bool
    admitted: int
    denied: int
    from_peers: int  # other gates' passages this gate learnt over the site broker
    outbox: int  # events the cloud has not confirmed yet
    feed_seq: int
    last: Decision | None

    @property
    def journaled(self) -> int:
        return self.admitted + self.denied

    @classmethod
    def of(cls, gate: str, running: bool, store: GateStoreReader) -> GateView:
        own = store.decisions_since(0)
        return cls(
            gate,
            running,
            sum(e.outcome is Outcome.ADMIT for e in own),
            sum(e.outcome is Outcome.DENY for e in own),
            len(store.entries(own=False)),
            store.outbox_depth(),
            store.feed_seq(),
            Decision.of(gate, own[-1]) if own else None,
        )


@dataclass(frozen=True)
class CloudView:
    """The cloud's side: passages stored per gate, its feed head and what each gate last reported."""

    stored: dict[str, int]
    feed_head: int | None  # None: the API did not answer
    gates: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class ExactlyOnce:
    """Every decision journaled at a gate is stored in the cloud once, and nothing else is."""

    journaled: dict[str, int]
    stored: dict[str, int]
    missing: int  # journaled at a gate, not in the cloud
    extra: int  # in the cloud, journaled at no gate
    doubled: int  # stored more than once
    outbox: int  # still waiting at the gates

    @classmethod
    def compare(cls, gates: Mapping[str, GateStoreReader], cloud: Sequence[tuple[str, uuid.UUID]]) -> ExactlyOnce:
        """Every gate's own journal against the passages the cloud stored (gate code, event id), by the gate-made id."""
        journal = {code: {e.event_id for e in store.entries(own=True)} for code, store in gates.items()}
        stored_ids = set(cloud)
        journaled_ids = {(code, e) for code, ids in journal.items() for e in ids}
        return cls(
            journaled={code: len(ids) for code, ids in journal.items()},
            stored=dict(Counter(code for code, _ in cloud)),
            missing=len(journaled_ids - stored_ids),
            extra=len(stored_ids - journaled_ids),
            doubled=len(cloud) - len(stored_ids),
            outbox=sum(store.outbox_depth() for store in gates.values()),
        )

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.doubled or self.outbox)

    def line(self) -> str:
        per_gate = ", ".join(f"{g} {self.stored.get(g, 0)}/{n}" for g, n in self.journaled.items())
        verdict = "OK" if self.ok else "FAILED"
        return (
            f"exactly once: {verdict}: {sum(self.stored.values())} passages stored in the cloud, "
            f"{sum(self.journaled.values())} journaled at the gates ({per_gate}); "
            f"{self.missing} missing, {self.extra} extra, {self.doubled} doubled, {self.outbox} left in outboxes"
        )


def cloud_passages(cloud_db: Path) -> list[tuple[str, uuid.UUID]]:
    """Every passage the cloud stored: (gate code, event id)."""
    return [(str(code), uuid.UUID(str(event_id))) for code, event_id in query(cloud_db, _PASSAGES)]


def stored_per_gate(cloud_db: Path) -> dict[str, int]:
    """How many passages the cloud stored per gate code ({} while its database is not there yet)."""
    return {str(code): int(n) for code, n in read_rows(cloud_db, _STORED)}
