"""A handheld's verification (核销) down the feed: the gate counts it as another gate's passage, offline,
under its own rules (single entry, daily limit, passback), and an undo gives the entry back."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.gate import GateService
from edge.store import REMOTE, GateStore, SnapshotStaging, apply_batch, apply_change, install_snapshot
from harness.tickets import NOW, make_ticket, sign
from models import Direction, GateConfig, Outcome, PassageEvent, ProductKind, Ticket
from models.credential import public_key_b64
from models.sync import TicketUpsert, Usage, ticket_set_checksum

SINGLE = "SINGLE0001"  # a plain code of a one-entry ticket


@pytest.fixture
def service(store: GateStore, gate: GateConfig, signing_key: Ed25519PrivateKey) -> GateService:
    store.set_keys({1: public_key_b64(signing_key.public_key())})
    return GateService(store=store, config=gate)


def usage(
    ticket_id: str = "1001",
    *,
    at: datetime = NOW,
    event_id: uuid.UUID | None = None,
    undone: bool = False,
    entries_used: int = 1,
) -> Usage:
    return Usage(
        ticket_id=ticket_id,
        event_id=event_id or uuid.uuid4(),
        at=at,
        site="nanshan",
        device="hh-01",
        undone=undone,
        entries_used=entries_used,
        first_entry_at=at if entries_used else None,
    )


class Feed:
    """The cloud's feed as the gate applies it, one seq after another."""

    def __init__(self, store: GateStore) -> None:
        self.store, self.seq = store, 0

    def send(self, *changes: TicketUpsert | Usage) -> None:
        for change in changes:
            self.seq += 1
            apply_change(self.store, change, self.seq, gate="g1", fresh=NOW)


def single_entry(**fields: object) -> Ticket:
    return make_ticket(ProductKind.PUNCH, entries=1, code=SINGLE, **fields)


def test_a_ticket_verified_at_a_handheld_is_denied_used_up_and_admitted_again_after_the_undo(
    service: GateService, store: GateStore
) -> None:
    feed = Feed(store)
    feed.send(TicketUpsert(ticket=single_entry()))
    verified = usage(at=NOW - timedelta(minutes=2))
    feed.send(verified)

    assert service.evaluate(SINGLE, NOW).decision.code == "used_up"
    [remote] = store.entries()
    assert (remote.event_id, remote.gate_id, remote.resolution) == (verified.event_id, "handheld:hh-01", REMOTE)
    assert (remote.passed, remote.counted, remote.ticket_id) == (True, True, "1001")
    assert store.outbox_depth() == 0  # the cloud has it already: a remote passage never goes up again

    feed.send(usage(at=verified.at, event_id=verified.event_id, undone=True, entries_used=0))
    assert store.entries() == []
    assert store.ticket("1001") == single_entry()  # the cloud's count again: none used
    admitted = service.evaluate(SINGLE, NOW)
    assert (admitted.decision.code, admitted.decision.entries_left) == ("ok", 0)
    assert store.get_meta("sync.feed_seq") == "3"


def test_the_same_verification_applied_twice_counts_once(service: GateService, store: GateStore) -> None:
    feed = Feed(store)
    feed.send(TicketUpsert(ticket=make_ticket(ProductKind.PUNCH, entries=3, code="PUNCH0003")))
    verified = usage(at=NOW - timedelta(hours=1))
    feed.send(verified, verified)  # the feed said it twice (a snapshot's replay)

    assert len(store.entries()) == 1
    assert service.evaluate("PUNCH0003", NOW).decision.entries_left == 1  # 3 - 1 used - this one


def test_a_handheld_use_counts_towards_passback_like_another_gates_passage(
    service: GateService, store: GateStore, gate: GateConfig
) -> None:
    feed = Feed(store)
    feed.send(TicketUpsert(ticket=make_ticket(ProductKind.PUNCH, code="PUNCH0010")))
    feed.send(usage(at=NOW, entries_used=1))

    soon = NOW + timedelta(seconds=gate.passback_seconds / 2)
    assert service.evaluate("PUNCH0010", soon).decision.code == "passback"
    later = service.evaluate("PUNCH0010", NOW + timedelta(seconds=gate.passback_seconds + 1)).decision
    assert (later.code, later.entries_left) == ("ok", 8)


def test_a_handheld_use_counts_towards_the_daily_limit(service: GateService, store: GateStore) -> None:
    feed = Feed(store)
    feed.send(TicketUpsert(ticket=make_ticket(ProductKind.PUNCH, daily_limit=1, code="PUNCH0010")))
    feed.send(usage(at=NOW - timedelta(hours=1)))

    assert service.evaluate("PUNCH0010", NOW).decision.code == "daily_limit"
    assert service.evaluate("PUNCH0010", NOW + timedelta(days=1)).decision.code == "ok"


def test_a_signed_ticket_the_gate_never_cached_is_denied_after_its_handheld_use(
    service: GateService, store: GateStore, signing_key: Ed25519PrivateKey
) -> None:
    token = sign(signing_key, make_ticket(ProductKind.PUNCH, entries=1))
    assert service.evaluate(token, NOW).decision.code == "ok"

    Feed(store).send(usage(at=NOW - timedelta(minutes=1)))

    assert store.ticket("1001") is None
    assert service.evaluate(token, NOW).decision.code == "used_up"


def test_a_time_window_opened_at_a_handheld_closes_at_the_gate(service: GateService, store: GateStore) -> None:
    feed = Feed(store)
    feed.send(TicketUpsert(ticket=make_ticket(ProductKind.TIME_WINDOW, window_minutes=60, code="WINDOW001")))
    feed.send(usage(at=NOW - timedelta(minutes=61), entries_used=1))

    assert service.evaluate("WINDOW001", NOW).decision.code == "expired"


def test_an_undo_after_a_snapshot_that_counted_the_verification_gives_the_entry_back(
    service: GateService, store: GateStore, tmp_path: Path
) -> None:
    # The gate resynced after the verification: the ticket line counts it, the journal never saw it.
    counted = single_entry(entries_used=1, first_entry_at=NOW - timedelta(minutes=3))
    staging = SnapshotStaging(Path(store.path))
    staging.add_tickets([(counted.ticket_id, counted.code, counted.status.value, counted.model_dump_json())])
    staging.finish()
    staging.close()
    checksum = ticket_set_checksum([(counted.ticket_id, counted.status)])
    install_snapshot(store, seq=7, keys={}, checksum=checksum, fresh=NOW)
    assert service.evaluate(SINGLE, NOW).decision.code == "used_up"

    apply_change(store, usage(at=NOW - timedelta(minutes=3), undone=True, entries_used=0), 8, gate="g1", fresh=NOW)

    assert service.evaluate(SINGLE, NOW).decision.code == "ok"


def test_an_undo_naming_another_gates_passage_removes_nothing_but_the_handhelds_own(store: GateStore) -> None:
    feed = Feed(store)
    feed.send(TicketUpsert(ticket=single_entry()))
    other_gate = PassageEvent(
        gate_id="g2",
        site_id="nanshan",
        at=NOW - timedelta(minutes=1),
        direction=Direction.IN,
        outcome=Outcome.ADMIT,
        code="ok",
        ticket_id="1001",
        passed=True,
        counted=True,
        credential="plain",
    )
    apply_batch(store, remote=[other_gate], now=NOW)
    # An "undo" of a verification that reused that passage's event id (the cloud refuses such ids; the gate
    # must not trust it either): the other gate's admission stays counted here.
    feed.send(usage(event_id=other_gate.event_id, undone=True, entries_used=1))
    assert [(e.event_id, e.gate_id) for e in store.entries()] == [(other_gate.event_id, "g2")]


def test_a_snapshot_after_a_missed_undo_gives_the_entry_back(
    service: GateService, store: GateStore, tmp_path: Path
) -> None:
    feed = Feed(store)
    feed.send(TicketUpsert(ticket=single_entry()))
    feed.send(usage(at=NOW - timedelta(minutes=3)))  # verified at a handheld, journaled here
    assert service.evaluate(SINGLE, NOW).decision.code == "used_up"

    # The undo's change never reached this gate; it resynced, and the snapshot's line counts nothing used.
    fresh_line = single_entry()
    staging = SnapshotStaging(Path(store.path))
    staging.add_tickets(
        [(fresh_line.ticket_id, fresh_line.code, fresh_line.status.value, fresh_line.model_dump_json())]
    )
    staging.finish()
    staging.close()
    checksum = ticket_set_checksum([(fresh_line.ticket_id, fresh_line.status)])
    install_snapshot(store, seq=9, keys={}, checksum=checksum, fresh=NOW)

    assert service.evaluate(SINGLE, NOW).decision.code == "ok"
