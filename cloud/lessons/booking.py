"""Booking a lesson: a private slot with a coach, or seats in a group class (拼班), as an `Order` of kind lesson.

Online (a customer, channel online, paid with WeChat Pay) or at the window's workbench (工作台 教练预约: a
cashier or admin, channel counter, paid at the counter). The booking holds its slot or seats while its order
is unpaid; paying confirms it (`cloud.lessons.orders.on_paid`), an order cancelled or expired unpaid gives them
back (`on_given_up`).

- No coach is double-booked: a private slot must lie in one of the coach's availability windows and overlap
  no live booking or class of the coach, checked under a lock of the coach's row.
- No class is overbooked: seats are taken by one conditional UPDATE (`seats_taken + n <= capacity`, still
  open, before the cutoff); held seats of unpaid orders count until their order expires.
- A customer holds at most MAX_UNPAID_BOOKINGS unpaid lesson bookings at a time (seats are scarce).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.customers.models import Customer
from cloud.deps import Principal, Role
from cloud.errors import Conflict, DomainError, Forbidden, not_found
from cloud.lessons import catalog
from cloud.lessons.models import BookingStatus, ClassStatus, LessonBooking, LessonClass, LessonKind
from cloud.lessons.schemas import BookingIn
from cloud.orders.models import Order, OrderKind, OrderStatus
from cloud.orders.service import _number, _request_hash, _same_request, find_idempotent
from cloud.settings import Settings

MAX_UNPAID_BOOKINGS = 3


def _channel_allowed(actor: Principal, channel: str) -> None:
    allowed = {Role.CUSTOMER: {"online"}, Role.CASHIER: {"counter"}, Role.ADMIN: {"online", "counter"}}
    if channel not in allowed.get(actor.role, set()):
        raise Forbidden(
            "channel_not_allowed",
            f"Role {actor.role.value} may not book {channel} lessons",
            f"角色 {actor.role.value} 不能创建 {channel} 课程预约",
        )


def get_booking(session: Session, booking_id: int, actor: Principal | None = None) -> LessonBooking:
    """A booking; a customer sees only their own, a coach only their own lessons (others: 404)."""
    booking = session.get(LessonBooking, booking_id)
    hidden = booking is None
    if booking is not None and actor is not None:
        if actor.role is Role.CUSTOMER:
            hidden = booking.customer_id != actor.subject_id
        elif actor.role is Role.COACH:
            hidden = catalog.coach_of_staff(session, actor.subject_id).id != booking.coach_id
    if hidden or booking is None:
        raise not_found("Booking", "课程预约", booking_id)
    return booking


def booking_of_order(session: Session, order_id: int, *, lock: bool = False) -> LessonBooking | None:
    q = select(LessonBooking).where(LessonBooking.order_id == order_id)
    return session.scalar(q.with_for_update() if lock else q)


def book(
    session: Session,
    settings: Settings,
    actor: Principal,
    body: BookingIn,
    *,
    idempotency_key: str | None,
    now: datetime,
) -> tuple[LessonBooking, bool]:
    """Book a slot or seats and create its pending order; (booking, created). A repeated key answers the first."""
    _channel_allowed(actor, body.channel)
    customer_id = actor.subject_id if actor.role is Role.CUSTOMER else body.customer_id
    # a customer's bookings take turns (their row locked, as rentals do), so the unpaid limit holds under races
    online = actor.role is Role.CUSTOMER
    if customer_id is not None and session.get(Customer, customer_id, with_for_update=online) is None:
        raise not_found("Customer", "顾客", customer_id)
    scope = f"{actor.role.value}#{actor.subject_id}" if idempotency_key else None
    digest = _request_hash(body)
    if idempotency_key and scope:
        repeated = _repeated(session, scope, idempotency_key, digest)
        if repeated is not None:
            return repeated, False
    if actor.role is Role.CUSTOMER:
        _check_unpaid(session, actor.subject_id, now)
    if body.class_id is not None and body.product_id is None and body.coach_id is None and body.start_at is None:
        booking = _group(session, body.class_id, body.seats, now)
    elif body.class_id is None and body.product_id and body.coach_id and body.start_at and body.seats == 1:
        booking = _private(session, body.product_id, body.coach_id, body.start_at, now)
    else:
        raise DomainError(
            "booking_shape",
            "Book either a private slot (product_id, coach_id, start_at) or seats in a class (class_id, seats)",
            "请预约私教时段（产品、教练、开始时间）或拼班座位（班级、人数）",
            status_code=422,
        )
    order = Order(
        number=_number(now),
        site_id=booking.site_id,
        customer_id=customer_id,
        channel=body.channel,
        kind=OrderKind.LESSON.value,
        status=OrderStatus.PENDING.value,
        total_fen=booking.price_fen,
        idempotency_scope=scope,
        idempotency_key=idempotency_key,
        request_hash=digest,
        created_by=actor.actor,
        created_at=now,
        expires_at=now + timedelta(minutes=settings.order_pending_minutes),
    )
    session.add(order)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        if idempotency_key and scope:  # a concurrent request with the same key won the race
            repeated = _repeated(session, scope, idempotency_key, digest)
            if repeated is not None:
                return repeated, False
        raise Conflict("duplicate_order", "This order already exists", "订单已存在") from exc
    booking.order_id = order.id
    booking.customer_id = customer_id
    booking.holder_name, booking.phone = body.holder_name, body.phone
    booking.created_by, booking.created_at = actor.actor, now
    session.add(booking)
    session.flush()
    detail = {"order": order.number, "total_fen": order.total_fen, "kind": booking.kind, "class_id": booking.class_id}
    record(session, actor, "lesson.book", "lesson_booking", booking.id, detail)
    record(session, actor, "order.create", "order", order.id, {"number": order.number, "total_fen": order.total_fen})
    session.commit()
    return booking, True


def _repeated(session: Session, scope: str, key: str, digest: str) -> LessonBooking | None:
    order = find_idempotent(session, scope, key)
    if order is None:
        return None
    _same_request(order, digest)
    booking = booking_of_order(session, order.id)
    if booking is None:  # the key's order is not a lesson's
        raise Conflict(
            "idempotency_key_reused", "This Idempotency-Key was used for a different order", "该幂等键已用于另一个订单"
        )
    return booking


def _check_unpaid(session: Session, customer_id: int, now: datetime) -> None:
    unpaid = session.scalar(
        select(func.count(LessonBooking.id))
        .join(Order, Order.id == LessonBooking.order_id)
        .where(
            LessonBooking.customer_id == customer_id,
            LessonBooking.status == BookingStatus.PENDING.value,
            Order.expires_at > now,
        )
    )
    if (unpaid or 0) >= MAX_UNPAID_BOOKINGS:
        raise Conflict(
            "unpaid_limit",
            f"You hold {unpaid} unpaid lesson bookings; pay or cancel them first",
            f"您有 {unpaid} 个未支付的课程预约，请先支付或取消",
            max_unpaid=MAX_UNPAID_BOOKINGS,
        )


def _private(session: Session, product_id: int, coach_id: int, start: datetime, now: datetime) -> LessonBooking:
    product = catalog.get_product(session, product_id)
    if product.kind != LessonKind.PRIVATE.value:
        raise DomainError("not_a_private_product", "Group lessons are booked by class", "拼班课程请按班级预约")
    coach = catalog.get_coach(session, coach_id, lock=True)  # this coach's bookings take turns from here
    catalog.check_teaches(coach, product)
    end = start + timedelta(minutes=product.duration_minutes)
    if start <= now:
        raise DomainError("lesson_in_past", "This slot has started already", "该时段已开始")
    window = session.scalar(
        select(catalog.CoachAvailability.id).where(
            catalog.CoachAvailability.coach_id == coach.id,
            catalog.CoachAvailability.start_at <= start,
            catalog.CoachAvailability.end_at >= end,
        )
    )
    if window is None:
        raise Conflict(
            "coach_not_available",
            f"Coach {coach.name} is not on duty for this whole slot",
            f"教练 {coach.name} 该时段未排班",
        )
    catalog.check_coach_free(session, coach, start, end)
    return LessonBooking(
        site_id=product.site_id,
        kind=LessonKind.PRIVATE.value,
        product_id=product.id,
        coach_id=coach.id,
        start_at=start,
        end_at=end,
        seats=1,
        price_fen=catalog.price_for(session, product, start),
        status=BookingStatus.PENDING.value,
    )


def _group(session: Session, class_id: int, seats: int, now: datetime) -> LessonBooking:
    taken = session.execute(
        update(LessonClass)
        .where(
            LessonClass.id == class_id,
            LessonClass.status == ClassStatus.OPEN.value,
            LessonClass.cutoff_at > now,
            LessonClass.seats_taken + seats <= LessonClass.capacity,
        )
        .values(seats_taken=LessonClass.seats_taken + seats)
        .execution_options(synchronize_session=False)
    )
    lesson_class = session.get(LessonClass, class_id, populate_existing=True)
    if lesson_class is None:
        raise not_found("Class", "拼班课", class_id)
    if getattr(taken, "rowcount", 0) != 1:
        if lesson_class.status != ClassStatus.OPEN.value or lesson_class.cutoff_at <= now:
            raise Conflict(
                "class_closed", "This class takes no more bookings", "该班已截止报名", status=lesson_class.status
            )
        left = lesson_class.capacity - lesson_class.seats_taken
        raise Conflict(
            "class_full",
            f"This class has {left} seat(s) left, {seats} asked",
            f"该班仅剩 {left} 个名额",
            seats_left=left,
        )
    return LessonBooking(
        site_id=lesson_class.site_id,
        kind=LessonKind.GROUP.value,
        product_id=lesson_class.product_id,
        coach_id=lesson_class.coach_id,
        class_id=lesson_class.id,
        start_at=lesson_class.start_at,
        end_at=lesson_class.end_at,
        seats=seats,
        price_fen=lesson_class.price_fen * seats,
        status=BookingStatus.PENDING.value,
    )


def release(session: Session, booking: LessonBooking, *, now: datetime) -> None:
    """The booking cancelled and its seats back on its class. No commit."""
    booking.status, booking.cancelled_at = BookingStatus.CANCELLED.value, now
    if booking.class_id is not None:
        session.execute(
            update(LessonClass)
            .where(LessonClass.id == booking.class_id)
            .values(seats_taken=LessonClass.seats_taken - booking.seats)
            .execution_options(synchronize_session=False)
        )
