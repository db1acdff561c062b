from __future__ import annotations

from datetime import date, datetime

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
        if self.sale_start and self.sale_end and self.sale_end <= self.sale_start:
            raise ValueError("sale_end must be after sale_start")
        return self


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


class HolidayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: date
    name: str = Field(min_length=1, max_length=64)


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
