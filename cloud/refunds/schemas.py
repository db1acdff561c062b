from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from cloud.refunds.models import RefundStatus, ReviewStatus


def _distinct(ids: list[int]) -> list[int]:
    if len(set(ids)) != len(ids):
        raise ValueError("ticket_ids must not repeat")
    return ids


TicketIds = Annotated[
    list[Annotated[int, Field(ge=1, le=2**31 - 1)]],
    Field(min_length=1, max_length=100, description="Tickets of this order to refund"),
    AfterValidator(_distinct),
]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket_ids: TicketIds
    reason: str = Field(default="", max_length=200)


class RefundOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    order_id: int
    ticket_ids: list[int]
    amount_fen: int = Field(description="Paid back: the tickets' price less the fee")
    fee_fen: int
    status: RefundStatus
    reason: str
    created_by: str
    created_at: datetime
    provider: str | None = Field(description="wechat when the money goes back through WeChat Pay")
    out_refund_no: str | None = Field(description="Our refund number at WeChat Pay, the same on every retry")
    attempts: int = Field(description="Requests sent to WeChat Pay since the refund (or its last retry) began")
    next_attempt_at: datetime | None = Field(description="When the refund is sent or asked after again")
    last_error: str | None = Field(description="Why the money has not gone back yet, if something went wrong")
    settled_at: datetime | None = Field(description="When WeChat Pay paid it back")


class RevocationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int = Field(validation_alias="id", description="Feed sequence: ask for entries after the last one seen")
    site_id: int
    ticket_id: int
    reason: str
    created_at: datetime


class RevocationFeed(BaseModel):
    site_id: int
    after: int
    items: list[RevocationOut]
    last_seq: int = Field(description="Pass as `after` next time")


class RefundPage(BaseModel):
    items: list[RefundOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class RefundReviewIn(BaseModel):
    """A refund outside the rules, for a second person to approve or deny."""

    model_config = ConfigDict(extra="forbid")

    ticket_ids: TicketIds
    reason: Reason = Field(description="Why, for the reviewer: e.g. 'lifts closed by the storm at 11:00'")
    waive_fee: bool = Field(default=False, description="Pay back the whole price (the resort's doing)")


class ReviewDecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class RefundReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    order_id: int
    ticket_ids: list[int]
    waive_fee: bool
    reason: str
    rule_codes: list[str] = Field(description="What the automatic rules refuse: ticket_used, past_cutoff, ...")
    status: ReviewStatus
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    refund_id: int | None = Field(description="The refund an approval made")

    @field_validator("rule_codes", mode="before")
    @classmethod
    def _split(cls, codes: object) -> object:
        return [c for c in codes.split(",") if c] if isinstance(codes, str) else codes


class RefundReviewPage(BaseModel):
    items: list[RefundReviewOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")
