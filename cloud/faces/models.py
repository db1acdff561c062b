"""Tables of face admission: consent, the cloud's sealed template, each site's gallery, deletions and their
confirmation per gate. No table holds an encoding or a photo in the clear."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow


class FaceConsent(Base):
    """A holder's separate consent to face admission (PIPL): who, when, which text, through which channel.

    Withdrawal sets `withdrawn_at` (the row stays as the record of what was agreed); a new consent is a new row.
    """

    __tablename__ = "face_consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    holder_id: Mapped[int] = mapped_column(ForeignKey("holders.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # mini_program | window
    text_version: Mapped[str] = mapped_column(String(32))
    given_by: Mapped[str] = mapped_column(String(100))  # the actor: the customer, or the staff member at the window
    given_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    withdrawn_by: Mapped[str | None] = mapped_column(String(100))


class FaceTemplate(Base):
    """The cloud's own copy of a holder's template, sealed with `store_face_key` (aad: the holder id);
    the photo only when a site of the holder's passes keeps photos for the cashier's compare."""

    __tablename__ = "face_templates"

    holder_id: Mapped[int] = mapped_column(ForeignKey("holders.id"), primary_key=True)
    sealed: Mapped[str] = mapped_column(Text)
    photo_sealed: Mapped[str | None] = mapped_column(Text)
    face_px: Mapped[int] = mapped_column(Integer)
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    enrolled_by: Mapped[str] = mapped_column(String(100))


class FaceSiteSettings(Base):
    """Per site: whether enrollment photos are kept (sealed) for the cashier's photo compare. Off by default."""

    __tablename__ = "face_site_settings"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    keep_photos: Mapped[bool] = mapped_column(Boolean, default=False)


class FaceGalleryEntry(Base):
    """A template on a site's gates: the holder's season pass there, and the text the feed carried
    (sealed with the site's key), which snapshots and the checksum repeat byte for byte."""

    __tablename__ = "face_gallery"
    __table_args__ = (UniqueConstraint("site_id", "holder_id"),)

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    ticket_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # as on the wire
    holder_id: Mapped[int] = mapped_column(ForeignKey("holders.id"), index=True)
    sealed: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class FaceFeedUpsert(Base):
    """A feed change that carries a sealed template: scrubbed (sealed -> null) when the template is deleted."""

    __tablename__ = "face_feed_upserts"

    feed_change_id: Mapped[int] = mapped_column(ForeignKey("feed_changes.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    ticket_id: Mapped[str] = mapped_column(String(64), index=True)


class FaceDeletion(Base):
    """A template deleted from a site's gates: the FaceDelete's feed seq, and why."""

    __tablename__ = "face_deletions"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    ticket_id: Mapped[str] = mapped_column(String(64))
    holder_id: Mapped[int] = mapped_column(ForeignKey("holders.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer, index=True)
    reason: Mapped[str] = mapped_column(String(32))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class FaceDeletionConfirmation(Base):
    """A gate reported a feed seq at or past the deletion's: it holds the template no more (`at`: its clock)."""

    __tablename__ = "face_deletion_confirmations"

    deletion_id: Mapped[int] = mapped_column(ForeignKey("face_deletions.id"), primary_key=True)
    gate_id: Mapped[int] = mapped_column(ForeignKey("gates.id"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
