"""Minimum retention of faces in the cloud: a face lives only while a consenting holder's pass can admit them,
photos only while a site keeps them, and a withdrawal racing an enrollment still deletes what it stored."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from cloud.customers.models import Holder
from cloud.deps import Principal, Role
from cloud.faces import service
from cloud.faces.gallery import LEAD, sweep
from cloud.faces.models import FaceGalleryEntry, FaceTemplate
from cloud.tickets.models import Ticket
from harness.api import Api
from tests.cloud.faces_kit import API, PassHolder, consent_and_enroll, fake_encoder, feed, season_holder


@pytest.fixture
def holder(app: FastAPI, api: Api, site: dict[str, Any]) -> PassHolder:
    fake_encoder(app)
    return season_holder(app, api, site["id"])


def _template(app: FastAPI, holder_id: int) -> FaceTemplate | None:
    with app.state.sessionmaker() as s:
        return s.get(FaceTemplate, holder_id)


def _carried(app: FastAPI) -> list[str]:
    with app.state.sessionmaker() as s:
        return list(s.scalars(select(FaceGalleryEntry.ticket_id)))


def test_a_season_pass_whose_entries_are_used_up_loses_its_face_at_the_next_sweep(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    consent_and_enroll(api, holder)
    with app.state.sessionmaker() as s:
        s.execute(update(Ticket).where(Ticket.id == holder.ticket_id).values(status="used", entries=3, entries_used=3))
        s.commit()
        assert sweep(s, app.state.settings, now=datetime.now(UTC)) == 1
    assert feed(app, site["id"])[-1][1]["kind"] == "face_delete"
    assert _template(app, holder.holder_id) is None and _carried(app) == []


def test_turning_photo_keeping_off_deletes_the_photos_kept_for_that_site(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    url = f"{API}/sites/{site['id']}/face-settings"
    assert api.as_(Role.ADMIN).put(url, json={"keep_photos": True}).status_code == 200
    assert consent_and_enroll(api, holder)["photo_kept"] is True
    assert api.as_(Role.ADMIN).put(url, json={"keep_photos": False}).status_code == 200
    template = _template(app, holder.holder_id)
    assert template is not None and template.photo_sealed is None  # the face stays, the photo goes
    assert api.as_(Role.CASHIER).get(f"{holder.window}/photo").status_code == 404
    assert api.as_(Role.CUSTOMER).get(holder.me).json()["photo_kept"] is False


def test_a_pass_for_later_carries_the_face_to_the_gates_only_a_day_before_it_starts(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    now = datetime.now(UTC)
    starts = now + timedelta(days=10)
    with app.state.sessionmaker() as s:
        s.execute(update(Ticket).where(Ticket.id == holder.ticket_id).values(valid_from=starts))
        s.commit()
    consent_and_enroll(api, holder)
    assert _template(app, holder.holder_id) is not None and feed(app, site["id"], "face") == []
    with app.state.sessionmaker() as s:
        assert sweep(s, app.state.settings, now=starts - LEAD - timedelta(hours=1)) == 0
        assert sweep(s, app.state.settings, now=starts - LEAD + timedelta(hours=1)) == 1
    assert [body["ticket_id"] for _, body in feed(app, site["id"], "face")] == [str(holder.ticket_id)]


def test_a_template_that_no_longer_opens_is_deleted_and_never_stops_a_sale(
    app: FastAPI, api: Api, site: dict[str, Any], holder: PassHolder
) -> None:
    consent_and_enroll(api, holder)
    with app.state.sessionmaker() as s:  # as if sealed under a master key since replaced
        s.execute(update(FaceTemplate).values(sealed="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        s.commit()
    other = api.as_(Role.ADMIN).post(f"{API}/sites", json={"code": "beidahu", "name": "北大湖"}).json()
    second = season_holder(app, api, other["id"], holder_id=holder.holder_id)  # paid and issued all the same
    assert second.ticket_id > 0
    assert _template(app, holder.holder_id) is None and feed(app, other["id"], "face") == []


def test_an_unreadable_upload_does_not_echo_the_image_librarys_words(
    app: FastAPI, api: Api, holder: PassHolder
) -> None:
    from drivers.face import EnrollmentError

    fake_encoder(app, EnrollmentError("unreadable_image", "x", {"reason": "cannot identify <_io.BytesIO at 0x7f>"}))
    me = api.as_(Role.CUSTOMER)
    assert me.post(f"{holder.me}/consent", json={"text_version": "2026-12"}).status_code == 201
    r = me.put(holder.me, files={"photo": ("me.jpg", b"junk", "image/jpeg")})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unreadable_image"
    assert "BytesIO" not in r.text


def test_a_withdrawal_racing_an_enrollment_still_deletes_what_the_enrollment_stored(
    app: FastAPI, api: Api, holder: PassHolder, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite transactions begin IMMEDIATE: the two cannot interleave")
    me = api.as_(Role.CUSTOMER)
    assert me.post(f"{holder.me}/consent", json={"text_version": "2026-12"}).status_code == 201
    customer = Principal(role=Role.CUSTOMER, subject_id=holder.customer_id, name="c")

    def withdraw() -> None:
        with app.state.sessionmaker() as other:
            h = other.get(Holder, holder.holder_id)
            assert h is not None
            service.withdraw_consent(other, app.state.settings, customer, h, now=datetime.now(UTC))

    racer = threading.Thread(target=withdraw)
    real = service.keeps_photos

    def withdraw_meanwhile(session: Any, site_ids: Any) -> bool:  # runs after the enrollment's consent check
        racer.start()
        return real(session, site_ids)

    monkeypatch.setattr(service, "keeps_photos", withdraw_meanwhile)
    r = me.put(holder.me, files={"photo": ("me.jpg", b"photo", "image/jpeg")})
    racer.join(30)
    assert not racer.is_alive()
    assert r.status_code in (200, 409), r.text
    assert _template(app, holder.holder_id) is None and _carried(app) == []
