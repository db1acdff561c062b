"""What happens when an order is paid: tickets issued, points earned, in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from cloud.orders.models import Order, OrderStatus
from cloud.orders.service import transition
from cloud.settings import Settings


def on_paid(session: Session, settings: Settings, order: Order, *, actor: str, now: datetime) -> None:
    """pending -> paid -> issued, with the order's tickets and points. The caller commits."""
    from cloud.points.service import earn_for_order
    from cloud.tickets.service import issue_for_order

    transition(session, order, OrderStatus.PAID, actor)
    order.paid_at = now
    issue_for_order(session, settings, order, now=now)
    transition(session, order, OrderStatus.ISSUED, actor)
    if order.customer_id is not None:
        earn_for_order(session, settings, order, now=now)
