"""Face templates are sealed end to end: only the site's key, for the right ticket and holder, opens them."""

from __future__ import annotations

import os

import pytest

from models.face import (
    ENCODING_BYTES,
    SEALED_MAX,
    FaceSealError,
    face_key_text,
    load_face_key,
    pack_encoding,
    seal,
    site_face_key,
    store_face_key,
    template_aad,
    unpack_encoding,
    unseal,
)
from models.sync import FaceDelete, FaceUpsert, FeedMessage, SnapshotHeader, TicketSetChecksum, ticket_set_checksum

MASTER = bytes(range(32))
ENCODING = [i / 1000 - 0.064 for i in range(128)]


def test_an_encoding_packs_to_512_bytes_and_back_as_float32() -> None:
    packed = pack_encoding(ENCODING)
    assert len(packed) == ENCODING_BYTES
    assert unpack_encoding(packed) == pytest.approx(ENCODING, abs=1e-7)


def test_an_encoding_of_another_length_is_refused() -> None:
    with pytest.raises(ValueError, match="128 values"):
        pack_encoding(ENCODING[:127])
    with pytest.raises(FaceSealError):
        unpack_encoding(b"\0" * 100)


def test_a_site_template_opens_only_with_that_sites_key_and_for_its_own_ticket_and_holder() -> None:
    north = site_face_key(MASTER, "nanshan")
    sealed = seal(north, pack_encoding(ENCODING), template_aad("nanshan", "42", "7"))
    assert len(sealed) <= SEALED_MAX
    assert unpack_encoding(unseal(north, sealed, template_aad("nanshan", "42", "7"))) == pytest.approx(ENCODING)

    other_site = site_face_key(MASTER, "wanlong")
    for key, aad in [
        (other_site, template_aad("nanshan", "42", "7")),  # another site's gates
        (north, template_aad("nanshan", "43", "7")),  # moved to another pass
        (north, template_aad("nanshan", "42", "8")),  # moved to another holder
        (store_face_key(MASTER), template_aad("nanshan", "42", "7")),  # the cloud's store key
    ]:
        with pytest.raises(FaceSealError):
            unseal(key, sealed, aad)


def test_altered_or_garbage_sealed_text_does_not_open() -> None:
    key = site_face_key(MASTER, "nanshan")
    aad = template_aad("nanshan", "42", "7")
    sealed = seal(key, pack_encoding(ENCODING), aad)
    flipped = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    for bad in [flipped, "not base64!", "QUJD"]:
        with pytest.raises(FaceSealError):
            unseal(key, bad, aad)


def test_sealing_twice_gives_different_text_under_a_fresh_nonce() -> None:
    key = site_face_key(MASTER, "nanshan")
    aad = template_aad("nanshan", "42", "7")
    assert seal(key, b"x" * 512, aad) != seal(key, b"x" * 512, aad)


def test_site_keys_differ_per_site_and_a_face_key_round_trips_as_text() -> None:
    assert site_face_key(MASTER, "a") != site_face_key(MASTER, "b")
    key = os.urandom(32)
    assert load_face_key(face_key_text(key) + "\n") == key
    for bad in ["", "short", face_key_text(b"x" * 16)]:
        with pytest.raises(ValueError, match="face key"):
            load_face_key(bad)


def test_face_changes_travel_on_the_feed() -> None:
    sealed = seal(site_face_key(MASTER, "s"), pack_encoding(ENCODING), template_aad("s", "42", "7"))
    for change in [FaceUpsert(ticket_id="42", holder_id="7", sealed=sealed), FaceDelete(ticket_id="42")]:
        message = FeedMessage(site="s", seq=3, at="2026-12-03T10:00:00Z", change=change)
        assert FeedMessage.model_validate_json(message.model_dump_json()).change == change


def test_a_snapshot_header_without_faces_reads_as_an_older_cloud_wrote_it() -> None:
    header = SnapshotHeader(site="s", seq=1, tickets=0, checksum="0" * 64, keys={})
    assert "faces" not in header.model_dump_json()
    assert '"faces":2' in header.model_copy(update={"faces": 2}).model_dump_json()


def test_a_set_without_faces_sums_as_before_and_faces_change_the_sum() -> None:
    plain = ticket_set_checksum([("1", "valid"), ("2", "revoked")])  # type: ignore[list-item]
    checksum = TicketSetChecksum()
    checksum.add("1", "valid")
    checksum.add("2", "revoked")
    assert checksum.hexdigest() == plain
    checksum.add_face("2", "7", "sealed-a")
    with_face = checksum.hexdigest()
    assert with_face != plain

    reenrolled = TicketSetChecksum()
    reenrolled.add("1", "valid")
    reenrolled.add("2", "revoked")
    reenrolled.add_face("2", "7", "sealed-b")
    assert reenrolled.hexdigest() != with_face


def test_faces_come_after_the_tickets_in_id_order() -> None:
    checksum = TicketSetChecksum()
    checksum.add_face("5", "1", "x")
    with pytest.raises(ValueError, match="tickets after face"):
        checksum.add("6", "valid")
    with pytest.raises(ValueError, match="out of order"):
        checksum.add_face("4", "1", "x")
