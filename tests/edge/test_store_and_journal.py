"""The gate store: durable journal, pending admissions, crash recovery, outbox."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.gate import GateService
from edge.store import GateStore, GateStoreReader, StoreError
from harness.tickets import NOW, make_ticket, sign
from models import GateConfig, Outcome, ProductKind, TicketStatus
from models.credential import public_key_b64


@pytest.fixture
def service(store: GateStore, gate: GateConfig, signing_key: Ed25519PrivateKey) -> GateService:
    store.set_keys({1: public_key_b64(signing_key.public_key())})
    return GateService(store=store, config=gate)


def test_store_runs_in_wal_mode_with_full_sync(store: GateStore) -> None:
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_corrupt_store_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "gate.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open gate store"):
        GateStore(bad)


def test_admission_is_journaled_pending_before_the_barrier_and_counts_on_completion(
    service: GateService, store: GateStore
) -> None:
    store.upsert_tickets([make_ticket(ProductKind.PUNCH, code="PUNCH0001")])
    ev = service.evaluate(b"PUNCH0001", NOW)
    entry = service.journal(ev, NOW)
    assert entry.passed is None
    assert [e.event_id for e in store.pending()] == [entry.event_id]
    assert store.outbox_depth() == 0  # the event is uploaded once we know how it ended
    done = service.complete(entry, passed=True, how="sensor")
    assert (done.passed, done.counted) == (True, True)
    assert store.pending() == []
    [event] = store.outbox()
    assert (event.event_id, event.passed, event.counted, event.code) == (entry.event_id, True, True, "ok")
    later = NOW + timedelta(hours=1)
    assert service.evaluate(b"PUNCH0001", later).decision.entries_left == 8


def test_skier_who_turns_back_uses_no_entry(service: GateService, store: GateStore) -> None:
    store.upsert_tickets([make_ticket(ProductKind.PUNCH, entries=1, code="PUNCH0001")])
    entry = service.journal(service.evaluate(b"PUNCH0001", NOW), NOW)
    service.complete(entry, passed=False, how="timeout")
    assert service.evaluate(b"PUNCH0001", NOW + timedelta(seconds=10)).decision.admit


def test_single_use_ticket_admits_once(service: GateService, store: GateStore, signing_key: Ed25519PrivateKey) -> None:
    token = sign(signing_key, make_ticket(entries=1)).encode()
    entry = service.journal(service.evaluate(token, NOW), NOW)
    service.complete(entry, passed=True, how="sensor")
    second = service.evaluate(token, NOW + timedelta(minutes=10)).decision
    assert (second.admit, second.code) == (False, "used_up")


def test_denials_are_journaled_and_queued_at_once(service: GateService, store: GateStore) -> None:
    entry = service.journal(service.evaluate(b"\xff\x00garbage", NOW), NOW)
    assert (entry.outcome, entry.code, entry.passed) == (Outcome.DENY, "unreadable", False)
    assert store.outbox_depth() == 1


def test_refund_revocation_denies_a_signed_ticket_the_cache_never_held(
    service: GateService, store: GateStore, signing_key: Ed25519PrivateKey
) -> None:
    token = sign(signing_key, make_ticket(ticket_id="5005")).encode()
    assert service.evaluate(token, NOW).decision.admit
    store.set_status("5005", TicketStatus.REVOKED, "refunded")
    assert service.evaluate(token, NOW).decision.code == "revoked"


def test_block_can_be_lifted(service: GateService, store: GateStore) -> None:
    store.upsert_tickets([make_ticket(code="DAY000001")])
    store.set_status("1001", TicketStatus.BLOCKED, "lost card")
    assert service.evaluate(b"DAY000001", NOW).decision.code == "blocked"
    store.set_status("1001", TicketStatus.VALID)
    assert service.evaluate(b"DAY000001", NOW).decision.admit


def test_rescan_within_window_repeats_and_is_journaled_as_repeat(service: GateService, store: GateStore) -> None:
    store.upsert_tickets([make_ticket(ProductKind.PUNCH, code="PUNCH0001")])
    first = service.journal(service.evaluate(b"PUNCH0001", NOW), NOW)
    service.complete(first, passed=True, how="sensor")
    again = service.evaluate(b"PUNCH0001", NOW + timedelta(seconds=1))
    assert (again.decision.repeat, again.decision.open_barrier) == (True, False)
    entry = service.journal(again, NOW + timedelta(seconds=1))
    assert (entry.resolution, entry.counted) == ("repeat", False)
    # Repeats do not extend the window: 4 s after the first scan it is a new decision.
    assert service.evaluate(b"PUNCH0001", NOW + timedelta(seconds=4)).decision.code == "passback"


def test_crash_between_journal_and_sensor_resolves_as_not_counted_on_restart(tmp_path: Path, gate: GateConfig) -> None:
    path = tmp_path / "gate.db"
    store = GateStore(path)
    store.upsert_tickets([make_ticket(ProductKind.PUNCH, entries=2, code="PUNCH0001")])
    service = GateService(store=store, config=gate)
    pending = service.journal(service.evaluate(b"PUNCH0001", NOW), NOW)
    store.conn.close()  # the process dies here; nothing after the journal write happened

    reopened = GateStore(path)
    [resolved] = reopened.recover()
    assert resolved.event_id == pending.event_id
    assert (resolved.passed, resolved.counted, resolved.resolution) == (False, False, "unconfirmed_after_restart")
    assert reopened.recover() == []  # a second restart changes nothing
    [event] = reopened.outbox()
    assert event.event_id == pending.event_id
    service = GateService(store=reopened, config=gate)
    assert service.evaluate(b"PUNCH0001", NOW + timedelta(hours=1)).decision.entries_left == 1


def test_resolving_twice_is_idempotent(service: GateService, store: GateStore) -> None:
    store.upsert_tickets([make_ticket(code="DAY000001")])
    entry = service.journal(service.evaluate(b"DAY000001", NOW), NOW)
    service.complete(entry, passed=True, how="sensor")
    again = service.complete(entry, passed=False, how="timeout")
    assert again.passed is True
    assert store.outbox_depth() == 1


def test_outbox_drains_only_what_the_cloud_acknowledged(service: GateService, store: GateStore) -> None:
    for i in range(3):
        service.journal(service.evaluate(b"NOPE%04d" % i, NOW), NOW)
    events = store.outbox(limit=2)
    store.acknowledge([events[0].event_id])
    assert store.outbox_depth() == 2
    assert store.outbox()[0].event_id == events[1].event_id


def test_journal_survives_reopen_exactly(tmp_path: Path, gate: GateConfig) -> None:
    store = GateStore(tmp_path / "g.db")
    service = GateService(store=store, config=gate)
    for i in range(20):
        service.journal(service.evaluate(b"NOPE%04d" % i, NOW), NOW + timedelta(seconds=i))
    store.close()
    again = GateStore(tmp_path / "g.db")
    assert len(again.entries()) == 20
    assert again.outbox_depth() == 20


def test_bad_public_key_is_refused_before_it_replaces_the_trusted_set(store: GateStore) -> None:
    good = public_key_b64(Ed25519PrivateKey.generate().public_key())
    store.set_keys({1: good})
    with pytest.raises(ValueError):
        store.set_keys({1: good, 2: "AAAA"})
    assert list(store.keys()) == [1]


def test_journal_refuses_naive_times(store: GateStore, service: GateService) -> None:
    ev = service.evaluate(b"NOPE0001", NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        service.journal(ev, NOW.replace(tzinfo=None))
    assert store.entries() == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_random_bytes_through_a_stocked_gate_never_admit_and_never_raise(
    service: GateService, store: GateStore, data: bytes
) -> None:
    if not store.ticket_count():
        store.upsert_tickets(
            [make_ticket(code="DAY000001"), make_ticket(ProductKind.PUNCH, ticket_id="1002", code="PUNCH0001")]
        )
    ev = service.evaluate(data, NOW)
    assert not ev.decision.admit or data.strip() in (b"DAY000001", b"PUNCH0001")


def test_a_reader_watches_the_journal_while_the_gate_writes_and_never_writes_itself(
    service: GateService, store: GateStore, tmp_path: Path
) -> None:
    assert GateStoreReader(tmp_path / "not-yet.db").entries() == []
    reader = GateStoreReader(store.path)
    store.upsert_tickets([make_ticket(ProductKind.PUNCH, code="PUNCH0001")])
    mark = reader.journal_mark()
    entry = service.journal(service.evaluate(b"PUNCH0001", NOW), NOW)
    assert [(e.event_id, e.passed) for e in reader.pending()] == [(entry.event_id, None)]
    service.complete(entry, passed=True, how="sensor")
    assert [(e.code, e.passed, e.counted) for e in reader.decisions_since(mark)] == [("ok", True, True)]
    assert (reader.outbox_ids(), reader.ticket_count()) == ([entry.event_id], 1)
    with pytest.raises(sqlite3.OperationalError, match="readonly"), reader._connect() as c:
        c.execute("DELETE FROM outbox")
