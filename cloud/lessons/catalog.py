"""The lesson catalogue the back office keeps: coaches, their availability (排班), lesson products, group classes.

A coach is never in two places: a group class and a private booking of one coach may not overlap (checked
under a lock of the coach's row, so two concurrent schedulings or bookings of one coach take turns; SQLite has
one writer anyway). Availability windows say when private slots may be booked; group classes are scheduled
by the resort and need no window.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal, Role
from cloud.errors import Conflict, DomainError, not_found
from cloud.lessons.models import (
    BookingStatus,
    ClassStatus,
    Coach,
    CoachAvailability,
    LessonBooking,
    LessonClass,
    LessonKind,
    LessonProduct,
)
from cloud.lessons.schemas import AvailabilityIn, ClassIn, CoachIn, CoachPatch, LessonProductIn
from cloud.products.service import day_type
from cloud.sites.service import get_site
from cloud.staff.models import Staff

LIVE_BOOKING = (BookingStatus.PENDING.value, BookingStatus.CONFIRMED.value)
LIVE_CLASS = (ClassStatus.OPEN.value, ClassStatus.CONFIRMED.value, ClassStatus.HELD.value)


def site_zone(session: Session, site_id: int) -> ZoneInfo:
    return ZoneInfo(get_site(session, site_id).timezone)


def day_bounds(zone: ZoneInfo, day: date) -> tuple[datetime, datetime]:
    """The UTC instants a local day starts and ends."""
    start = datetime.combine(day, time(), zone)
    return start, datetime.combine(day + timedelta(days=1), time(), zone)


def get_coach(session: Session, coach_id: int, *, lock: bool = False) -> Coach:
    """A coach; `lock`: their row, so one coach's schedulings and bookings take turns."""
    coach = session.get(Coach, coach_id, with_for_update=True if lock else None, populate_existing=lock)
    if coach is None:
        raise not_found("Coach", "教练", coach_id)
    return coach


def get_product(session: Session, product_id: int) -> LessonProduct:
    product = session.get(LessonProduct, product_id)
    if product is None:
        raise not_found("Lesson product", "课程产品", product_id)
    return product


def get_class(session: Session, class_id: int) -> LessonClass:
    lesson_class = session.get(LessonClass, class_id)
    if lesson_class is None:
        raise not_found("Class", "拼班课", class_id)
    return lesson_class


def _check_staff(session: Session, staff_id: int | None, coach_id: int | None) -> None:
    if staff_id is None:
        return
    staff = session.get(Staff, staff_id)
    if staff is None or staff.role != Role.COACH.value:
        raise DomainError(
            "not_a_coach_account",
            f"Staff {staff_id} is not an account of role coach",
            f"员工 {staff_id} 不是教练账号",
            status_code=422,
        )
    other = session.scalar(select(Coach.id).where(Coach.staff_id == staff_id, Coach.id != (coach_id or 0)))
    if other is not None:
        raise Conflict("staff_already_coach", f"Staff {staff_id} is coach {other} already", "该账号已绑定其他教练")


def create_coach(session: Session, actor: Principal, body: CoachIn) -> Coach:
    get_site(session, body.site_id)
    _check_staff(session, body.staff_id, None)
    coach = Coach(
        site_id=body.site_id,
        staff_id=body.staff_id,
        name=body.name,
        level=body.level,
        disciplines=",".join(sorted(set(body.disciplines))),
        languages=",".join(dict.fromkeys(body.languages)),
        active=True,
    )
    session.add(coach)
    session.flush()
    record(session, actor, "coach.create", "coach", coach.id, body.model_dump(mode="json"))
    session.commit()
    return coach


def update_coach(session: Session, actor: Principal, coach_id: int, body: CoachPatch) -> Coach:
    coach = get_coach(session, coach_id, lock=True)
    changes = body.model_dump(mode="json", exclude_unset=True)
    if "staff_id" in changes:
        _check_staff(session, body.staff_id, coach.id)
        coach.staff_id = body.staff_id
    if body.level is not None:
        coach.level = body.level
    if body.disciplines is not None:
        coach.disciplines = ",".join(sorted(set(body.disciplines)))
    if body.languages is not None:
        coach.languages = ",".join(dict.fromkeys(body.languages))
    if body.active is not None:
        coach.active = body.active
    record(session, actor, "coach.update", "coach", coach.id, changes)
    session.commit()
    return coach


def list_coaches(
    session: Session, site_id: int, *, discipline: str | None, language: str | None, active_only: bool
) -> list[Coach]:
    q = select(Coach).where(Coach.site_id == site_id).order_by(Coach.level.desc(), Coach.id)
    if active_only:
        q = q.where(Coach.active.is_(True))
    coaches = list(session.scalars(q))
    if discipline:
        coaches = [c for c in coaches if discipline in c.disciplines.split(",")]
    if language:
        coaches = [c for c in coaches if language in c.languages.split(",")]
    return coaches


def coach_of_staff(session: Session, staff_id: int) -> Coach:
    coach = session.scalar(select(Coach).where(Coach.staff_id == staff_id))
    if coach is None:
        raise not_found("Coach", "教练", f"of staff {staff_id}")
    return coach


def add_availability(session: Session, actor: Principal, coach_id: int, body: AvailabilityIn) -> CoachAvailability:
    """A window in which the coach takes private lessons; windows of one coach never overlap."""
    coach = get_coach(session, coach_id, lock=True)
    overlapping = session.scalar(
        select(CoachAvailability.id).where(
            CoachAvailability.coach_id == coach.id,
            CoachAvailability.start_at < body.end_at,
            CoachAvailability.end_at > body.start_at,
        )
    )
    if overlapping is not None:
        raise Conflict("availability_overlaps", "This window overlaps another of the coach's", "与该教练已有排班重叠")
    window = CoachAvailability(coach_id=coach.id, start_at=body.start_at, end_at=body.end_at)
    session.add(window)
    session.flush()
    record(session, actor, "coach.availability", "coach", coach.id, body.model_dump(mode="json"))
    session.commit()
    return window


def availability(session: Session, coach_id: int, start: datetime, end: datetime) -> list[CoachAvailability]:
    get_coach(session, coach_id)
    return list(
        session.scalars(
            select(CoachAvailability)
            .where(
                CoachAvailability.coach_id == coach_id,
                CoachAvailability.start_at < end,
                CoachAvailability.end_at > start,
            )
            .order_by(CoachAvailability.start_at)
        )
    )


def create_product(session: Session, actor: Principal, body: LessonProductIn) -> LessonProduct:
    get_site(session, body.site_id)
    if body.kind is LessonKind.GROUP and body.min_participants > body.capacity:
        raise DomainError(
            "minimum_above_capacity",
            "A class's minimum cannot exceed its capacity",
            "开班人数不能超过班级容量",
            status_code=422,
        )
    product = LessonProduct(**body.model_dump(mode="json"))
    if body.kind is LessonKind.PRIVATE:
        product.capacity = product.min_participants = 1
        product.cutoff_minutes = 0
    session.add(product)
    session.flush()
    record(session, actor, "lesson_product.create", "lesson_product", product.id, body.model_dump(mode="json"))
    session.commit()
    return product


def list_products(session: Session, site_id: int) -> list[LessonProduct]:
    return list(
        session.scalars(
            select(LessonProduct)
            .where(LessonProduct.site_id == site_id, LessonProduct.active.is_(True))
            .order_by(LessonProduct.id)
        )
    )


def price_for(session: Session, product: LessonProduct, start_at: datetime) -> int:
    """A slot's (or seat's) price by the day type of its local day, like tickets."""
    day = start_at.astimezone(site_zone(session, product.site_id)).date()
    kind = day_type(session, product.site_id, day)
    return {
        "holiday": product.price_holiday_fen,
        "weekend": product.price_weekend_fen,
        "weekday": product.price_weekday_fen,
    }[kind]


def check_coach_free(session: Session, coach: Coach, start: datetime, end: datetime) -> None:
    """Refuses a time the coach already teaches: a live private booking or a class overlapping it. The caller
    holds the coach's row lock (`get_coach(lock=True)`)."""
    booking = session.scalar(
        select(LessonBooking.id).where(
            LessonBooking.coach_id == coach.id,
            LessonBooking.kind == LessonKind.PRIVATE.value,
            LessonBooking.status.in_(LIVE_BOOKING),
            LessonBooking.start_at < end,
            LessonBooking.end_at > start,
        )
    )
    lesson_class = session.scalar(
        select(LessonClass.id).where(
            LessonClass.coach_id == coach.id,
            LessonClass.status.in_(LIVE_CLASS),
            LessonClass.start_at < end,
            LessonClass.end_at > start,
        )
    )
    if booking is not None or lesson_class is not None:
        raise Conflict(
            "coach_busy",
            f"Coach {coach.name} already teaches at that time",
            f"教练 {coach.name} 该时段已有课程",
            booking_id=booking,
            class_id=lesson_class,
        )


def check_teaches(coach: Coach, product: LessonProduct) -> None:
    if not coach.active or coach.site_id != product.site_id or not product.active:
        raise DomainError("coach_unavailable", f"Coach {coach.name} does not teach this", "该教练不教授此课程")
    if product.discipline not in coach.disciplines.split(","):
        raise DomainError(
            "wrong_discipline",
            f"Coach {coach.name} does not teach {product.discipline}",
            f"教练 {coach.name} 不教授 {product.discipline}",
        )


def create_class(session: Session, actor: Principal, body: ClassIn, *, now: datetime) -> LessonClass:
    """Schedule a group class (拼班) of a group product with a coach who is free then."""
    product = get_product(session, body.product_id)
    if product.kind != LessonKind.GROUP.value:
        raise DomainError("not_a_group_product", "Classes are scheduled of group products", "只有拼班课程可排班")
    coach = get_coach(session, body.coach_id, lock=True)
    check_teaches(coach, product)
    start = body.start_at
    end = start + timedelta(minutes=product.duration_minutes)
    cutoff = start - timedelta(minutes=product.cutoff_minutes)
    if cutoff <= now:
        raise DomainError("class_too_soon", "The class's booking cutoff has passed already", "该班报名截止时间已过")
    check_coach_free(session, coach, start, end)
    lesson_class = LessonClass(
        site_id=product.site_id,
        product_id=product.id,
        coach_id=coach.id,
        start_at=start,
        end_at=end,
        cutoff_at=cutoff,
        capacity=product.capacity,
        min_participants=product.min_participants,
        seats_taken=0,
        price_fen=price_for(session, product, start),
        status=ClassStatus.OPEN.value,
        created_by=actor.actor,
        created_at=now,
    )
    session.add(lesson_class)
    session.flush()
    record(session, actor, "lesson_class.create", "lesson_class", lesson_class.id, body.model_dump(mode="json"))
    session.commit()
    return lesson_class


def list_classes(session: Session, site_id: int, day: date, *, open_only: bool) -> list[LessonClass]:
    start, end = day_bounds(site_zone(session, site_id), day)
    q = (
        select(LessonClass)
        .where(LessonClass.site_id == site_id, LessonClass.start_at >= start, LessonClass.start_at < end)
        .order_by(LessonClass.start_at, LessonClass.id)
    )
    if open_only:
        q = q.where(LessonClass.status == ClassStatus.OPEN.value)
    return list(session.scalars(q))
