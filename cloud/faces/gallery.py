"""Each site's face gallery, kept in step with consent, templates and season passes, down the site's feed.

`reconcile` is the one place that decides what a holder's gates hold: a consenting holder with a template
has one entry per site where they hold a valid season pass (the pass that ends first: the current one,
and the next season's when it ends), sealed with the site's key for that pass. What should not be there
any more gets a `FaceDelete`, a `FaceDeletion` row (its feed seq, for the gates' confirmations) and its
earlier `FaceUpsert` bodies scrubbed from the feed table. A holder with no valid season pass left loses
the cloud's template and photo too (minimum retention). The caller commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, cast, delete, exists, select, update
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.customers.models import Holder
from cloud.faces.models import (
    FaceConsent,
    FaceDeletion,
    FaceFeedUpsert,
    FaceGalleryEntry,
    FaceSiteSettings,
    FaceTemplate,
)
from cloud.settings import Settings
from cloud.sites.models import Site
from cloud.sync.feed import append_change
from cloud.sync.models import FeedChange
from cloud.tickets.models import Ticket, TicketState
from models import ProductKind
from models.face import FaceSealError, seal, site_face_key, store_face_key, template_aad, unseal
from models.sync import FaceDelete, FaceUpsert

log = logging.getLogger("starfish.cloud.faces")

# "used" means the gates used up the pass's entries: it admits nobody any more, so its face goes too. A
# blocked pass comes back when lifted: its face stays (its gates deny it by its status meanwhile).
_LIVE = (TicketState.VALID.value, TicketState.BLOCKED.value)
# A pass's face reaches its site's gates this long before the pass starts (a pass for next season,
# bought in summer, does not put the face on the gates months early); the sweep sends it then.
LEAD = timedelta(days=1)


def store_aad(holder_id: int) -> bytes:
    """What the cloud's own sealed template is bound to: its holder."""
    return str(holder_id).encode()


def photo_aad(holder_id: int) -> bytes:
    return f"photo:{holder_id}".encode()


def valid_season_passes(session: Session, holder_id: int, now: datetime) -> list[Ticket]:
    """The holder's season passes that have not ended, refunded or revoked, those ending first first."""
    return list(
        session.scalars(
            select(Ticket)
            .where(
                Ticket.holder_id == holder_id,
                Ticket.kind == ProductKind.SEASON.value,
                Ticket.status.in_(_LIVE),
                Ticket.valid_until > now,
            )
            .order_by(Ticket.valid_until, Ticket.id)
        )
    )


def keeps_photos(session: Session, site_ids: Iterable[int]) -> bool:
    """Does any of these sites keep enrollment photos for the cashier's compare?"""
    ids = set(site_ids)
    return bool(
        ids
        and session.scalar(
            select(FaceSiteSettings.site_id)
            .where(FaceSiteSettings.site_id.in_(ids), FaceSiteSettings.keep_photos.is_(True))
            .limit(1)
        )
    )


def active_consent(session: Session, holder_id: int) -> FaceConsent | None:
    return session.scalar(
        select(FaceConsent)
        .where(FaceConsent.holder_id == holder_id, FaceConsent.withdrawn_at.is_(None))
        .order_by(FaceConsent.id.desc())
        .limit(1)
    )


def reconcile(
    session: Session,
    master: bytes | None,
    holder_id: int,
    *,
    reason: str,
    actor: Any,
    now: datetime,
    replace: bool = False,
    drop_template: bool = False,
) -> list[FaceDeletion]:
    """Bring the holder's gallery entries to what consent, template and passes call for; returns the deletions.

    `replace`: a new template, so every entry is sent again. `drop_template`: the template goes first
    (consent withdrawn, deletion asked for). The holder's row is locked: one reconcile per holder at a time.
    """
    session.get(Holder, holder_id, with_for_update=True)
    template = session.get(FaceTemplate, holder_id)
    if template is not None and (drop_template or active_consent(session, holder_id) is None):
        _drop_template(session, template, reason if drop_template else "consent_withdrawn", actor)
        template = None
    if template is not None and master is not None and not _opens(master, template):
        # Sealed under another master key (replaced without re-sealing): useless, and never to block a sale.
        log.error("holder %d's face template does not open with the face key: deleted", holder_id)
        _drop_template(session, template, "unreadable_template", actor)
        template = None
    passes = valid_season_passes(session, holder_id, now)
    wanted: dict[int, Ticket] = {}
    if template is not None:
        for ticket in passes:
            if ticket.valid_from <= now + LEAD:
                wanted.setdefault(ticket.site_id, ticket)
    if template is not None and template.photo_sealed is not None and not keeps_photos(session, wanted):
        template.photo_sealed = None  # no site the face is carried to keeps photos (any more)
        record(session, actor, "face.photo_deleted", "holder", holder_id, {"reason": reason})
    current = {
        row.site_id: row
        for row in session.scalars(select(FaceGalleryEntry).where(FaceGalleryEntry.holder_id == holder_id))
    }
    deletions = []
    for site_id in sorted(set(current) | set(wanted)):
        row, want = current.get(site_id), wanted.get(site_id)
        if row is not None and (want is None or row.ticket_id != str(want.id)):
            deletions.append(_delete_entry(session, row, reason, actor, now))
            row = None
        if want is not None and (row is None or replace):
            if master is None:
                log.warning("no face key: holder %d's template cannot go to site %d", holder_id, site_id)
                continue
            assert template is not None
            _put_entry(session, master, template, want, now)
    if template is not None and not passes:
        _drop_template(session, template, "no_valid_pass", actor)
    return deletions


def _opens(master: bytes, template: FaceTemplate) -> bool:
    try:
        unseal(store_face_key(master), template.sealed, store_aad(template.holder_id))
    except FaceSealError:
        return False
    return True


def _drop_template(session: Session, template: FaceTemplate, reason: str, actor: Any) -> None:
    detail = {"reason": reason, "photo_deleted": template.photo_sealed is not None}
    session.delete(template)
    session.flush()
    record(session, actor, "face.template_deleted", "holder", template.holder_id, detail)


def _put_entry(session: Session, master: bytes, template: FaceTemplate, ticket: Ticket, now: datetime) -> None:
    code = session.scalar(select(Site.code).where(Site.id == ticket.site_id))
    assert code is not None
    encoding = unseal(store_face_key(master), template.sealed, store_aad(template.holder_id))
    ticket_id, holder_id = str(ticket.id), str(template.holder_id)
    sealed = seal(site_face_key(master, code), encoding, template_aad(code, ticket_id, holder_id))
    row = session.get(FaceGalleryEntry, (ticket.site_id, ticket_id))
    if row is None:
        session.add(
            FaceGalleryEntry(
                site_id=ticket.site_id, ticket_id=ticket_id, holder_id=template.holder_id, sealed=sealed, since=now
            )
        )
    else:  # re-enrolled: the old template's earlier feed bodies go too
        scrub(session, ticket.site_id, ticket_id, holder_id)
        row.sealed, row.since = sealed, now
    change = append_change(
        session, ticket.site_id, FaceUpsert(ticket_id=ticket_id, holder_id=holder_id, sealed=sealed), now=now
    )
    session.flush()
    session.add(FaceFeedUpsert(feed_change_id=change.id, site_id=ticket.site_id, ticket_id=ticket_id))


def _delete_entry(session: Session, row: FaceGalleryEntry, reason: str, actor: Any, now: datetime) -> FaceDeletion:
    change = append_change(session, row.site_id, FaceDelete(ticket_id=row.ticket_id), now=now)
    scrub(session, row.site_id, row.ticket_id, str(row.holder_id))
    deletion = FaceDeletion(
        site_id=row.site_id,
        ticket_id=row.ticket_id,
        holder_id=row.holder_id,
        seq=change.seq,
        reason=reason,
        requested_at=now,
    )
    session.delete(row)
    session.add(deletion)
    session.flush()
    detail = {"site_id": row.site_id, "ticket_id": row.ticket_id, "reason": reason, "feed_seq": change.seq}
    record(session, actor, "face.delete", "holder", row.holder_id, detail)
    return deletion


def scrub(session: Session, site_id: int, ticket_id: str, holder_id: str) -> int:
    """Blank the sealed text of the site's earlier FaceUpserts of this pass in the feed table; how many."""
    ids = list(
        session.scalars(
            select(FaceFeedUpsert.feed_change_id).where(
                FaceFeedUpsert.site_id == site_id, FaceFeedUpsert.ticket_id == ticket_id
            )
        )
    )
    if not ids:
        return 0
    body = FaceUpsert(ticket_id=ticket_id, holder_id=holder_id, sealed=None).model_dump(mode="json")
    session.execute(
        update(FeedChange).where(FeedChange.id.in_(ids)).values(body=body).execution_options(synchronize_session=False)
    )
    session.execute(delete(FaceFeedUpsert).where(FaceFeedUpsert.feed_change_id.in_(ids)))
    return len(ids)


def on_passes_issued(session: Session, settings: Settings, tickets: Iterable[Ticket], *, now: datetime) -> None:
    """Hook (ticket issue): an enrolled, consenting holder's new season pass carries their face to its site."""
    holders = {t.holder_id for t in tickets if t.kind == ProductKind.SEASON.value and t.holder_id is not None}
    if not holders:
        return
    enrolled = session.scalars(select(FaceTemplate.holder_id).where(FaceTemplate.holder_id.in_(holders)))
    for holder_id in sorted(enrolled):
        reconcile(session, settings.face_key, holder_id, reason="pass_issued", actor="system", now=now)


def on_passes_ended(
    session: Session, settings: Settings, tickets: Iterable[Ticket], reason: str, actor: Any, *, now: datetime
) -> None:
    """Hook (refund, revocation, block): the faces these passes carried are deleted on their gates, and the
    cloud's template when the holder has no valid pass left."""
    holders = {t.holder_id for t in tickets if t.kind == ProductKind.SEASON.value and t.holder_id is not None}
    for holder_id in sorted(holders):
        reconcile(session, settings.face_key, holder_id, reason=reason, actor=actor, now=now)


def sweep(session: Session, settings: Settings, *, now: datetime) -> int:
    """The expiry sweep: entries whose pass ended (or was refunded or revoked behind the hooks' back) and
    templates of holders without a valid season pass are deleted; commits. Returns the holders swept."""
    ended = (
        select(FaceGalleryEntry.holder_id)
        .join(Ticket, Ticket.id == cast(FaceGalleryEntry.ticket_id, Integer))
        .where((Ticket.valid_until <= now) | Ticket.status.not_in(_LIVE))
    )
    live_pass = exists().where(
        Ticket.holder_id == FaceTemplate.holder_id,
        Ticket.kind == ProductKind.SEASON.value,
        Ticket.status.in_(_LIVE),
        Ticket.valid_until > now,
    )
    unheld = select(FaceTemplate.holder_id).where(~live_pass)
    unconsented = select(FaceTemplate.holder_id).where(
        ~exists().where(FaceConsent.holder_id == FaceTemplate.holder_id, FaceConsent.withdrawn_at.is_(None))
    )
    starting = (  # a pass that starts within LEAD, at a site whose gates do not carry the holder yet
        select(FaceTemplate.holder_id)
        .join(Ticket, Ticket.holder_id == FaceTemplate.holder_id)
        .where(
            Ticket.kind == ProductKind.SEASON.value,
            Ticket.status.in_(_LIVE),
            Ticket.valid_from <= now + LEAD,
            Ticket.valid_until > now,
            ~exists().where(
                FaceGalleryEntry.holder_id == FaceTemplate.holder_id, FaceGalleryEntry.site_id == Ticket.site_id
            ),
        )
    )
    holders = sorted({*session.scalars(ended), *session.scalars(unheld), *session.scalars(unconsented)})
    holders = sorted({*holders, *session.scalars(starting)})
    for holder_id in holders:
        reconcile(session, settings.face_key, holder_id, reason="pass_ended", actor="system", now=now)
    session.commit()
    return len(holders)
