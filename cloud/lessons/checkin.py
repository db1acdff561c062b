"""Check-in (签到) of a lesson, and a coach's day.

A paid booking is checked in once, on the lesson's local day, by its own coach (signed in with their coach
account), a handheld (verifier) or an admin; a second check-in is refused with `already_checked_in`, naming
when and by whom. Checking in uses the order (issued -> used): it can no longer be cancelled or refunded by
the customer.
A class seat is checked in only once its class is confirmed (or held): before the cutoff the class may still be
cancelled, which refunds every seat (`class_not_confirmed`).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal, Role
from cloud.errors import Conflict
from cloud.lessons import catalog
from cloud.lessons.booking import get_booking
from cloud.lessons.cancel import lock_with_order
from cloud.lessons.catalog import LIVE_BOOKING, LIVE_CLASS
from cloud.lessons.models import BookingStatus, ClassStatus, Coach, LessonBooking, LessonClass
from cloud.orders.models import OrderStatus
from cloud.orders.service import transition


def check_in(session: Session, actor: Principal, booking_id: int, *, now: datetime) -> LessonBooking:
    """Check a booking in; commits. Refused: not paid, cancelled, already checked in, or not the lesson's day."""
    booking = get_booking(session, booking_id, actor)  # a coach finds only their own lessons
    order = lock_with_order(session, booking)
    if booking.checked_in_at is not None:
        raise Conflict(
            "already_checked_in",
            f"Booking {booking.id} was checked in at {booking.checked_in_at.isoformat()} by {booking.checked_in_by}",
            f"该预约已于 {booking.checked_in_at.isoformat()} 由 {booking.checked_in_by} 签到",
            checked_in_at=booking.checked_in_at.isoformat(),
            checked_in_by=booking.checked_in_by,
        )
    if booking.status != BookingStatus.CONFIRMED.value:
        raise Conflict(
            "booking_not_confirmed",
            f"Booking {booking.id} is {booking.status}; only a paid booking is checked in",
            f"该预约状态为 {booking.status}，仅已支付的预约可签到",
            status=booking.status,
        )
    if booking.class_id is not None:
        lesson_class = catalog.get_class(session, booking.class_id)
        if lesson_class.status not in (ClassStatus.CONFIRMED.value, ClassStatus.HELD.value):
            raise Conflict(
                "class_not_confirmed",
                f"This class is {lesson_class.status}; a seat is checked in once the class is confirmed at its cutoff",
                f"该拼班状态为 {lesson_class.status}，成班（截止时间）后方可签到",
                class_status=lesson_class.status,
            )
    zone = catalog.site_zone(session, booking.site_id)
    lesson_day, today = booking.start_at.astimezone(zone).date(), now.astimezone(zone).date()
    if lesson_day != today:
        raise Conflict(
            "not_lesson_day",
            f"This lesson is on {lesson_day}, not today ({today})",
            f"该课程在 {lesson_day}，不是今天（{today}）",
            lesson_day=lesson_day.isoformat(),
        )
    booking.checked_in_at, booking.checked_in_by = now, actor.actor
    transition(session, order, OrderStatus.USED, actor, "lesson checked in")
    record(session, actor, "lesson.check_in", "lesson_booking", booking.id, {"order": order.number})
    session.commit()
    return booking


def coach_day(session: Session, coach: Coach, day: date) -> tuple[list[LessonBooking], list[LessonClass]]:
    """The coach's live bookings (private and class seats) and classes of a local day, by start."""
    start, end = catalog.day_bounds(catalog.site_zone(session, coach.site_id), day)
    bookings = session.scalars(
        select(LessonBooking)
        .where(
            LessonBooking.coach_id == coach.id,
            LessonBooking.status.in_(LIVE_BOOKING),
            LessonBooking.start_at >= start,
            LessonBooking.start_at < end,
        )
        .order_by(LessonBooking.start_at, LessonBooking.id)
    )
    classes = session.scalars(
        select(LessonClass)
        .where(
            LessonClass.coach_id == coach.id,
            LessonClass.status.in_(LIVE_CLASS),
            LessonClass.start_at >= start,
            LessonClass.start_at < end,
        )
        .order_by(LessonClass.start_at)
    )
    return list(bookings), list(classes)


def coach_for(session: Session, actor: Principal, coach_id: int | None) -> Coach:
    """The coach whose day is asked: a coach their own; staff any by id."""
    if actor.role is Role.COACH:
        return catalog.coach_of_staff(session, actor.subject_id)
    if coach_id is None:
        raise Conflict("coach_required", "Say which coach", "请指定教练")
    return catalog.get_coach(session, coach_id)
