"""Request and answer bodies of the rental desk's API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from cloud.customers.schemas import PHONE
from cloud.deps import MAX_ID

PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL in text)
Fen = Annotated[int, Field(ge=0, le=10**8)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=PRINTABLE)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100, pattern=PRINTABLE)]
Category = Literal["skis", "snowboard", "boots", "helmet", "goggles", "poles", "clothing", "protection", "other"]


class ItemIn(BaseModel):
    """A rental item; weekend and holiday prices default to the weekday's."""

    model_config = ConfigDict(extra="forbid")

    code: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=PRINTABLE)]
    category: Category
    size: Annotated[str, StringConstraints(strip_whitespace=True, max_length=16, pattern=PRINTABLE)] = ""
    tracking: Literal["counted", "tagged"]
    hour_weekday_fen: Fen
    hour_weekend_fen: Fen | None = None
    hour_holiday_fen: Fen | None = None
    day_weekday_fen: Fen
    day_weekend_fen: Fen | None = None
    day_holiday_fen: Fen | None = None
    deposit_fen: Fen
    damage_fee_fen: Fen = 0
    loss_fee_fen: Fen = 0

    @model_validator(mode="after")
    def _tiers(self) -> ItemIn:
        for unit in ("hour", "day"):
            for tier in ("weekend", "holiday"):
                if getattr(self, f"{unit}_{tier}_fen") is None:
                    setattr(self, f"{unit}_{tier}_fen", getattr(self, f"{unit}_weekday_fen"))
        return self


class ItemPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=PRINTABLE)] | None
    ) = None
    hour_weekday_fen: Fen | None = None
    hour_weekend_fen: Fen | None = None
    hour_holiday_fen: Fen | None = None
    day_weekday_fen: Fen | None = None
    day_weekend_fen: Fen | None = None
    day_holiday_fen: Fen | None = None
    deposit_fen: Fen | None = None
    damage_fee_fen: Fen | None = None
    loss_fee_fen: Fen | None = None
    active: bool | None = None


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    site_id: int
    code: str
    name: str
    category: str
    size: str
    tracking: str
    stock: int
    available: int
    hour_weekday_fen: int
    hour_weekend_fen: int
    hour_holiday_fen: int
    day_weekday_fen: int
    day_weekend_fen: int
    day_holiday_fen: int
    deposit_fen: int
    damage_fee_fen: int
    loss_fee_fen: int
    active: bool


class StockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stock: int = Field(ge=0, le=100_000, description="Units owned (counted items)")


class AssetsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[Tag] = Field(min_length=1, max_length=200)


class AssetPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["available", "damaged", "retired"]
    note: Text = ""


class AssetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    item_id: int
    tag: str
    status: str
    line_id: int | None
    note: str
    order_id: int | None = None
    order_number: str | None = None


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: int = Field(ge=1, le=MAX_ID)
    quantity: int = Field(default=1, ge=1, le=10)
    period_unit: Literal["hour", "day"]
    periods: int = Field(default=1, ge=1, le=14, description="Hours (at most 12) or days (at most 14)")

    @model_validator(mode="after")
    def _hours(self) -> LineIn:
        if self.period_unit == "hour" and self.periods > 12:
            raise ValueError("at most 12 hours; rent by the day instead")
        return self


class RentalOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: int = Field(ge=1, le=MAX_ID)
    lines: list[LineIn] = Field(min_length=1, max_length=10)
    start_at: datetime | None = Field(default=None, description="Online: the pick-up time (within 2 days); desk: now")
    customer_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="At the desk: a known customer")
    phone: Annotated[str, Field(pattern=PHONE)] | None = None
    name: Text = ""


class LineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    item_id: int
    quantity: int
    period_unit: str
    periods: int
    day_type: str
    start_at: datetime
    due_at: datetime
    unit_price_fen: int
    price_fen: int
    deposit_fen: int
    out_qty: int
    returned_qty: int
    lost_qty: int
    charges_fen: int
    handed_out_at: datetime | None
    returned_at: datetime | None


class RentalOrderOut(BaseModel):
    order_id: int
    number: str
    site_id: int
    channel: str
    order_status: str
    status: str
    customer_id: int | None
    phone: str
    name: str
    total_fen: int
    rent_fen: int
    deposit_fen: int
    charges_fen: int
    deposit_refund_fen: int | None
    owed_fen: int
    refund_id: int | None
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None
    lines: list[LineOut]
    assets_out: list[str] = Field(description="Tags of the assets still with the customer")


class CountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_id: int = Field(ge=1, le=MAX_ID)
    quantity: int = Field(ge=1, le=10)


class HandOutIn(BaseModel):
    """Scanned tags (tagged items) and quantities per line (counted items) going out now."""

    model_config = ConfigDict(extra="forbid")

    tags: list[Tag] = Field(default=[], max_length=20)
    counted: list[CountIn] = Field(default=[], max_length=10)

    @model_validator(mode="after")
    def _something(self) -> HandOutIn:
        if not self.tags and not self.counted:
            raise ValueError("scan a tag or give a quantity")
        return self


Condition = Literal["ok", "damaged", "lost"]


class AssetBackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: Tag
    condition: Condition = "ok"
    damage_fen: Fen | None = Field(default=None, description="Damaged: the fee; default the item's damage fee")


class CountBackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_id: int = Field(ge=1, le=MAX_ID)
    quantity: int = Field(ge=1, le=10)
    condition: Condition = "ok"
    damage_fen: Fen | None = Field(default=None, description="Damaged: the fee per unit; default the item's")


class ReturnIn(BaseModel):
    """What comes back now (or is declared lost); the rest may come later."""

    model_config = ConfigDict(extra="forbid")

    assets: list[AssetBackIn] = Field(default=[], max_length=20)
    counted: list[CountBackIn] = Field(default=[], max_length=10)

    @model_validator(mode="after")
    def _something(self) -> ReturnIn:
        if not self.assets and not self.counted:
            raise ValueError("scan a tag or give a quantity")
        return self
