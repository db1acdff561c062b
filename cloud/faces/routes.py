"""Face admission's endpoints: the customer's own holders, the same at the window, and the back office.

Sync routes: the photo is encoded in the worker thread that runs the request, never on the event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Response, UploadFile

from cloud.db import utcnow
from cloud.deps import IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, require
from cloud.faces import deletions, errors, service
from cloud.faces.encoder import Enroller, get_face_encoder
from cloud.faces.schemas import (
    ConsentIn,
    ConsentOut,
    DeletionOut,
    EnrollmentOut,
    FaceRecordOut,
    FaceSettingsIn,
    FaceSettingsOut,
)
from cloud.sites.service import get_site

router = APIRouter(tags=["faces"], route_class=TransactionScopedRoute)
Me = Annotated[Principal, Depends(require(Role.CUSTOMER))]
Window = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
BackOffice = Annotated[Principal, Depends(require(Role.ADMIN, Role.GATE_TECH))]
EncoderDep = Annotated[Enroller, Depends(get_face_encoder)]
Photo = Annotated[UploadFile, File(description="One photo of the holder alone (JPEG, PNG or WebP), at most 5 MiB")]
MAX_PHOTO_BYTES = 5 * 1024 * 1024  # drivers.face.MAX_PHOTO_BYTES, without importing the encoder to read it

ME = "/customers/me/holders/{holder_id}/face"
STAFF = "/customers/{customer_id}/holders/{holder_id}/face"


def _read(photo: UploadFile) -> bytes:
    data = photo.file.read(MAX_PHOTO_BYTES + 1)
    if len(data) > MAX_PHOTO_BYTES:
        raise errors.enrollment_refused("file_too_large", {"max_bytes": MAX_PHOTO_BYTES})
    return data


# --- the customer, for their own holders (registered before the staff paths: "me" is no customer id) ---------


@router.post(f"{ME}/consent", status_code=201)
def consent_me(holder_id: IdPath, body: ConsentIn, session: SessionDep, who: Me) -> ConsentOut:
    """Record the holder's separate consent to face admission (before any photo)."""
    holder = service.holder_of(session, who, holder_id)
    return service.give_consent(session, who, holder, body.text_version, now=utcnow())


@router.post(f"{ME}/consent/withdraw")
def withdraw_me(holder_id: IdPath, session: SessionDep, settings: SettingsDep, who: Me) -> FaceRecordOut:
    """Withdraw consent: the face is deleted in the cloud and on every gate."""
    holder = service.holder_of(session, who, holder_id)
    service.withdraw_consent(session, settings, who, holder, now=utcnow())
    return service.held_about(session, holder)


@router.put(ME)
def enroll_me(
    holder_id: IdPath, photo: Photo, session: SessionDep, settings: SettingsDep, encoder: EncoderDep, who: Me
) -> EnrollmentOut:
    """Enroll (or replace) the holder's face from one photo; 422 says why a photo cannot be used."""
    holder = service.holder_of(session, who, holder_id)
    return service.enroll(session, settings, encoder, who, holder, _read(photo), now=utcnow())


@router.get(ME)
def held_me(holder_id: IdPath, session: SessionDep, who: Me) -> FaceRecordOut:
    """What is held about the holder's face (never the encoding)."""
    return service.held_about(session, service.holder_of(session, who, holder_id))


@router.delete(ME)
def delete_me(holder_id: IdPath, session: SessionDep, settings: SettingsDep, who: Me) -> FaceRecordOut:
    """Delete the holder's face in the cloud and on every gate."""
    holder = service.holder_of(session, who, holder_id)
    service.request_deletion(session, settings, who, holder, now=utcnow())
    return service.held_about(session, holder)


# --- the same at the window, for a customer's holder ----------------------------------------------------------


@router.post(f"{STAFF}/consent", status_code=201)
def consent_window(
    customer_id: IdPath, holder_id: IdPath, body: ConsentIn, session: SessionDep, actor: Window
) -> ConsentOut:
    """Record the consent the holder gave at the window (the staff member is recorded with it)."""
    holder = service.holder_of(session, actor, holder_id, customer_id)
    return service.give_consent(session, actor, holder, body.text_version, now=utcnow())


@router.post(f"{STAFF}/consent/withdraw")
def withdraw_window(
    customer_id: IdPath, holder_id: IdPath, session: SessionDep, settings: SettingsDep, actor: Window
) -> FaceRecordOut:
    holder = service.holder_of(session, actor, holder_id, customer_id)
    service.withdraw_consent(session, settings, actor, holder, now=utcnow())
    return service.held_about(session, holder)


@router.put(STAFF)
def enroll_window(
    customer_id: IdPath,
    holder_id: IdPath,
    photo: Photo,
    session: SessionDep,
    settings: SettingsDep,
    encoder: EncoderDep,
    actor: Window,
) -> EnrollmentOut:
    holder = service.holder_of(session, actor, holder_id, customer_id)
    return service.enroll(session, settings, encoder, actor, holder, _read(photo), now=utcnow())


@router.get(STAFF)
def held_window(customer_id: IdPath, holder_id: IdPath, session: SessionDep, actor: Window) -> FaceRecordOut:
    return service.held_about(session, service.holder_of(session, actor, holder_id, customer_id))


@router.delete(STAFF)
def delete_window(
    customer_id: IdPath, holder_id: IdPath, session: SessionDep, settings: SettingsDep, actor: Window
) -> FaceRecordOut:
    holder = service.holder_of(session, actor, holder_id, customer_id)
    service.request_deletion(session, settings, actor, holder, now=utcnow())
    return service.held_about(session, holder)


_IMAGE: dict[int | str, dict[str, Any]] = {200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}}


@router.get(f"{STAFF}/photo", response_class=Response, responses=_IMAGE)
def photo_window(
    customer_id: IdPath, holder_id: IdPath, session: SessionDep, settings: SettingsDep, actor: Window
) -> Response:
    """The kept enrollment photo, for the cashier's photo compare (sites that keep photos only; audited)."""
    holder = service.holder_of(session, actor, holder_id, customer_id)
    photo = service.photo_for_compare(session, settings, actor, holder)
    return Response(photo, media_type=_media_type(photo), headers={"Cache-Control": "no-store"})


def _media_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


# --- back office ------------------------------------------------------------------------------------------------


@router.get("/sites/{site_id}/face-deletions")
def site_deletions(
    site_id: IdPath,
    session: SessionDep,
    _: BackOffice,
    pending: Annotated[bool, Query(description="Only deletions some gate has not confirmed")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeletionOut]:
    """Face templates deleted from the site's gates, newest first: "deleted on north-1 at 10:02:11", and the
    gates still pending."""
    get_site(session, site_id)
    return deletions.of_site(session, site_id, pending_only=pending, limit=limit)


@router.get("/sites/{site_id}/face-settings")
def get_settings(site_id: IdPath, session: SessionDep, _: Admin) -> FaceSettingsOut:
    return service.site_settings(session, site_id)


@router.put("/sites/{site_id}/face-settings")
def put_settings(
    site_id: IdPath, body: FaceSettingsIn, session: SessionDep, settings: SettingsDep, actor: Admin
) -> FaceSettingsOut:
    """Keep enrollment photos (sealed) for the cashier's compare at this site: off by default; off deletes the
    photos kept for it."""
    return service.set_site_settings(session, settings, actor, site_id, body.keep_photos, now=utcnow())
