"""Face templates in the gate's store: kept sealed as the feed carries them, summed like the cloud, private at rest."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import store as edge_store
from edge.store import GateStore, GateStoreReader, SnapshotError, SnapshotStaging, install_snapshot, read_checksum
from edge.store import faces as store_faces
from edge.store.schema import SCHEMA
from harness.testdata import SHARED_TESTDATA
from harness.tickets import NOW, make_ticket
from models import ProductKind, Ticket, TicketStatus
from models.face import (
    FaceSealError,
    face_key_text,
    pack_encoding,
    seal,
    site_face_key,
    template_aad,
    unpack_encoding,
    unseal,
)
from models.sync import (
    Change,
    FaceDelete,
    FaceUpsert,
    SnapshotFace,
    SnapshotStatus,
    TicketSetChecksum,
    TicketUpsert,
    ticket_set_checksum,
)

SITE = "nanshan"
MASTER = bytes(range(32))
SITE_KEY = site_face_key(MASTER, SITE)
ENCODING = [i / 1000 - 0.064 for i in range(128)]


def sealed(ticket_id: str, holder_id: str, encoding: list[float] = ENCODING, key: bytes = SITE_KEY) -> str:
    return seal(key, pack_encoding(encoding), template_aad(SITE, ticket_id, holder_id))


def season(ticket_id: str) -> Ticket:
    return make_ticket(ProductKind.SEASON, ticket_id=ticket_id, code=f"SEASON-{ticket_id}")


def apply(store: GateStore, *changes: Change) -> None:
    for change in changes:
        edge_store.apply_change(store, change, edge_store.feed_seq(store) + 1, gate="g1", fresh=NOW)


def faces(store: GateStore) -> list[tuple[str, str, str]]:
    return list(store_faces.all_faces(store))


def clouds_checksum(tickets: dict[str, TicketStatus], templates: list[tuple[str, str, str]]) -> str:
    """What the cloud sums for the same set (`models.sync.TicketSetChecksum`, fed in ticket-id order)."""
    checksum = TicketSetChecksum()
    for ticket_id, status in sorted(tickets.items()):
        checksum.add(ticket_id, status)
    for face in sorted(templates):
        checksum.add_face(*face)
    return checksum.hexdigest()


# --- the feed ----------------------------------------------------------------------------------


def test_a_face_upsert_stores_the_sealed_text_and_a_later_one_replaces_it(store: GateStore) -> None:
    first, again = sealed("5001", "h1"), sealed("5001", "h1", [v / 2 for v in ENCODING])
    apply(store, FaceUpsert(ticket_id="5001", holder_id="h1", sealed=first))
    assert faces(store) == [("5001", "h1", first)]
    apply(store, FaceUpsert(ticket_id="5001", holder_id="h1", sealed=again))  # enrolled again
    assert faces(store) == [("5001", "h1", again)]
    assert store_faces.count(store) == 1
    assert edge_store.feed_seq(store) == 2


def test_a_face_delete_removes_the_template_and_a_scrubbed_upsert_stores_nothing(store: GateStore) -> None:
    kept = sealed("5001", "h1")
    apply(
        store,
        FaceUpsert(ticket_id="5001", holder_id="h1", sealed=kept),
        FaceUpsert(ticket_id="5002", holder_id="h2", sealed=None),  # deleted since: the cloud scrubbed it
        FaceUpsert(ticket_id="5001", holder_id="h1", sealed=None),  # a scrubbed one leaves what is held
    )
    assert faces(store) == [("5001", "h1", kept)]
    apply(store, FaceDelete(ticket_id="5002"), FaceDelete(ticket_id="5001"))  # 5002 was never held: no matter
    assert faces(store) == []
    assert edge_store.feed_seq(store) == 5


def test_a_face_change_commits_with_its_feed_position(store: GateStore, tmp_path: Path) -> None:
    apply(store, FaceUpsert(ticket_id="5001", holder_id="h1", sealed=sealed("5001", "h1")))
    other = GateStoreReader(tmp_path / "gate.db")  # another connection sees only what is committed
    assert other.feed_seq() == 1
    assert other.ticket_checksum() == clouds_checksum({}, faces(store))


# --- the checksum ------------------------------------------------------------------------------


def test_the_stores_checksum_sums_tickets_then_faces_as_the_cloud_does(store: GateStore, tmp_path: Path) -> None:
    # ids chosen so that text order is not number order: "10" < "9" < "a"
    templates = [("a", "h3", sealed("a", "h3")), ("10", "h1", sealed("10", "h1")), ("9", "h2", sealed("9", "h2"))]
    apply(
        store,
        TicketUpsert(ticket=season("9")),
        TicketUpsert(ticket=season("10")),
        TicketUpsert(ticket=season("a")),
        *(FaceUpsert(ticket_id=t, holder_id=h, sealed=s) for t, h, s in templates),
    )
    store.set_status("10", TicketStatus.BLOCKED, "lost card")
    tickets = {"9": TicketStatus.VALID, "10": TicketStatus.BLOCKED, "a": TicketStatus.VALID}
    expected = clouds_checksum(tickets, templates)
    assert edge_store.ticket_checksum(store) == expected
    assert read_checksum(tmp_path / "gate.db") == (edge_store.feed_seq(store), expected)  # the status's path
    apply(store, FaceDelete(ticket_id="9"))
    assert edge_store.ticket_checksum(store) == clouds_checksum(tickets, [templates[0], templates[1]])
    apply(store, FaceDelete(ticket_id="a"), FaceDelete(ticket_id="10"))
    assert edge_store.ticket_checksum(store) == ticket_set_checksum(tickets.items()), "no faces: as before faces"


# --- snapshots ---------------------------------------------------------------------------------


def stage(
    path: Path,
    tickets: list[Ticket],
    templates: list[tuple[str, str, str]],
    statuses: dict[str, TicketStatus] | None = None,
) -> str:
    staging = SnapshotStaging(path)
    try:
        staging.add_tickets([(t.ticket_id, t.code, t.status.value, t.model_dump_json()) for t in tickets])
        for ticket_id, status in (statuses or {}).items():
            staging.add_status(SnapshotStatus(ticket_id=ticket_id, status=status))
        for ticket_id, holder_id, text in templates:
            staging.add_face(SnapshotFace(ticket_id=ticket_id, holder_id=holder_id, sealed=text))
        return staging.finish()
    finally:
        staging.close()


def install(store: GateStore, checksum: str, seq: int = 40) -> None:
    install_snapshot(store, seq=seq, keys={}, checksum=checksum, fresh=NOW)


TEMPLATES = [("1", "h1", sealed("1", "h1")), ("2", "h2", sealed("2", "h2")), ("3", "h3", sealed("3", "h3"))]


@pytest.mark.parametrize(
    ("order", "statuses"),
    [
        pytest.param(TEMPLATES, None, id="in-order"),
        pytest.param(TEMPLATES[::-1], None, id="faces-out-of-order"),
        pytest.param(TEMPLATES, {"2": TicketStatus.REVOKED}, id="a-status-line-changes-a-ticket"),
    ],
)
def test_a_snapshot_with_faces_installs_them_and_its_checksum_is_the_clouds(
    store: GateStore,
    tmp_path: Path,
    order: list[tuple[str, str, str]],
    statuses: dict[str, TicketStatus] | None,
) -> None:
    apply(store, FaceUpsert(ticket_id="9", holder_id="h9", sealed=sealed("9", "h9")))  # not in the snapshot
    tickets = [season("1"), season("2"), season("3")]
    checksum = stage(Path(store.path), tickets, order, statuses)
    expected = {t.ticket_id: (statuses or {}).get(t.ticket_id, t.status) for t in tickets}
    assert checksum == clouds_checksum(expected, TEMPLATES)
    install(store, checksum)
    assert faces(store) == TEMPLATES
    assert edge_store.ticket_checksum(store) == checksum


def test_a_snapshot_without_faces_leaves_no_template(store: GateStore, tmp_path: Path) -> None:
    apply(store, FaceUpsert(ticket_id="1", holder_id="h1", sealed=sealed("1", "h1")))
    checksum = stage(Path(store.path), [season("1")], [])  # an older cloud's: no face lines
    assert checksum == ticket_set_checksum([("1", TicketStatus.VALID)])
    install(store, checksum)
    assert faces(store) == []


def test_a_snapshot_repeating_a_face_is_refused_and_changes_nothing(store: GateStore, tmp_path: Path) -> None:
    held = sealed("1", "h1")
    apply(store, TicketUpsert(ticket=season("1")), FaceUpsert(ticket_id="1", holder_id="h1", sealed=held))
    twice = [("2", "h2", sealed("2", "h2")), ("2", "h2", sealed("2", "h2"))]
    with pytest.raises(SnapshotError, match="twice"):
        stage(Path(store.path), [season("2")], twice)
    # Installed anyway (its checksum never verified): the refused staging is gone, nothing to swap in.
    with pytest.raises(SnapshotError, match="no snapshot is staged"):
        install(store, "0" * 64)
    assert faces(store) == [("1", "h1", held)]
    assert store.ticket("1") is not None and store.ticket("2") is None
    assert edge_store.feed_seq(store) == 2


def test_an_older_store_gets_the_face_tables_and_columns_when_opened(tmp_path: Path) -> None:
    older = SCHEMA.replace(",\n    face_distance REAL", "").split("CREATE TABLE IF NOT EXISTS face_templates")[0]
    assert "face_distance" not in older
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.executescript(older)
    store = GateStore(tmp_path / "old.db")
    try:
        assert "face_distance" in {row[1] for row in store.conn.execute("PRAGMA table_info(passages)")}
        assert store_faces.count(store) == 0
    finally:
        store.close()
    GateStore(tmp_path / "old.db").close()  # and opens again once it has them


# --- private at rest ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_encoding() -> list[float]:
    """The 128-d encoding of a real photo (face_recognition, as enrollment makes it)."""
    import face_recognition

    image = face_recognition.load_image_file(str(SHARED_TESTDATA / "faces" / "obama.jpg"))
    [encoding] = face_recognition.face_encodings(image)
    return [float(v) for v in encoding]


def file_bytes(db: Path) -> bytes:
    """The store as it lies on disk: the database file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())


def windows(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data) - size + 1, size))


def test_encrypted_templates_are_unreadable_without_the_key(tmp_path: Path, real_encoding: list[float]) -> None:
    db = tmp_path / "gate.db"
    store = GateStore(db)
    text = sealed("5001", "h1", real_encoding)
    apply(store, TicketUpsert(ticket=season("5001")), FaceUpsert(ticket_id="5001", holder_id="h1", sealed=text))
    [(ticket_id, holder_id, stored)] = faces(store)
    store.close()

    raw = file_bytes(db)
    assert text.encode() in raw, "the sealed text is what the file holds"
    packed = pack_encoding(real_encoding)
    assert packed not in raw
    leaked = [w for w in windows(packed, 16) if w in raw]  # any 4 consecutive float32 values
    assert leaked == []
    as_float32 = unpack_encoding(packed)
    for v in (*real_encoding[:4], *as_float32[:4], *as_float32[-4:]):
        for printed in (repr(v), f"{v:.6f}", f"{v:.5f}"):
            assert printed.encode() not in raw, printed
    for key in (MASTER, SITE_KEY):
        assert key not in raw and face_key_text(key).encode() not in raw

    aad = template_aad(SITE, ticket_id, holder_id)
    assert unpack_encoding(unseal(SITE_KEY, stored, aad)) == pytest.approx(real_encoding, abs=1e-6)
    for key, wrong_aad in [
        (site_face_key(MASTER, "wanlong"), aad),  # another site's key
        (bytes(32), aad),  # no key at all
        (SITE_KEY, template_aad(SITE, "5002", holder_id)),  # another pass
        (SITE_KEY, template_aad(SITE, ticket_id, "h2")),  # another holder
    ]:
        with pytest.raises(FaceSealError):
            unseal(key, stored, wrong_aad)


def test_a_deleted_template_does_not_linger_in_the_file_once_checkpointed(tmp_path: Path) -> None:
    store = GateStore(tmp_path / "gate.db")
    text = sealed("5001", "h1")
    apply(store, FaceUpsert(ticket_id="5001", holder_id="h1", sealed=text))
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert text.encode() in file_bytes(Path(store.path))
    apply(store, FaceDelete(ticket_id="5001"))
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as SQLite does by itself every 1000 pages
    assert text.encode() not in file_bytes(Path(store.path))  # zeroed (secure_delete), not left in a free page
    store.close()
