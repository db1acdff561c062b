"""Cancelling lessons, and the group classes' cutoff (拼班: run at or above the minimum, else cancelled).

Who may cancel a paid booking, and until when (a full refund through `refund_money`, points back):
- a customer, their own online booking: a group seat before the class's cutoff; a private lesson until
  PRIVATE_NOTICE (24 h) before it starts, so the coach can still fill the slot. After that: no refund by
  the customer (ask the resort). A lesson bought at the window is cancelled at the window (cash back there).
- a cashier or admin: any booking not checked in, until the lesson starts (the resort's call at the desk).
An unpaid booking is simply cancelled (its order cancelled, the slot or seats back) by either, any time.

At a class's cutoff `cancel_short_classes` (in the cloud's background loop) counts its PAID seats: at or
above the minimum it is confirmed (unpaid bookings may still pay until their order expires); below, it is
cancelled, every paid booking refunded in full and every unpaid one's order cancelled. A confirmed class whose
end has passed is marked held.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal, Role
from cloud.errors import Conflict, Forbidden
from cloud.lessons.booking import get_booking, release
from cloud.lessons.catalog import get_class
from cloud.lessons.models import BookingStatus, ClassStatus, LessonBooking, LessonClass
from cloud.orders.models import Order, OrderStatus
from cloud.orders.service import transition
from cloud.refunds.money import refund_money
from cloud.settings import Settings

PRIVATE_NOTICE = timedelta(hours=24)
log = logging.getLogger("starfish.cloud.lessons")


def customer_deadline(booking: LessonBooking, lesson_class: LessonClass | None) -> datetime:
    """Until when a customer may cancel a paid booking for a full refund."""
    if lesson_class is not None:
        return lesson_class.cutoff_at
    return booking.start_at - PRIVATE_NOTICE


def lock_with_order(session: Session, booking: LessonBooking) -> Order:
    """Lock the booking's order, then the booking (payments lock the order first too: no crosswise waits)."""
    order = session.get(Order, booking.order_id, with_for_update=True, populate_existing=True)
    assert order is not None  # lesson_bookings.order_id is a foreign key
    session.refresh(booking, with_for_update=True)
    return order


def cancel_booking(
    session: Session, settings: Settings, actor: Principal, booking_id: int, *, now: datetime
) -> LessonBooking:
    """Cancel a booking under the rules above: unpaid → order cancelled; paid → refunded in full. Commits."""
    booking = get_booking(session, booking_id, actor)
    order = lock_with_order(session, booking)
    if booking.status == BookingStatus.CANCELLED.value:
        raise Conflict("booking_cancelled", "This booking is cancelled already", "该预约已取消")
    if booking.checked_in_at is not None:
        raise Conflict(
            "already_checked_in", "This lesson has been checked in; it cannot be cancelled", "该课程已签到，不能取消"
        )
    if booking.status == BookingStatus.PENDING.value:
        transition(session, order, OrderStatus.CANCELLED, actor, "lesson booking cancelled")
        release(session, booking, now=now)
        record(session, actor, "lesson.cancel", "lesson_booking", booking.id, {"paid": False})
        session.commit()
        return booking
    lesson_class = get_class(session, booking.class_id) if booking.class_id is not None else None
    if actor.role is Role.CUSTOMER:
        if order.channel != "online":
            raise Forbidden(
                "refund_at_counter",
                "This lesson was not booked online; cancel it at the ticket window",
                "该课程非线上预约，请到售票窗口取消",
            )
        deadline = customer_deadline(booking, lesson_class)
    else:
        deadline = booking.start_at
    if now >= deadline:
        raise Conflict(
            "too_late_to_cancel",
            f"This lesson could be cancelled until {deadline.isoformat()}",
            f"该课程的取消截止时间为 {deadline.isoformat()}，已过",
            deadline=deadline.isoformat(),
        )
    _refund(session, settings, actor, booking, order, "lesson cancelled", now=now)
    session.commit()
    return booking


def _refund(
    session: Session,
    settings: Settings,
    actor: Principal | str,
    booking: LessonBooking,
    order: Order,
    reason: str,
    *,
    now: datetime,
) -> None:
    release(session, booking, now=now)
    refund = refund_money(
        session, settings, actor, order, order.total_fen, points_fen=order.total_fen, reason=reason, now=now
    )
    transition(session, order, OrderStatus.REFUNDED, actor, reason)
    detail = {"paid": True, "refund_id": refund.id, "amount_fen": order.total_fen, "reason": reason}
    record(session, actor, "lesson.cancel", "lesson_booking", booking.id, detail)


def cancel_class(
    session: Session,
    settings: Settings,
    actor: Principal | str,
    lesson_class: LessonClass,
    reason: str,
    *,
    now: datetime,
) -> int:
    """Cancel a class: every paid booking refunded in full, every unpaid one's order cancelled; how many
    bookings. The caller holds the class's row lock and commits."""
    if lesson_class.status in (ClassStatus.CANCELLED.value, ClassStatus.HELD.value):
        raise Conflict(
            "class_not_cancellable",
            f"This class is {lesson_class.status}",
            f"该班状态为 {lesson_class.status}，不能取消",
        )
    lesson_class.status, lesson_class.decided_at = ClassStatus.CANCELLED.value, now
    paid = _paid_seats(session, lesson_class.id)
    bookings = list(
        session.scalars(
            select(LessonBooking)
            .where(LessonBooking.class_id == lesson_class.id, LessonBooking.status != BookingStatus.CANCELLED.value)
            .order_by(LessonBooking.id)
        )
    )
    for booking in bookings:
        order = lock_with_order(session, booking)
        if booking.status == BookingStatus.CANCELLED.value:
            continue
        if booking.status == BookingStatus.CONFIRMED.value:
            _refund(session, settings, actor, booking, order, f"class cancelled: {reason}", now=now)
        else:
            if order.status == OrderStatus.PENDING.value:
                transition(session, order, OrderStatus.CANCELLED, actor, f"class cancelled: {reason}")
            release(session, booking, now=now)
    detail = {"reason": reason, "bookings": len(bookings), "seats_paid": paid}
    record(session, actor, "lesson_class.cancel", "lesson_class", lesson_class.id, detail)
    return len(bookings)


def cancel_class_by_id(
    session: Session, settings: Settings, actor: Principal, class_id: int, *, now: datetime
) -> LessonClass:
    """The resort cancels a class (weather, a coach ill): everyone refunded. Commits."""
    lesson_class = session.get(LessonClass, class_id, with_for_update=True, populate_existing=True) or get_class(
        session, class_id
    )
    cancel_class(session, settings, actor, lesson_class, "cancelled by the resort", now=now)
    session.commit()
    return lesson_class


def _paid_seats(session: Session, class_id: int) -> int:
    paid = session.scalar(
        select(func.coalesce(func.sum(LessonBooking.seats), 0)).where(
            LessonBooking.class_id == class_id, LessonBooking.status == BookingStatus.CONFIRMED.value
        )
    )
    return int(paid or 0)


def cancel_short_classes(session: Session, settings: Settings, now: datetime) -> int:
    """Decide every open class whose cutoff has passed: confirmed at or above its minimum of paid seats, else
    cancelled and refunded; mark confirmed classes that ended as held. Commits; returns how many changed.

    Each class is decided in its own transaction: a class whose cancellation fails (say a refund refused) is
    rolled back, logged and retried on the next run, and does not hold up the other classes."""
    due_ids = list(
        session.scalars(
            select(LessonClass.id)
            .where(LessonClass.status == ClassStatus.OPEN.value, LessonClass.cutoff_at <= now)
            .order_by(LessonClass.id)
        )
    )
    changed = 0
    for class_id in due_ids:
        try:
            changed += _decide(session, settings, class_id, now)
            session.commit()
        except Exception:
            session.rollback()
            log.exception("lesson class %s: deciding it at its cutoff failed; retried on the next run", class_id)
    ended = list(
        session.scalars(
            select(LessonClass)
            .where(LessonClass.status == ClassStatus.CONFIRMED.value, LessonClass.end_at <= now)
            .with_for_update(skip_locked=True)
        )
    )
    for lesson_class in ended:
        lesson_class.status = ClassStatus.HELD.value
    session.commit()
    return changed + len(ended)


def _decide(session: Session, settings: Settings, class_id: int, now: datetime) -> int:
    """Confirm or cancel one due class; 1 if it was still open. No commit.

    Lock order (PostgreSQL deadlocks): a customer's cancel, a payment or an order's expiry locks the order, then
    the booking, then updates the class. So the sweep too locks the class's bookings' orders first (by id), and
    only then the class row, then (in `cancel_class`) each booking. A booking made between the two steps locked
    the class before us (booking takes the class row first), so by the time we hold the class it is committed;
    its order is locked afterwards, a narrow window left as is."""
    session.scalars(
        select(Order.id)
        .join(LessonBooking, LessonBooking.order_id == Order.id)
        .where(LessonBooking.class_id == class_id, LessonBooking.status != BookingStatus.CANCELLED.value)
        .order_by(Order.id)
        .with_for_update(of=Order)
    ).all()
    lesson_class = session.scalars(
        select(LessonClass)
        .where(LessonClass.id == class_id, LessonClass.status == ClassStatus.OPEN.value)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).first()
    if lesson_class is None:  # decided meanwhile, or another sweep holds it
        return 0
    paid = _paid_seats(session, lesson_class.id)
    if paid >= lesson_class.min_participants:
        lesson_class.status, lesson_class.decided_at = ClassStatus.CONFIRMED.value, now
        record(session, "system", "lesson_class.confirm", "lesson_class", lesson_class.id, {"seats_paid": paid})
    else:
        reason = f"{paid} of at least {lesson_class.min_participants} seats paid at the cutoff"
        cancel_class(session, settings, "system", lesson_class, reason, now=now)
    return 1
