from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Channel = Literal["mini_program", "window"]


class ConsentIn(BaseModel):
    """The holder agreed to the separate face-admission consent text of this version."""

    model_config = ConfigDict(extra="forbid")

    text_version: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z._-]+$", examples=["2026-12"])


class ConsentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    holder_id: int
    channel: Channel
    text_version: str
    given_by: str = Field(description="Who recorded it: the customer, or the staff member at the window")
    given_at: datetime
    withdrawn_at: datetime | None
    withdrawn_by: str | None


class CarriedOut(BaseModel):
    """A site whose gates hold the holder's template, for this season pass."""

    site_code: str
    ticket_id: str
    since: datetime


class GateConfirmation(BaseModel):
    gate: str
    at: datetime


class DeletionOut(BaseModel):
    """A template deleted from a site's gates, and where that is confirmed."""

    id: int
    site_code: str
    ticket_id: str
    holder_id: int
    reason: str = Field(description="pass_ended, refunded, revoked, consent_withdrawn, holder_request, ...")
    requested_at: datetime
    feed_seq: int
    confirmed: list[GateConfirmation]
    pending: list[str] = Field(description="Gates of the site that have not confirmed yet")
    summary: list[str] = Field(description='"deleted on north-1 at 10:02:11" (site time) per confirming gate')


class EnrollmentOut(BaseModel):
    holder_id: int
    enrolled_at: datetime
    face_px: int
    photo_kept: bool
    carried_by: list[CarriedOut]


class FaceRecordOut(BaseModel):
    """What is held about the holder's face: never the encoding."""

    holder_id: int
    consent: ConsentOut | None = Field(description="The latest consent record, withdrawn or not")
    enrolled: bool
    enrolled_at: datetime | None
    photo_kept: bool
    carried_by: list[CarriedOut]
    deletions: list[DeletionOut]


class FaceSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_photos: bool = Field(description="Keep enrollment photos (sealed) for the cashier's photo compare")


class FaceSettingsOut(BaseModel):
    site_id: int
    keep_photos: bool
