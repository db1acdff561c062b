from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloud.refunds.models import RefundStatus


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        min_length=1, max_length=100, description="Tickets of this order to refund"
    )
    reason: str = Field(default="", max_length=200)

    @field_validator("ticket_ids")
    @classmethod
    def _distinct_ids(cls, ids: list[int]) -> list[int]:
        if len(set(ids)) != len(ids):
            raise ValueError("ticket_ids must not repeat")
        return ids


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
