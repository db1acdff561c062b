"""Face admission in the cloud: separate consent, enrollment from one photo, what is held, deletion.

Decisions (the issue leaves them open):
* Enrollment needs the holder's active consent **and** a valid season pass: a face is held only while
  it can admit someone (minimum retention); a pass bought later for an enrolled holder carries it too.
* A new consent (another text version) closes the earlier record as superseded; the template stays.
* Withdrawing consent and asking for deletion both delete the template and photo in the cloud and on
  every gate at once; the consent records stay as the evidence of what was agreed and when.
* The photo is kept (sealed) only when a site where the holder has a valid season pass keeps photos
  for the cashier's compare; otherwise it is discarded once encoded. Viewing it is audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.customers.models import Holder
from cloud.deps import Principal, Role
from cloud.errors import not_found
from cloud.faces import deletions, errors
from cloud.faces.encoder import encode
from cloud.faces.gallery import LEAD, active_consent, keeps_photos, photo_aad, reconcile, store_aad, valid_season_passes
from cloud.faces.models import FaceConsent, FaceGalleryEntry, FaceSiteSettings, FaceTemplate
from cloud.faces.schemas import CarriedOut, ConsentOut, EnrollmentOut, FaceRecordOut, FaceSettingsOut
from cloud.settings import Settings
from cloud.sites.models import Site
from cloud.sites.service import get_site
from cloud.tickets.models import Ticket
from models.face import pack_encoding, seal, store_face_key, unseal

if TYPE_CHECKING:
    from cloud.faces.encoder import Enroller


def holder_of(session: Session, actor: Principal, holder_id: int, customer_id: int | None = None) -> Holder:
    """The holder, if the caller may act for them: a customer for their own, staff for the named customer's."""
    owner = actor.subject_id if actor.role is Role.CUSTOMER else customer_id
    holder = session.get(Holder, holder_id)
    if holder is None or owner is None or holder.customer_id != owner:
        raise not_found("Holder", "持卡人", holder_id)
    return holder


def _consent_out(c: FaceConsent) -> ConsentOut:
    return ConsentOut.model_validate(c, from_attributes=True)


def give_consent(session: Session, actor: Principal, holder: Holder, text_version: str, *, now: datetime) -> ConsentOut:
    """Record the separate consent, through the mini-program (the customer) or at the window (the staff member)."""
    channel = "mini_program" if actor.role is Role.CUSTOMER else "window"
    earlier = active_consent(session, holder.id)
    if earlier is not None:
        earlier.withdrawn_at, earlier.withdrawn_by = now, f"superseded by {actor.actor}"
    consent = FaceConsent(
        holder_id=holder.id, channel=channel, text_version=text_version, given_by=actor.actor, given_at=now
    )
    session.add(consent)
    record(
        session, actor, "face.consent_given", "holder", holder.id, {"channel": channel, "text_version": text_version}
    )
    session.commit()
    return _consent_out(consent)


def withdraw_consent(session: Session, settings: Settings, actor: Principal, holder: Holder, *, now: datetime) -> None:
    """Withdraw: the template and photo are deleted in the cloud and on every gate. Withdrawing twice is a no-op."""
    consent = active_consent(session, holder.id)
    if consent is None:
        return
    consent.withdrawn_at, consent.withdrawn_by = now, actor.actor
    record(session, actor, "face.consent_withdrawn", "holder", holder.id, {"text_version": consent.text_version})
    reconcile(
        session, settings.face_key, holder.id, reason="consent_withdrawn", actor=actor, now=now, drop_template=True
    )
    session.commit()


def request_deletion(session: Session, settings: Settings, actor: Principal, holder: Holder, *, now: datetime) -> None:
    """The holder asks for deletion: template and photo go, in the cloud and on every gate."""
    template = session.get(FaceTemplate, holder.id)
    gallery = session.scalar(select(FaceGalleryEntry.ticket_id).where(FaceGalleryEntry.holder_id == holder.id))
    if template is None and gallery is None:
        return
    reconcile(session, settings.face_key, holder.id, reason="holder_request", actor=actor, now=now, drop_template=True)
    session.commit()


def enroll(
    session: Session,
    settings: Settings,
    encoder: Enroller,
    actor: Principal,
    holder: Holder,
    photo: bytes,
    *,
    now: datetime,
) -> EnrollmentOut:
    """One photo to the holder's template (replacing any earlier one), sent to the gates of their passes' sites.

    The photo is encoded outside any transaction (a second or so of dlib must not hold SQLite's lock);
    consent is checked before and again after.
    """
    master = settings.face_key
    if master is None:
        raise errors.face_key_missing()
    holder_id = holder.id
    _check_enrollable(session, holder_id, now)
    session.rollback()
    from drivers.face import EnrollmentError

    try:
        enrolled = encode(encoder, photo)
    except EnrollmentError as exc:
        raise errors.enrollment_refused(exc.code, exc.details) from exc
    # The holder's row lock (as `reconcile` takes it) first: a withdrawal racing this enrollment either
    # commits before (and this check refuses) or waits, and then deletes what this enrollment stored.
    session.get(Holder, holder_id, with_for_update=True)
    passes = _check_enrollable(session, holder_id, now)
    store_key = store_face_key(master)
    keep = keeps_photos(session, {t.site_id for t in passes if t.valid_from <= now + LEAD})
    template = session.get(FaceTemplate, holder_id)
    if template is None:
        template = FaceTemplate(holder_id=holder_id)
        session.add(template)
    template.sealed = seal(store_key, pack_encoding(enrolled.encoding.tolist()), store_aad(holder_id))
    template.photo_sealed = seal(store_key, photo, photo_aad(holder_id)) if keep else None
    template.face_px = enrolled.quality.face_px
    template.enrolled_at, template.enrolled_by = now, actor.actor
    session.flush()
    reconcile(session, master, holder_id, reason="re_enrolled", actor=actor, now=now, replace=True)
    carried = _carried(session, holder_id)
    detail = {"face_px": template.face_px, "photo_kept": keep, "sites": sorted({c.site_code for c in carried})}
    record(session, actor, "face.enroll", "holder", holder_id, detail)
    session.commit()
    return EnrollmentOut(
        holder_id=holder_id, enrolled_at=now, face_px=template.face_px, photo_kept=keep, carried_by=carried
    )


def _check_enrollable(session: Session, holder_id: int, now: datetime) -> list[Ticket]:
    if active_consent(session, holder_id) is None:
        raise errors.consent_required(holder_id)
    passes = valid_season_passes(session, holder_id, now)
    if not passes:
        raise errors.no_season_pass(holder_id)
    return passes


def _carried(session: Session, holder_id: int) -> list[CarriedOut]:
    rows = session.execute(
        select(Site.code, FaceGalleryEntry.ticket_id, FaceGalleryEntry.since)
        .join(Site, Site.id == FaceGalleryEntry.site_id)
        .where(FaceGalleryEntry.holder_id == holder_id)
        .order_by(Site.code)
    )
    return [CarriedOut(site_code=code, ticket_id=ticket_id, since=since) for code, ticket_id, since in rows]


def held_about(session: Session, holder: Holder) -> FaceRecordOut:
    """What is held about the holder's face: consent, enrollment, where it is carried, deletions; never the encoding."""
    latest = session.scalar(
        select(FaceConsent).where(FaceConsent.holder_id == holder.id).order_by(FaceConsent.id.desc()).limit(1)
    )
    template = session.get(FaceTemplate, holder.id)
    return FaceRecordOut(
        holder_id=holder.id,
        consent=_consent_out(latest) if latest is not None else None,
        enrolled=template is not None,
        enrolled_at=template.enrolled_at if template is not None else None,
        photo_kept=template is not None and template.photo_sealed is not None,
        carried_by=_carried(session, holder.id),
        deletions=deletions.of_holder(session, holder.id),
    )


def photo_for_compare(session: Session, settings: Settings, actor: Principal, holder: Holder) -> bytes:
    """The kept enrollment photo, for the cashier's compare; each viewing is audited."""
    template = session.get(FaceTemplate, holder.id)
    if template is None:
        raise errors.no_face_enrolled(holder.id)
    if template.photo_sealed is None:
        raise errors.no_photo_kept(holder.id)
    if settings.face_key is None:
        raise errors.face_key_missing()
    photo = unseal(store_face_key(settings.face_key), template.photo_sealed, photo_aad(holder.id))
    record(session, actor, "face.photo_viewed", "holder", holder.id, {})
    session.commit()
    return photo


def site_settings(session: Session, site_id: int) -> FaceSettingsOut:
    get_site(session, site_id)
    row = session.get(FaceSiteSettings, site_id)
    return FaceSettingsOut(site_id=site_id, keep_photos=row is not None and row.keep_photos)


def set_site_settings(
    session: Session, settings: Settings, actor: Principal, site_id: int, keep_photos: bool, *, now: datetime
) -> FaceSettingsOut:
    """Turn keeping photos on (for enrollments from now on) or off: off deletes the photos kept for this site's
    holders at once, unless another site they are carried to keeps photos."""
    get_site(session, site_id)
    row = session.get(FaceSiteSettings, site_id)
    if row is None:
        row = FaceSiteSettings(site_id=site_id, keep_photos=keep_photos)
        session.add(row)
    row.keep_photos = keep_photos
    record(session, actor, "face.settings", "site", site_id, {"keep_photos": keep_photos})
    if not keep_photos:
        session.flush()
        holders = session.scalars(
            select(FaceGalleryEntry.holder_id)
            .join(FaceTemplate, FaceTemplate.holder_id == FaceGalleryEntry.holder_id)
            .where(FaceGalleryEntry.site_id == site_id, FaceTemplate.photo_sealed.is_not(None))
        )
        for holder_id in sorted(set(holders)):
            reconcile(session, settings.face_key, holder_id, reason="photos_off", actor=actor, now=now)
    session.commit()
    return FaceSettingsOut(site_id=site_id, keep_photos=keep_photos)
