from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from cloud.verify.models import CODE_MAX

DEVICE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL in text)


class VerifyIn(BaseModel):
    """One verification a handheld made, online or from its offline queue (its own `event_id`)."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(
        min_length=1,
        max_length=CODE_MAX,
        pattern=PRINTABLE,
        description="Signed QR text, plain/OTA code or ticket number",
    )
    event_id: uuid.UUID = Field(description="Made by the handheld; the same id again gets the same answer")
    at: AwareDatetime = Field(description="When the handheld scanned it (the rules are applied at this time)")
    device: str = Field(pattern=DEVICE, description="The handheld's name, e.g. hh-07")
    site_id: int = Field(ge=1, le=2**31 - 1, description="The site the handheld works at")


class UndoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=2, max_length=200, pattern=PRINTABLE)


class VerificationOut(BaseModel):
    """A verification and its answer: `accepted`, or `reason` (a gate's code) with its sentence in en and zh."""

    model_config = ConfigDict(from_attributes=True)

    source: Literal["handheld", "gate"] = Field(
        default="handheld", description="A handheld's verification, or a gate's admission (`device` is the gate)"
    )
    id: int
    event_id: uuid.UUID
    site_id: int
    device: str
    staff_name: str
    ticket_id: int | None
    channel: str | None
    ota_channel: str | None
    at: datetime
    received_at: datetime
    accepted: bool
    reason: str
    message: str
    message_zh: str
    entries_left: int | None
    undone_at: datetime | None
    undone_by: str | None
    undo_reason: str | None


class TicketLookupOut(BaseModel):
    """A ticket as a handheld shows it: what it is, its entries, and whether it is valid now (or why not)."""

    ticket_id: int
    site_id: int
    site_code: str
    product_id: int
    kind: str
    status: str
    code: str | None
    channel: str
    ota_channel: str | None
    visit_date: date
    valid_from: datetime
    valid_until: datetime
    entries: int | None
    entries_used: int
    entries_left: int | None
    first_entry_at: datetime | None
    holder_name: str | None
    valid_now: bool
    reason: str
    message: str
    message_zh: str


class LookupOut(BaseModel):
    """What `q` was taken for (signed, code, ticket_no, phone) and the tickets it names (none: not found)."""

    matched_as: str
    tickets: list[TicketLookupOut]
