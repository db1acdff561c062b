"""What happens when an order is paid, or given up unpaid, by its kind; in the caller's transaction.

Tickets (the default kind) are issued here. A rental or lesson order is its domain's: `cloud.rentals.orders`
and `cloud.lessons.orders` each provide `on_paid(session, settings, order, *, actor, now)` (the order leaves
`pending`: `transition` it to paid and on as the domain needs) and `on_given_up(session, order)` (a cancelled,
expired or unfulfillable order: its stock or seats back). Points are earned here for every kind, on what was
paid less the deposit.
"""

from __future__ import annotations

from datetime import datetime
from importlib import import_module
from typing import Protocol

from sqlalchemy.orm import Session

from cloud.orders.models import Order, OrderKind, OrderStatus
from cloud.orders.service import transition
from cloud.settings import Settings

_DOMAINS = {OrderKind.RENTAL.value: "cloud.rentals.orders", OrderKind.LESSON.value: "cloud.lessons.orders"}


class KindDomain(Protocol):
    def on_paid(self, session: Session, settings: Settings, order: Order, *, actor: str, now: datetime) -> None: ...

    def on_given_up(self, session: Session, order: Order) -> None: ...


def domain_of(order: Order) -> KindDomain | None:
    """The domain module of a rental or lesson order (imported when first needed); None for tickets."""
    name = _DOMAINS.get(order.kind)
    if name is None:
        return None
    domain: KindDomain = import_module(name)  # a module with the two functions
    return domain


def on_paid(session: Session, settings: Settings, order: Order, *, actor: str, now: datetime) -> None:
    """pending -> paid -> issued (tickets), or the domain's own moves; points earned. The caller commits."""
    from cloud.points.service import earn_for_order

    domain = domain_of(order)
    if domain is None:
        from cloud.tickets.service import issue_for_order

        transition(session, order, OrderStatus.PAID, actor)
        order.paid_at = now
        issue_for_order(session, settings, order, now=now)
        transition(session, order, OrderStatus.ISSUED, actor)
    else:
        order.paid_at = now
        domain.on_paid(session, settings, order, actor=actor, now=now)
    if order.customer_id is not None:
        earn_for_order(session, settings, order, now=now)
