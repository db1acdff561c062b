from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from models import ProductKind

Fen = int  # money is integer fen (分) everywhere
DEFAULT_SALE_HORIZON_DAYS = 90
# Tickets carry 32-bit Unix times (1970 to 2106): a season lies well inside that.
FIRST_SEASON_DAY, LAST_SEASON_DAY = date(2000, 1, 1), date(2099, 12, 31)


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    name: str = Field(min_length=1, max_length=100)
    kind: ProductKind
    entries: int | None = Field(default=None, ge=1, le=1000)
    window_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    valid_days: int = Field(default=1, ge=1, le=366)
    season_start: date | None = None
    season_end: date | None = None
    weekday_price_fen: Fen = Field(ge=0, le=10_000_000)
    weekend_price_fen: Fen = Field(ge=0, le=10_000_000)
    holiday_price_fen: Fen = Field(ge=0, le=10_000_000)
    sale_start: AwareDatetime | None = None
    sale_end: AwareDatetime | None = None
    daily_stock: int | None = Field(default=None, ge=0, le=1_000_000)
    sale_horizon_days: int = Field(
        default=DEFAULT_SALE_HORIZON_DAYS,
        ge=0,
        le=366,
        description="Visit dates on sale: today up to this many days ahead (site time zone); season products: "
        "up to the season's last day",
    )
    refundable: bool = True
    refund_cutoff_hours: int = Field(default=0, ge=0, le=24 * 365)
    refund_fee_fen: Fen = Field(default=0, ge=0, le=10_000_000)

    @model_validator(mode="after")
    def _kind_fields(self) -> ProductIn:
        if self.kind is ProductKind.TIME_WINDOW and self.window_minutes is None:
            raise ValueError("a time_window product needs window_minutes")
        if self.kind is ProductKind.PUNCH and self.entries is None:
            raise ValueError("a punch product needs entries")
        if self.kind is ProductKind.SEASON and (self.season_start is None or self.season_end is None):
            raise ValueError("a season product needs season_start and season_end")
        for day in (self.season_start, self.season_end):
            if day is not None and not FIRST_SEASON_DAY <= day <= LAST_SEASON_DAY:
                raise ValueError(f"season dates must lie between {FIRST_SEASON_DAY} and {LAST_SEASON_DAY}")
        if self.season_start and self.season_end and self.season_end < self.season_start:
            raise ValueError("season_end is before season_start")
        for moment in (self.sale_start, self.sale_end):
            if moment is not None and not FIRST_SEASON_DAY <= moment.date() <= LAST_SEASON_DAY:
                raise ValueError(f"the sale window must lie between {FIRST_SEASON_DAY} and {LAST_SEASON_DAY}")
        if self.sale_start and self.sale_end and self.sale_end <= self.sale_start:
            raise ValueError("sale_end must be after sale_start")
        return self


class ScheduledPrices(BaseModel):
    effective_at: datetime
    weekday_price_fen: Fen
    weekend_price_fen: Fen
    holiday_price_fen: Fen


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    site_id: int
    code: str
    name: str
    kind: ProductKind
    entries: int | None
    window_minutes: int | None
    valid_days: int
    season_start: date | None
    season_end: date | None
    weekday_price_fen: Fen
    weekend_price_fen: Fen
    holiday_price_fen: Fen
    sale_start: datetime | None
    sale_end: datetime | None
    daily_stock: int | None
    sale_horizon_days: int
    refundable: bool
    refund_cutoff_hours: int
    refund_fee_fen: Fen
    active: bool
    next_price_change: ScheduledPrices | None = Field(
        default=None, description="The next price change (调价) scheduled, if any; the prices above are those now"
    )


class ProductAdminOut(ProductOut):
    terms_frozen: bool = Field(description="Sold at least once: code, kind, entries and validity no longer change")


class ProductPatch(BaseModel):
    """What an admin may change of a product; a field left out stays as it is. Prices change only through price
    changes (调价); code, kind, entries and validity only until the product is first sold."""

    model_config = ConfigDict(extra="forbid")

    code: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    kind: ProductKind | None = None
    entries: int | None = Field(default=None, ge=1, le=1000)
    window_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    valid_days: int | None = Field(default=None, ge=1, le=366)
    season_start: date | None = None
    season_end: date | None = None
    sale_start: AwareDatetime | None = None
    sale_end: AwareDatetime | None = None
    daily_stock: int | None = Field(default=None, ge=0, le=1_000_000)
    sale_horizon_days: int | None = Field(default=None, ge=0, le=366)
    refundable: bool | None = None
    refund_cutoff_hours: int | None = Field(default=None, ge=0, le=24 * 365)
    refund_fee_fen: Fen | None = Field(default=None, ge=0, le=10_000_000)


class PriceChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weekday_price_fen: Fen = Field(ge=0, le=10_000_000)
    weekend_price_fen: Fen = Field(ge=0, le=10_000_000)
    holiday_price_fen: Fen = Field(ge=0, le=10_000_000)
    effective_at: AwareDatetime | None = Field(
        default=None, description="When the new prices apply: now (left out) or later, up to a year ahead"
    )
    note: str = Field(default="", max_length=200)


PriceChangeStatus = Literal["scheduled", "in_effect", "superseded", "withdrawn"]


class PriceChangeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    product_id: int
    effective_at: datetime
    weekday_price_fen: Fen
    weekend_price_fen: Fen
    holiday_price_fen: Fen
    note: str
    created_by: str
    created_at: datetime
    withdrawn_at: datetime | None
    withdrawn_by: str | None
    status: PriceChangeStatus = "scheduled"


class HolidayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: date
    name: str = Field(min_length=1, max_length=64)


# A line printed or shown on a ticket: no control characters (a receipt printer would obey ESC/POS codes).
Line = Annotated[str, Field(min_length=1, pattern=r"^[^\x00-\x1f\x7f]*$")]


class ETicketLayout(BaseModel):
    """The e-ticket (电子票) as the mini-program and the ticket page show it."""

    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, Field(max_length=40, pattern=r"^[^\x00-\x1f\x7f]*$")] = Field(
        default="", description="Above the QR code; empty: the site's name"
    )
    notice_lines: list[Annotated[Line, Field(max_length=100)]] = Field(default_factory=list, max_length=10)
    show_price: bool = True
    show_holder_name: bool = True
    colour: str = Field(default="#1677ff", pattern=r"^#[0-9a-fA-F]{6}$")
    qr_scale: int = Field(default=8, ge=4, le=16, description="Pixels per QR module of the ticket's QR image")


class PaperTicketLayout(BaseModel):
    """The paper ticket (纸质票) the window's receipt printer prints."""

    model_config = ConfigDict(extra="forbid")

    paper_width_mm: Literal[58, 80] = 80
    header_lines: list[Annotated[Line, Field(max_length=40)]] = Field(default_factory=list, max_length=4)
    footer_lines: list[Annotated[Line, Field(max_length=60)]] = Field(default_factory=list, max_length=6)
    show_price: bool = True
    show_holder_name: bool = True
    copies: int = Field(default=1, ge=1, le=3, description="Copies printed per ticket (a stub for the window)")


class TicketLayoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    e_ticket: ETicketLayout = Field(default_factory=ETicketLayout)
    paper: PaperTicketLayout = Field(default_factory=PaperTicketLayout)


class TicketLayoutOut(TicketLayoutIn):
    model_config = ConfigDict(extra="ignore")

    site_id: int
    updated_by: str | None = Field(description="None: never set, the defaults")
    updated_at: datetime | None


class PriceOut(BaseModel):
    product_id: int
    day: date
    day_type: str  # weekday | weekend | holiday
    price_fen: Fen
    available: int | None  # None = unlimited


class StockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: date
    capacity: int = Field(ge=0, le=1_000_000)
