from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from cloud.customers.schemas import PRINTABLE
from cloud.points.models import PointsKind
from cloud.points.rules import MAX_PER_YUAN, MAX_SIGNIN, MAX_STREAK_BONUS

MAX_POINTS = 10_000_000


class EntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    seq: int
    delta: int
    balance_after: int
    kind: PointsKind
    ref: str
    shortfall: int = Field(description="Reversals only: points that could not be taken back (already spent)")
    note: str
    created_at: datetime


class PointsOut(BaseModel):
    balance: int
    spendable: int = Field(
        description="What can be spent now: points earned from an order wait until it can no longer be refunded"
    )
    entries: list[EntryOut] = Field(description="Most recent first")


class LedgerOut(BaseModel):
    balance: int
    entry: EntryOut


class SpendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: int = Field(ge=1, le=MAX_POINTS)
    ref: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9:_.-]+$",
        description="What the points pay for (e.g. coupon:42); a repeated ref returns the first spend",
    )


class AdjustIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delta: int = Field(ge=-MAX_POINTS, le=MAX_POINTS, description="Positive credits, negative debits; not 0")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=PRINTABLE)]

    @field_validator("delta")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("delta must not be 0")
        return value


class SignInOut(BaseModel):
    day: date = Field(description="The local day (resort time zone) signed in for")
    streak: int = Field(description="Consecutive days signed in, this one included")
    points: int
    balance: int


class RulesIn(BaseModel):
    """The whole set of rules (all three, as the back office's form shows them)."""

    model_config = ConfigDict(extra="forbid")

    points_per_yuan: int = Field(ge=0, le=MAX_PER_YUAN, description="Points per whole yuan paid (0: none)")
    signin_points: int = Field(ge=0, le=MAX_SIGNIN, description="Points for a daily sign-in (每日签到)")
    signin_streak_bonus: int = Field(ge=0, le=MAX_STREAK_BONUS, description="Extra on every 7th day in a row")


class RulesOut(RulesIn):
    version: int = Field(description="0: no rules stored yet, the settings' defaults apply")
    changed_at: datetime | None
    changed_by: str | None
