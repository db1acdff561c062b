"""Messages shared by gate, cloud and sync. Every message carries `schema_version`."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

SCHEMA_VERSION = 1


class ProductKind(StrEnum):
    """What a ticket entitles its holder to."""

    DAY = "day"  # valid on given dates
    TIME_WINDOW = "time_window"  # N minutes from the first entry (e.g. the 4-hour ticket)
    SEASON = "season"  # a date range, bound to a named holder
    PUNCH = "punch"  # N entries


class TicketStatus(StrEnum):
    VALID = "valid"
    REVOKED = "revoked"  # refunded or cancelled: never admits again
    BLOCKED = "blocked"  # suspended by staff (lost card, abuse); may be lifted


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class Outcome(StrEnum):
    ADMIT = "admit"
    DENY = "deny"


CredentialKind = Literal["signed", "plain", "face", "none"]

# Bounds on what crosses the wire, so one message cannot carry megabytes into a journal or a database.
ID_MAX = 64  # ticket, product, holder, site and gate ids (the cloud's codes are 32 at most)
CODE_MAX = 32  # a decision's stable reason code ("ok", "passback", "barrier_fault", ...): the cloud column's width
PRODUCTS_MAX = 1000  # product ids one gate may be limited to

ProductId = Annotated[str, Field(min_length=1, max_length=ID_MAX)]


class Message(BaseModel):
    """Base of every wire message: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1


class Holder(Message):
    """A named person a season pass is bound to (real-name pass)."""

    holder_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=100)


class Ticket(Message):
    """What a gate needs to know about one ticket, as cached at the gate."""

    ticket_id: str = Field(min_length=1, max_length=64, description="Stable id; the signed QR carries it")
    kind: ProductKind
    product_id: str | None = Field(default=None, max_length=64)
    code: str | None = Field(
        default=None,
        min_length=4,
        max_length=64,
        description="Plain code (OTA voucher, paper ticket) that the gate looks up in its cache",
    )
    valid_from: AwareDatetime
    valid_until: AwareDatetime
    entries: int | None = Field(default=None, ge=1, description="Entries allowed in all; None = unlimited")
    window_minutes: int | None = Field(
        default=None, ge=1, description="time_window tickets: minutes of use from the first entry"
    )
    daily_limit: int | None = Field(default=None, ge=1, description="Entries allowed per local day")
    holder: Holder | None = None
    status: TicketStatus = TicketStatus.VALID
    first_entry_at: AwareDatetime | None = Field(
        default=None, description="First counted entry anywhere, when the cloud knows it"
    )
    entries_used: int = Field(default=0, ge=0, description="Counted entries the cloud knows of")

    @model_validator(mode="after")
    def _consistent(self) -> Ticket:
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if self.kind is ProductKind.TIME_WINDOW and self.window_minutes is None:
            raise ValueError("a time_window ticket needs window_minutes")
        if self.kind is ProductKind.PUNCH and self.entries is None:
            raise ValueError("a punch ticket needs entries")
        if self.kind is ProductKind.SEASON and self.holder is None:
            raise ValueError("a season ticket is bound to a holder")
        return self


class GateConfig(Message):
    """Rules one gate applies; the cloud may push it, the gate's YAML sets it at first."""

    gate_id: str = Field(min_length=1, max_length=64, description="This gate's id, unique in the site")
    site_id: str = Field(min_length=1, max_length=64, description="The site (resort) the gate belongs to")
    direction: Direction = Field(default=Direction.IN, description="in: entry turnstile; out: exit")
    allowed_kinds: frozenset[ProductKind] = Field(
        default=frozenset(ProductKind), description="Product kinds this gate admits"
    )
    allowed_products: frozenset[ProductId] | None = Field(
        default=None, max_length=PRODUCTS_MAX, description="If set, only these product ids are admitted here"
    )
    rescan_seconds: float = Field(
        default=3.0, ge=0, description="The same code at this reader within this time repeats the answer"
    )
    passback_seconds: float = Field(
        default=300.0, ge=0, description="Minimum time between two entries on one ticket (anti-passback)"
    )
    daily_limit: int | None = Field(default=None, ge=1, description="Gate-wide cap of entries per ticket per day")
    timezone: str = Field(default="Asia/Shanghai", max_length=64, description="Local time zone for 'per day' rules")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    emergency_open: bool = Field(default=False, description="Keep-open mode: free passage, nothing counted")


class PassageRecord(Message):
    """One decision at a gate, made and identified at the gate, as the gate's journal keeps it.

    The one passage type from journal to outbox to the wire: the journal holds records whose
    ``passed`` is None while an admission waits for its passage; a `PassageEvent` is a record
    whose passage is known, and only those are sent.
    """

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    gate_id: str = Field(min_length=1, max_length=ID_MAX)
    site_id: str = Field(min_length=1, max_length=ID_MAX)
    at: AwareDatetime = Field(description="Original scan time at the gate")
    direction: Direction
    outcome: Outcome
    code: str = Field(
        max_length=CODE_MAX, description="Stable reason code: ok, expired, revoked, used_up, passback, ..."
    )
    ticket_id: str | None = Field(default=None, max_length=ID_MAX)
    passed: bool | None = Field(description="Did somebody pass the barrier; None while the gate waits to know")
    counted: bool = Field(default=False, description="Did this passage use up an entry")
    credential: CredentialKind = "none"
    face_distance: float | None = Field(
        default=None, ge=0, le=4, description="credential face: the distance of the matched template"
    )

    @model_serializer(mode="wrap")
    def _older_peers_read_it(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Added with face admission: a record without it reads exactly as before (see models.sync).
        data = handler(self)
        if data.get("face_distance", 0) is None:
            del data["face_distance"]
        return data


class PassageEvent(PassageRecord):
    """One decision at a gate, made and identified at the gate; the cloud stores it once."""

    passed: bool = Field(description="Did somebody pass the barrier (confirmed by sensor, or on open)")
