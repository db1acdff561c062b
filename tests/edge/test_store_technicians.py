"""The gate store's part of the technician page: the cloud's technician accounts, the journal search,
the technicians' own actions, and the age of the outbox."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from edge.store import GateStore, GateStoreReader, JournalEntry, SnapshotStaging, apply_batch, apply_change
from edge.store import install_snapshot as install
from edge.store import journal as journal_sql
from harness.tickets import NOW, make_ticket
from models import Direction, Outcome, ProductKind
from models.ops import TechnicianAccount
from models.sync import Technicians, ticket_set_checksum

HASH = PasswordHasher().hash("piste-patrol-7")


def tech(username: str, password_hash: str = HASH) -> TechnicianAccount:
    return TechnicianAccount(username=username, password_hash=password_hash)


def decision(
    ticket_id: str | None, minutes: int, *, gate: str = "g1", outcome: Outcome = Outcome.ADMIT
) -> JournalEntry:
    admit = outcome is Outcome.ADMIT
    return JournalEntry(
        event_id=uuid.uuid4(),
        at=NOW + timedelta(minutes=minutes),
        gate_id=gate,
        site_id="nanshan",
        direction=Direction.IN,
        ticket_id=ticket_id,
        credential="signed" if ticket_id else "none",
        outcome=outcome,
        code="ok" if admit else "expired",
        passed=admit,
        counted=admit,
        resolution="sensor" if admit else None,
    )


def stage(store: GateStore) -> GateStore:
    """The store with a finished staging of one ticket."""
    staging = SnapshotStaging(Path(store.path))
    ticket = make_ticket(ProductKind.DAY, ticket_id="2001", code="DAY2001")
    staging.add_tickets([(ticket.ticket_id, ticket.code, ticket.status.value, ticket.model_dump_json())])
    staging.finish()
    staging.close()
    return store


def snapshot(store: GateStore, staged: GateStore, seq: int, technicians: list[TechnicianAccount] | None) -> None:
    checksum = ticket_set_checksum([("2001", make_ticket(ProductKind.DAY).status)])
    install(staged, seq=seq, keys={}, checksum=checksum, fresh=NOW, technicians=technicians)


# --- technician accounts ---------------------------------------------------------------------------


def test_a_gate_that_never_synced_holds_no_technician_list(store: GateStore, tmp_path: Path) -> None:
    assert store.technicians() == {}
    assert not store.has_technician_list()
    assert GateStoreReader(tmp_path / "not-yet.db").technicians() == {}


def test_a_technicians_change_replaces_the_list_with_the_seq_in_one_commit(store: GateStore) -> None:
    apply_change(store, Technicians(accounts=[tech("li.wei"), tech("wang.fang")]), 1, gate="g1", fresh=NOW)
    assert store.technicians() == {"li.wei": HASH, "wang.fang": HASH}
    assert store.has_technician_list()

    new_hash = PasswordHasher().hash("a-new-password")
    apply_change(store, Technicians(accounts=[tech("wang.fang", new_hash)]), 2, gate="g1", fresh=NOW)
    assert store.technicians() == {"wang.fang": new_hash}, "li.wei was disabled in the cloud: gone here"
    reader = GateStoreReader(store.path)
    assert (reader.technicians(), reader.has_technician_list(), reader.feed_seq()) == ({"wang.fang": new_hash}, True, 2)


def test_an_empty_list_from_the_cloud_still_ends_the_break_glass_account(store: GateStore) -> None:
    apply_change(store, Technicians(accounts=[]), 1, gate="g1", fresh=NOW)
    assert store.technicians() == {}
    assert store.has_technician_list()


def test_a_snapshot_header_with_technicians_replaces_the_list_and_one_without_keeps_it(
    store: GateStore, tmp_path: Path
) -> None:
    store.set_technicians([tech("li.wei"), tech("zhao.lei")])
    snapshot(store, stage(store), 5, [tech("zhao.lei")])
    assert store.technicians() == {"zhao.lei": HASH}

    snapshot(store, stage(store), 6, None)  # an older cloud's snapshot says nothing of technicians
    assert store.technicians() == {"zhao.lei": HASH}
    assert store.ticket("2001") is not None


def test_a_snapshot_without_technicians_does_not_mark_a_list_received(store: GateStore, tmp_path: Path) -> None:
    snapshot(store, stage(store), 5, None)
    assert not store.has_technician_list()
    snapshot(store, stage(store), 6, [])
    assert store.has_technician_list()


# --- the journal search -----------------------------------------------------------------------------


@pytest.fixture
def journal(store: GateStore) -> GateStore:
    """Own decisions of ticket 1001 at +0, +30 (denied) and +90 minutes, 1002 at +60 and an unread code at
    +45; ticket 1001's passage at gate g2 at +20, learnt from the feed of peers."""
    store.upsert_tickets([make_ticket(ProductKind.DAY, ticket_id="1001", code="DAY1001")])
    store.record_all(
        [
            decision("1001", 0),
            decision("1001", 30, outcome=Outcome.DENY),
            decision(None, 45, outcome=Outcome.DENY),
            decision("1002", 60),
            decision("1001", 90),
        ]
    )
    apply_batch(store, remote=[decision("1001", 20, gate="g2").to_event()], now=NOW + timedelta(hours=2))
    return store


def minutes(entries: list[JournalEntry]) -> list[int]:
    return [int((e.at - NOW).total_seconds() // 60) for e in entries]


def test_search_by_ticket_finds_this_gates_decisions_newest_first_not_other_gates_passages(journal: GateStore) -> None:
    reader = GateStoreReader(journal.path)
    found = reader.search("1001")
    assert minutes(found) == [90, 30, 0]
    assert {e.gate_id for e in found} == {"g1"}
    assert [e.outcome for e in found] == [Outcome.ADMIT, Outcome.DENY, Outcome.ADMIT]


def test_search_by_the_code_printed_on_a_voucher_finds_its_ticket(journal: GateStore) -> None:
    assert minutes(GateStoreReader(journal.path).search("DAY1001")) == [90, 30, 0]


def test_search_by_time_takes_from_inclusive_to_exclusive(journal: GateStore) -> None:
    reader = GateStoreReader(journal.path)
    window = reader.search(since=NOW + timedelta(minutes=30), until=NOW + timedelta(minutes=90))
    assert minutes(window) == [60, 45, 30]
    assert minutes(reader.search("1001", since=NOW + timedelta(minutes=1))) == [90, 30]
    assert minutes(reader.search(limit=2)) == [90, 60]


def test_search_for_an_unknown_ticket_finds_nothing(journal: GateStore) -> None:
    assert GateStoreReader(journal.path).search("9999") == []


def test_a_pending_admission_is_found_while_it_waits_for_its_passage(journal: GateStore) -> None:
    pending = decision("1001", 120).model_copy(update={"passed": None, "resolution": None})
    journal.record(pending)
    [newest, *_] = GateStoreReader(journal.path).search("1001")
    assert (newest.event_id, newest.passed) == (pending.event_id, None)


def test_search_reads_a_season_journal_through_an_index(journal: GateStore) -> None:
    """Every shape of the page's search is an index search, never a scan of the whole journal."""
    journal.record_all([decision(f"T{i % 5000:05d}", i % 100_000) for i in range(20_000)])
    reader = GateStoreReader(journal.path)
    plans: list[str] = []

    def trace(statement: str) -> None:
        if statement.startswith("SELECT * FROM passages"):
            plans.append(statement)

    with sqlite3.connect(f"file:{journal.path}?mode=ro", uri=True) as conn:
        conn.set_trace_callback(trace)
        for kwargs in (
            {"ticket_ids": ["T00042"], "since": None, "until": None},
            {"ticket_ids": ["T00042"], "since": NOW, "until": NOW + timedelta(days=1)},
            {"ticket_ids": None, "since": NOW, "until": NOW + timedelta(hours=1)},
            {"ticket_ids": None, "since": None, "until": None},
        ):
            journal_sql.search(conn, limit=50, **kwargs)
        for statement in plans:
            plan = " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}"))
            assert "USING INDEX" in plan, (statement, plan)
    assert len(reader.search(limit=500)) == 500


# --- technicians' actions ----------------------------------------------------------------------------


def test_actions_are_journaled_with_name_and_justification_and_read_back_newest_first(store: GateStore) -> None:
    first = store.record_action("li.wei", "login", "", True, "cloud", NOW)
    second = store.record_action(
        "li.wei", "test_open", "barrier sticks after the morning frost", True, "sensor", NOW + timedelta(minutes=2)
    )
    store.record_action("zhao.lei", "login_failed", "", False, "bad password", NOW + timedelta(minutes=5))
    assert second > first

    reader = GateStoreReader(store.path)
    actions = reader.actions()
    assert [(a.username, a.action, a.ok) for a in actions] == [
        ("zhao.lei", "login_failed", False),
        ("li.wei", "test_open", True),
        ("li.wei", "login", True),
    ]
    test_open = actions[1]
    assert (test_open.id, test_open.justification, test_open.detail) == (
        second,
        "barrier sticks after the morning frost",
        "sensor",
    )
    assert test_open.at == NOW + timedelta(minutes=2)
    assert [a.id for a in reader.actions(since=NOW + timedelta(minutes=1), until=NOW + timedelta(minutes=5))] == [
        second
    ]
    assert len(reader.actions(limit=1)) == 1


def test_a_store_from_before_the_technician_page_reads_as_having_no_actions(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    reader = GateStoreReader(old)
    assert (reader.actions(), reader.technicians(), reader.search("1001")) == ([], {}, [])
    GateStore(old).close()  # opened by the new release: the tables are made
    assert GateStoreReader(old).actions() == []


# --- the outbox's age ----------------------------------------------------------------------------------


def test_the_outbox_tells_when_its_oldest_event_happened(store: GateStore) -> None:
    assert store.outbox_oldest_at() is None
    first, second = decision("1001", 0), decision("1002", 7)
    store.record_all([first, second])
    assert store.outbox_oldest_at() == NOW
    store.acknowledge([first.event_id])
    assert store.outbox_oldest_at() == NOW + timedelta(minutes=7)
    assert GateStoreReader(store.path).outbox_oldest_at() == NOW + timedelta(minutes=7)
    store.acknowledge([second.event_id])
    assert store.outbox_oldest_at() is None
