from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud.deps import MAX_ID
from cloud.orders.models import OrderStatus

OtaChannel = Literal["douyin", "meituan", "ctrip", "lebingxue"]  # 抖音, 美团, 携程, 乐冰雪


class OrderItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: int = Field(ge=1, le=MAX_ID)
    visit_date: date
    quantity: int = Field(default=1, ge=1, le=20)
    holder_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="Season passes: the named holder")


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: int = Field(ge=1, le=MAX_ID)
    channel: Literal["online", "counter", "ota"] = "online"
    ota_channel: OtaChannel | None = None
    ota_order_ref: str | None = Field(default=None, min_length=1, max_length=64)
    customer_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="Staff orders may name a customer")
    items: list[OrderItemIn] = Field(min_length=1, max_length=10)

    @model_validator(mode="after")
    def _ota(self) -> OrderIn:
        if (self.channel == "ota") != (self.ota_channel is not None and self.ota_order_ref is not None):
            raise ValueError("OTA orders need ota_channel and ota_order_ref, and only OTA orders have them")
        return self


class OrderItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_id: int
    visit_date: date
    quantity: int
    unit_price_fen: int
    holder_id: int | None


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    number: str
    site_id: int
    customer_id: int | None
    channel: str
    ota_channel: str | None
    ota_order_ref: str | None
    status: OrderStatus
    total_fen: int
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    items: list[OrderItemOut]


class SalePaymentIn(BaseModel):
    """The money the cashier took for a counter sale: cash or card, the exact total."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["cash", "card"]
    amount_fen: int = Field(ge=0, le=10**9, description="What the customer paid; must equal the order total")


class CounterSaleIn(OrderIn):
    """A ticket-window sale in one request: the order, paid and issued (`POST /orders/counter-sale`)."""

    channel: Literal["online", "counter", "ota"] = "counter"
    payment: SalePaymentIn

    @model_validator(mode="after")
    def _counter(self) -> CounterSaleIn:
        if self.channel != "counter":
            raise ValueError("A counter sale is a counter order")
        return self


class SalePaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    provider: str
    method: str
    status: str
    amount_fen: int
    paid_at: datetime | None


class SaleTicketOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The ticket number the signed QR carries")
    order_item_id: int
    product_id: int
    kind: str
    visit_date: date
    valid_from: datetime
    valid_until: datetime
    holder_id: int | None
    price_fen: int
    token: str = Field(description="The signed credential the QR code holds")


class CounterSaleOut(BaseModel):
    """The issued order, its payment and its tickets (print them)."""

    order: OrderOut
    payment: SalePaymentOut
    tickets: list[SaleTicketOut]
