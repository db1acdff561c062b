"""Face admission in the cloud, with a fake encoder (real photos: test_faces_enrollment.py): consent first,
templates down the feed sealed for their site, deleted everywhere on refund, withdrawal, request or pass end,
snapshots and their checksum, and each gate's confirmation of a deletion."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from cloud.audit.models import AuditEntry
from cloud.deps import Role
from cloud.faces.gallery import sweep
from cloud.faces.models import FaceConsent, FaceGalleryEntry, FaceTemplate
from cloud.sync import service as sync_service
from cloud.sync.inbound import StatusIn
from cloud.tickets.models import Ticket
from drivers.face import EnrollmentError
from harness.api import Api
from harness.keys import FACE_KEY
from models.face import FaceSealError, pack_encoding, site_face_key, template_aad, unseal
from models.sync import FaceUpsert, GateStatus, SnapshotFace, SnapshotHeader, TicketSetChecksum
from tests.cloud.faces_kit import API, ENCODING, PassHolder, consent_and_enroll, fake_encoder, feed, season_holder
from tests.cloud.paid_orders import add_holder, another_customer


@pytest.fixture
def holder(app: FastAPI, api: Api, site: dict[str, Any]) -> PassHolder:
    fake_encoder(app)
    return season_holder(app, api, site["id"])


def _error(r: Any) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def _audit(app: FastAPI, holder_id: int) -> list[AuditEntry]:
    with app.state.sessionmaker() as s:
        q = select(AuditEntry).where(AuditEntry.entity == "holder", AuditEntry.entity_id == str(holder_id))
        return list(s.scalars(q.order_by(AuditEntry.id)))


def _template(app: FastAPI, holder_id: int) -> FaceTemplate | None:
    with app.state.sessionmaker() as s:
        return s.get(FaceTemplate, holder_id)


def test_a_photo_without_the_holders_separate_consent_is_refused(app: FastAPI, api: Api, holder: PassHolder) -> None:
    photo = {"photo": ("me.jpg", b"photo", "image/jpeg")}
    assert _error(api.as_(Role.CUSTOMER).put(holder.me, files=photo)) == (409, "face_consent_required")
    assert _error(api.as_(Role.CASHIER).put(holder.window, files=photo)) == (409, "face_consent_required")
    assert _template(app, holder.holder_id) is None and feed(app, 1, "face") == []


def test_a_holder_without_a_season_pass_is_not_enrolled(app: FastAPI, api: Api, site: dict[str, Any]) -> None:
    fake_encoder(app)
    api.token(Role.CUSTOMER)
    assert api.customer_id is not None
    holder_id = add_holder(app, api.customer_id)
    me = api.as_(Role.CUSTOMER)
    url = f"{API}/customers/me/holders/{holder_id}/face"
    assert me.post(f"{url}/consent", json={"text_version": "2026-12"}).status_code == 201
    assert _error(me.put(url, files={"photo": ("me.jpg", b"x", "image/jpeg")})) == (409, "no_season_pass")


def test_an_enrolled_face_goes_down_its_sites_feed_sealed_so_only_that_sites_gates_open_it(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    out = consent_and_enroll(api, holder)
    assert out["photo_kept"] is False and out["face_px"] == 180
    assert [c["ticket_id"] for c in out["carried_by"]] == [str(holder.ticket_id)]

    [(_, body)] = feed(app, site["id"], "face")
    upsert = FaceUpsert.model_validate(body)
    assert (upsert.ticket_id, upsert.holder_id) == (str(holder.ticket_id), str(holder.holder_id))
    assert upsert.sealed is not None
    aad = template_aad("nanshan", upsert.ticket_id, upsert.holder_id)
    assert unseal(site_face_key(FACE_KEY, "nanshan"), upsert.sealed, aad) == pack_encoding(ENCODING.tolist())
    with pytest.raises(FaceSealError):
        unseal(site_face_key(FACE_KEY, "beidahu"), upsert.sealed, aad)
    with pytest.raises(FaceSealError):  # moved to another pass, it does not open either
        unseal(site_face_key(FACE_KEY, "nanshan"), upsert.sealed, template_aad("nanshan", "999", upsert.holder_id))

    actions = [e.action for e in _audit(app, holder.holder_id)]
    assert actions == ["face.consent_given", "face.enroll"]
    logged = json.dumps([e.detail for e in _audit(app, holder.holder_id)])
    assert upsert.sealed not in logged and "encoding" not in logged
    record = api.as_(Role.CUSTOMER).get(holder.me).json()
    assert record["enrolled"] and record["consent"]["channel"] == "mini_program"
    assert record["carried_by"][0]["site_code"] == "nanshan" and "encoding" not in json.dumps(record)


def test_enrolling_again_replaces_the_face_and_scrubs_the_old_one_from_the_feed(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    consent_and_enroll(api, holder)
    r = api.as_(Role.CUSTOMER).put(holder.me, files={"photo": ("me.jpg", b"again", "image/jpeg")})
    assert r.status_code == 200, r.text
    first, second = (FaceUpsert.model_validate(body) for _, body in feed(app, site["id"], "face"))
    assert first.sealed is None and second.sealed is not None
    with app.state.sessionmaker() as s:
        assert s.scalars(select(FaceGalleryEntry.sealed)).all() == [second.sealed]


def test_the_encoders_refusal_is_a_422_with_its_code_details_and_both_languages(
    app: FastAPI, api: Api, holder: PassHolder
) -> None:
    fake_encoder(app, EnrollmentError("face_too_small", "small", {"min_face_px": 120, "face_px": 64}))
    me = api.as_(Role.CUSTOMER)
    assert me.post(f"{holder.me}/consent", json={"text_version": "2026-12"}).status_code == 201
    r = me.put(holder.me, files={"photo": ("me.jpg", b"photo", "image/jpeg")})
    assert _error(r) == (422, "face_too_small")
    error = r.json()["error"]
    assert error["details"] == {"min_face_px": 120, "face_px": 64}
    assert "120 pixels" in error["message"] and "120 像素" in error["message_zh"]
    assert _template(app, holder.holder_id) is None


def test_a_photo_over_5_mib_is_refused_before_the_encoder_sees_it(app: FastAPI, api: Api, holder: PassHolder) -> None:
    fake = fake_encoder(app)
    me = api.as_(Role.CUSTOMER)
    assert me.post(f"{holder.me}/consent", json={"text_version": "2026-12"}).status_code == 201
    r = me.put(holder.me, files={"photo": ("big.jpg", b"\xff" * (5 * 1024 * 1024 + 1), "image/jpeg")})
    assert _error(r) == (422, "file_too_large") and fake.calls == 0


def test_refunding_the_pass_deletes_the_face_on_the_gates_scrubs_the_feed_and_drops_the_cloud_copy(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    consent_and_enroll(api, holder)
    r = api.as_(Role.CASHIER).post(f"{API}/orders/{holder.order_id}/refunds", json={"ticket_ids": [holder.ticket_id]})
    assert r.status_code == 201, r.text

    faces = [body for _, body in feed(app, site["id"]) if body["kind"] in ("face", "face_delete")]
    assert faces == [
        FaceUpsert(ticket_id=str(holder.ticket_id), holder_id=str(holder.holder_id), sealed=None).model_dump(
            mode="json"
        ),
        {"schema_version": 1, "kind": "face_delete", "ticket_id": str(holder.ticket_id)},
    ]
    assert _template(app, holder.holder_id) is None
    actions = [(e.action, e.detail.get("reason")) for e in _audit(app, holder.holder_id)]
    assert actions[-2:] == [("face.delete", "refunded"), ("face.template_deleted", "no_valid_pass")]
    record = api.as_(Role.CUSTOMER).get(holder.me).json()
    assert record["enrolled"] is False and record["carried_by"] == []
    assert [(d["reason"], d["ticket_id"]) for d in record["deletions"]] == [("refunded", str(holder.ticket_id))]


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        pytest.param(lambda me, url: me.post(f"{url}/consent/withdraw"), "consent_withdrawn", id="withdrawal"),
        pytest.param(lambda me, url: me.delete(url), "holder_request", id="deletion-request"),
    ],
)
def test_withdrawal_or_a_deletion_request_deletes_the_face_everywhere_in_one_call(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder, call: Any, reason: str
) -> None:
    consent_and_enroll(api, holder)
    r = call(api.as_(Role.CUSTOMER), holder.me)
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["enrolled"] is False and record["photo_kept"] is False
    assert [d["reason"] for d in record["deletions"]] == [reason]
    assert feed(app, site["id"])[-1][1]["kind"] == "face_delete"
    assert _template(app, holder.holder_id) is None
    withdrawn = record["consent"]["withdrawn_at"] is not None
    assert withdrawn is (reason == "consent_withdrawn")
    assert ("face.template_deleted", reason) in [
        (e.action, e.detail.get("reason")) for e in _audit(app, holder.holder_id)
    ]
    # The pass itself is untouched: only the face went.
    with app.state.sessionmaker() as s:
        ticket = s.get(Ticket, holder.ticket_id)
        assert ticket is not None and ticket.status == "valid"


def test_at_the_window_the_staff_member_records_consent_and_enrolls_for_the_customers_holder(
    app: FastAPI, api: Api, holder: PassHolder
) -> None:
    cashier = api.as_(Role.CASHIER)
    assert cashier.post(f"{holder.window}/consent", json={"text_version": "2026-12"}).status_code == 201
    assert cashier.put(holder.window, files={"photo": ("me.jpg", b"photo", "image/jpeg")}).status_code == 200
    record = cashier.get(holder.window).json()
    assert record["consent"]["channel"] == "window" and record["consent"]["given_by"] == "cashier:cashier-user"
    _, stranger = another_customer(api, app)
    assert _error(stranger.get(f"{API}/customers/me/holders/{holder.holder_id}/face")) == (404, "holder_not_found")
    wrong_customer = f"{API}/customers/{holder.customer_id + 1}/holders/{holder.holder_id}/face"
    assert _error(cashier.get(wrong_customer)) == (404, "holder_not_found")


def test_a_site_that_keeps_photos_lets_the_cashier_compare_and_the_photo_lies_sealed(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    assert api.as_(Role.CASHIER).get(f"{holder.window}/photo").status_code == 404
    url = f"{API}/sites/{site['id']}/face-settings"
    assert api.as_(Role.ADMIN).get(url).json() == {"site_id": site["id"], "keep_photos": False}
    assert api.as_(Role.ADMIN).put(url, json={"keep_photos": True}).status_code == 200
    photo = b"\x89PNG\r\n\x1a\n-the-holder"
    assert consent_and_enroll(api, holder, photo)["photo_kept"] is True
    template = _template(app, holder.holder_id)
    assert (
        template is not None
        and template.photo_sealed is not None
        and b"the-holder" not in base64.b64decode(template.photo_sealed)
    )
    r = api.as_(Role.CASHIER).get(f"{holder.window}/photo")
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, photo, "image/png")
    assert "face.photo_viewed" in [e.action for e in _audit(app, holder.holder_id)]


def test_a_pass_bought_after_enrollment_carries_the_face_to_that_sites_gates(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    consent_and_enroll(api, holder)
    other = api.as_(Role.ADMIN).post(f"{API}/sites", json={"code": "beidahu", "name": "北大湖"}).json()
    second = season_holder(app, api, other["id"], holder_id=holder.holder_id)
    [(_, body)] = feed(app, other["id"], "face")
    upsert = FaceUpsert.model_validate(body)
    assert upsert.ticket_id == str(second.ticket_id) and upsert.sealed is not None
    aad = template_aad("beidahu", upsert.ticket_id, upsert.holder_id)
    assert unseal(site_face_key(FACE_KEY, "beidahu"), upsert.sealed, aad) == pack_encoding(ENCODING.tolist())


def test_the_expiry_sweep_deletes_faces_of_ended_passes_and_then_the_cloud_copy(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    consent_and_enroll(api, holder)
    now = datetime.now(UTC)
    with app.state.sessionmaker() as s:
        assert sweep(s, app.state.settings, now=now) == 0  # nothing ended
        s.execute(update(Ticket).where(Ticket.id == holder.ticket_id).values(valid_until=now - timedelta(minutes=1)))
        s.commit()
        assert sweep(s, app.state.settings, now=now) == 1
        assert sweep(s, app.state.settings, now=now) == 0  # done once
    assert feed(app, site["id"])[-1][1] == {
        "schema_version": 1,
        "kind": "face_delete",
        "ticket_id": str(holder.ticket_id),
    }
    assert _template(app, holder.holder_id) is None
    with app.state.sessionmaker() as s:
        assert s.scalars(select(FaceConsent.withdrawn_at)).all() == [None]  # the consent record stays


def _gate(api: Api, site_id: int, code: str) -> dict[str, Any]:
    r = api.as_(Role.ADMIN).post(f"{API}/sites/{site_id}/gates", json={"code": code, "name": code})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_snapshot_carries_the_face_lines_after_the_statuses_and_sums_them_into_its_checksum(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    gate = _gate(api, site["id"], "north-1")
    consent_and_enroll(api, holder)
    r = api.client.get(f"{API}/sync/sites/nanshan/snapshot", auth=(gate["username"], gate["secret"]))
    assert r.status_code == 200, r.text
    lines = r.text.splitlines()
    header = SnapshotHeader.model_validate_json(lines[0])
    assert header.faces == 1 and len(lines) == 1 + header.tickets + header.faces
    face = SnapshotFace.model_validate_json(lines[-1])
    with app.state.sessionmaker() as s:
        entry = s.scalars(select(FaceGalleryEntry)).one()
        tickets = sorted((str(t.id), "valid") for t in s.scalars(select(Ticket)))
    assert (face.ticket_id, face.holder_id, face.sealed) == (entry.ticket_id, str(entry.holder_id), entry.sealed)
    checksum = TicketSetChecksum()
    for ticket_id, status in tickets:
        checksum.add(ticket_id, status)
    checksum.add_face(face.ticket_id, face.holder_id, face.sealed)
    assert header.checksum == checksum.hexdigest()
    verified = api.as_(Role.ADMIN).get(f"{API}/sites/{site['id']}/gates/status", params={"verify": True}).json()
    assert verified["checksum"] == header.checksum


def _status(site: str, gate: str, seq: int, at: datetime) -> StatusIn:
    return StatusIn(site, gate, "online", GateStatus(site=site, gate=gate, state="online", feed_seq=seq, at=at))


def test_a_gate_past_the_deletes_seq_confirms_it_once_and_the_back_office_lists_it(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    _gate(api, site["id"], "north-1")
    _gate(api, site["id"], "south-1")
    consent_and_enroll(api, holder)
    upsert_seq = feed(app, site["id"], "face")[0][0]
    with app.state.sessionmaker() as s:
        sync_service.store(s, [_status("nanshan", "north-1", upsert_seq, datetime.now(UTC))])
    assert api.as_(Role.CUSTOMER).delete(holder.me).status_code == 200
    delete_seq = feed(app, site["id"])[-1][0]
    at = datetime(2026, 12, 20, 10, 2, 11, tzinfo=ZoneInfo("Asia/Shanghai"))
    with app.state.sessionmaker() as s:
        sync_service.store(s, [_status("nanshan", "south-1", delete_seq - 1, at)])  # not yet
        sync_service.store(s, [_status("nanshan", "north-1", delete_seq, at)])
        sync_service.store(s, [_status("nanshan", "north-1", delete_seq + 5, at + timedelta(hours=1))])

    url = f"{API}/sites/{site['id']}/face-deletions"
    assert api.as_(Role.CASHIER).get(url).status_code == 403
    [deletion] = api.as_(Role.GATE_TECH).get(url).json()
    assert deletion["feed_seq"] == delete_seq and deletion["reason"] == "holder_request"
    assert deletion["summary"] == ["deleted on north-1 at 10:02:11"]
    assert deletion["pending"] == ["south-1"]
    assert api.as_(Role.ADMIN).get(url, params={"pending": True}).json() == [deletion]
    with app.state.sessionmaker() as s:
        sync_service.store(s, [_status("nanshan", "south-1", delete_seq, at + timedelta(seconds=4))])
    [deletion] = api.as_(Role.ADMIN).get(url).json()
    assert deletion["summary"] == ["deleted on north-1 at 10:02:11", "deleted on south-1 at 10:02:15"]
    assert deletion["pending"] == [] and api.as_(Role.ADMIN).get(url, params={"pending": True}).json() == []
    seen_by_holder = api.as_(Role.CUSTOMER).get(holder.me).json()["deletions"]
    assert seen_by_holder[0]["summary"] == deletion["summary"]


def test_a_passage_admitted_by_face_is_stored_with_its_distance(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    from cloud.sync.inbound import EventIn
    from cloud.sync.models import GatePassage
    from models import PassageEvent

    _gate(api, site["id"], "north-1")
    event = PassageEvent(
        gate_id="north-1",
        site_id="nanshan",
        at=datetime.now(UTC),
        direction="in",
        outcome="admit",
        code="ok",
        ticket_id=str(holder.ticket_id),
        passed=True,
        counted=True,
        credential="face",
        face_distance=0.31,
    )
    with app.state.sessionmaker() as s:
        assert sync_service.store(s, [EventIn("nanshan", "north-1", event)]).new == 1
        stored = s.scalars(select(GatePassage)).one()
    assert (stored.credential, stored.face_distance) == ("face", 0.31)
