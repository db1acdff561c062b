from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud.payments.models import PaymentStatus


class CounterPaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["cash", "card"]
    amount_fen: int = Field(ge=0, le=10**9, description="What the customer paid; must equal the order total")


class PaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    order_id: int
    provider: str
    method: str
    status: PaymentStatus
    amount_fen: int
    provider_ref: str | None
    created_at: datetime
    paid_at: datetime | None
    recorded_by: str


class MiniProgramPayParams(BaseModel):
    """Exactly what the mini-program passes to `wx.requestPayment` (WeChat's spelling)."""

    timeStamp: str
    nonceStr: str
    package: str
    signType: Literal["RSA"]
    paySign: str


class WechatPrepayOut(BaseModel):
    payment: PaymentOut
    params: MiniProgramPayParams


class WechatFail(BaseModel):
    """WeChat Pay's shape for a refused notification; WeChat retries it later."""

    code: Literal["FAIL"] = "FAIL"
    message: str
