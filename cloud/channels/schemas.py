"""The back office's view of the OTA channels: configuration, SKU mapping, the verify calls' outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL in text)
SKU = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
ConfigKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
ConfigValue = Annotated[str, StringConstraints(max_length=500, pattern=PRINTABLE)]
CallState = Literal["pending", "done", "failing", "cancelled"]


class ChannelIn(BaseModel):
    """A channel's non-secret configuration (secrets come from STARFISH_CHANNEL_SECRETS_FILE / _JSON)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(description="Accept the platform's notifications and send it verify calls")
    base_url: str = Field(
        default="", max_length=300, pattern=r"^(https?://[^\s]+)?$", description="Where verify calls go"
    )
    freshness_s: int = Field(default=600, ge=30, le=86400, description="How far a message's timestamp may be off")
    config: dict[ConfigKey, ConfigValue] = Field(
        default_factory=dict, max_length=50, description="Account ids, store (poi) id, hold_minutes ..."
    )


class SkuIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: int = Field(ge=1, le=2**31 - 1, description="Our product this platform SKU sells")
    price_fen: int | None = Field(
        default=None, ge=0, le=10_000_000, description="The channel's price per ticket; null: the product's price"
    )
    active: bool = True


class SkuOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    channel: str
    sku: str
    product_id: int
    price_fen: int | None
    active: bool


class ChannelOut(BaseModel):
    code: str
    configured: bool = Field(description="An admin has saved this channel's configuration")
    enabled: bool
    base_url: str
    freshness_s: int
    config: dict[str, str]
    secrets_present: bool = Field(description="The cloud's settings hold every secret this channel signs with")
    updated_by: str | None
    updated_at: datetime | None
    skus: list[SkuOut]


class CallOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    channel: str
    kind: str
    idempotency_key: str
    order_id: int
    ticket_id: int
    source: str
    used_at: datetime
    state: str
    attempts: int
    next_at: datetime
    last_error: str | None = Field(description="What the platform (or the network) said last time")
    created_at: datetime
    done_at: datetime | None
