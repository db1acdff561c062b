"""The provider interface. A provider either captures the money now (the ticket window) or hands the
customer what their app needs to pay, and confirms later with a verified notification (WeChat Pay)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cloud.errors import DomainError
from cloud.orders.models import Order


@dataclass(frozen=True, slots=True)
class Payer:
    """How the payer pays, as far as a provider needs to know."""

    method: str  # cash | card | jsapi
    amount_fen: int | None = None  # tendered at the window
    openid: str | None = None  # the WeChat payer


@dataclass(frozen=True, slots=True)
class Captured:
    """The money is in hand: the order is paid now."""

    method: str
    amount_fen: int
    provider_ref: str | None = None


@dataclass(frozen=True, slots=True)
class AwaitingCustomer:
    """The customer pays in their app; the provider confirms later."""

    method: str
    amount_fen: int
    client_params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A provider's verified word that money arrived for an order."""

    order_number: str
    provider_ref: str
    amount_fen: int
    paid_at: datetime


class PaymentProvider(Protocol):
    name: str

    def start(self, order: Order, payer: Payer, *, now: datetime) -> Captured | AwaitingCustomer:
        """Begin paying `order`; raise a DomainError if this provider cannot take the payment."""
        ...


class CounterProvider:
    """Cash or card at the ticket window, recorded by the cashier: the exact total or nothing."""

    name = "counter"

    def start(self, order: Order, payer: Payer, *, now: datetime) -> Captured:
        if payer.amount_fen != order.total_fen:
            raise DomainError(
                "amount_mismatch",
                f"Order {order.number} costs {order.total_fen} fen, not {payer.amount_fen}",
                f"订单 {order.number} 应付 {order.total_fen} 分，而不是 {payer.amount_fen} 分",
                expected_fen=order.total_fen,
            )
        return Captured(method=payer.method, amount_fen=order.total_fen)
