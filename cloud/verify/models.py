"""Tables of handheld verification (核销): one row per verification a handheld sent, accepted or refused."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow

CODE_MAX = 512  # a signed QR's text at most (`models.credential`)


class Verification(Base):
    """A code a staff member verified on a handheld, stored once per handheld-made `event_id`.

    Refusals are kept too, so a handheld replaying its offline queue gets the very answer it got
    the first time. An accepted one counted one entry on its ticket (`entries_used`, the counter
    gate passages count on); undoing it gives that entry back and keeps the row, marked undone.
    """

    __tablename__ = "verifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    device: Mapped[str] = mapped_column(String(32), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    staff_name: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(CODE_MAX))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    channel: Mapped[str | None] = mapped_column(String(16))  # the ticket's order: online | counter | ota
    ota_channel: Mapped[str | None] = mapped_column(String(16))  # meituan, douyin, ... for an OTA order
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)  # the handheld's scan time
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    accepted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(32))  # "ok", or the refusal's code
    entries_left: Mapped[int | None] = mapped_column(Integer)  # after this verification; None: unlimited
    undone_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    undone_by: Mapped[str | None] = mapped_column(String(100))
    undo_reason: Mapped[str | None] = mapped_column(String(200))
