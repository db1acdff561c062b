"""A lesson order paid or given up (`cloud.fulfilment`): the booking confirmed, or its slot or seats freed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from cloud.db import utcnow
from cloud.errors import Conflict
from cloud.lessons.booking import booking_of_order, release
from cloud.lessons.models import BookingStatus, ClassStatus, LessonClass
from cloud.orders.models import Order, OrderStatus
from cloud.orders.service import transition
from cloud.settings import Settings


def on_paid(session: Session, settings: Settings, order: Order, *, actor: str, now: datetime) -> None:
    """pending -> paid -> issued and the booking confirmed; a booking no longer held (its class cancelled) is
    refused, so the payment is not taken at the counter and is refunded as late when it came from WeChat."""
    booking = booking_of_order(session, order.id, lock=True)
    lesson_class = session.get(LessonClass, booking.class_id) if booking and booking.class_id else None
    class_gone = lesson_class is not None and lesson_class.status not in (ClassStatus.OPEN, ClassStatus.CONFIRMED)
    if booking is None or booking.status != BookingStatus.PENDING.value or class_gone:
        raise Conflict(
            "lesson_unavailable",
            f"The lesson of order {order.number} is no longer held",
            f"订单 {order.number} 的课程已不再保留",
        )
    transition(session, order, OrderStatus.PAID, actor)
    transition(session, order, OrderStatus.ISSUED, actor, "lesson booking confirmed")
    booking.status = BookingStatus.CONFIRMED.value


def on_given_up(session: Session, order: Order) -> None:
    """The order was cancelled, expired unpaid or could not be fulfilled: its slot or seats back on sale."""
    booking = booking_of_order(session, order.id, lock=True)
    if booking is not None and booking.status != BookingStatus.CANCELLED.value:
        release(session, booking, now=utcnow())
