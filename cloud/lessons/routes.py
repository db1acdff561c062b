"""Coaches and lessons API (教练, 教务): /coaches, /lessons/products, /classes (拼班), /lessons/bookings.

A booking's order is paid through the ordinary payment routes (`/orders/{id}/payments/counter` at the
window's workbench, `/orders/{id}/payments/wechat` online).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import AfterValidator
from sqlalchemy import select

from cloud.db import utcnow
from cloud.deps import MAX_ID, IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, require
from cloud.errors import not_found
from cloud.lessons import booking as bookings
from cloud.lessons import cancel, catalog, checkin
from cloud.lessons.models import LessonBooking
from cloud.lessons.schemas import (
    AvailabilityIn,
    AvailabilityOut,
    BookingIn,
    BookingOut,
    ClassIn,
    ClassOut,
    CoachDayOut,
    CoachIn,
    CoachOut,
    CoachPatch,
    Discipline,
    Interval,
    LessonProductIn,
    LessonProductOut,
    ScheduleOut,
)
from cloud.orders.models import Order

router = APIRouter(tags=["lessons"], route_class=TransactionScopedRoute)
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Browsers = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.COACH, Role.CUSTOMER))]
Sellers = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.CUSTOMER))]
Desk = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER))]
Readers = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.VERIFIER, Role.COACH, Role.CUSTOMER))]
CheckIners = Annotated[Principal, Depends(require(Role.ADMIN, Role.VERIFIER, Role.COACH))]
CoachOnly = Annotated[Principal, Depends(require(Role.COACH))]
SiteQuery = Annotated[int, Query(ge=1, le=MAX_ID)]
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2099, 12, 31)


def _plausible_day(day: date | None) -> date | None:
    if day is not None and not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"day must be between {FIRST_DAY} and {LAST_DAY} (日期须在 {FIRST_DAY} 至 {LAST_DAY} 之间)")
    return day


DayQuery = Annotated[
    date | None,
    Query(description="The site's local day (2000-01-01..2099-12-31); today when left out"),
    AfterValidator(_plausible_day),
]


def _today(session: SessionDep, site_id: int, day: date | None) -> date:
    return day or utcnow().astimezone(catalog.site_zone(session, site_id)).date()


# --- coaches ---


@router.post("/coaches", status_code=201)
def create_coach(body: CoachIn, session: SessionDep, actor: Admin) -> CoachOut:
    """Add a coach (教练) at a site, optionally linked to their staff account of role coach."""
    return CoachOut.of(catalog.create_coach(session, actor, body))


@router.get("/coaches")
def list_coaches(
    site_id: SiteQuery,
    session: SessionDep,
    _: Browsers,
    discipline: Discipline | None = None,
    language: Annotated[str | None, Query(pattern=r"^[a-z]{2}$")] = None,
) -> list[CoachOut]:
    """A site's active coaches, highest level first; filtered by discipline and language."""
    coaches = catalog.list_coaches(session, site_id, discipline=discipline, language=language, active_only=True)
    return [CoachOut.of(c) for c in coaches]


@router.get("/coaches/me/lessons")
def my_lessons(session: SessionDep, actor: CoachOnly, day: DayQuery = None) -> CoachDayOut:
    """The signed-in coach's lessons of a day (today by default): private bookings, class seats and classes."""
    coach = checkin.coach_for(session, actor, None)
    return _coach_day(session, coach.id, _today(session, coach.site_id, day))


@router.get("/coaches/{coach_id}/lessons")
def coach_lessons(coach_id: IdPath, session: SessionDep, _: Desk, day: DayQuery = None) -> CoachDayOut:
    """A coach's lessons of a day, for the window's workbench (工作台 教练预约)."""
    coach = catalog.get_coach(session, coach_id)
    return _coach_day(session, coach.id, _today(session, coach.site_id, day))


def _coach_day(session: SessionDep, coach_id: int, day: date) -> CoachDayOut:
    coach = catalog.get_coach(session, coach_id)
    day_bookings, classes = checkin.coach_day(session, coach, day)
    return CoachDayOut(
        coach=CoachOut.of(coach),
        day=day,
        bookings=[BookingOut.model_validate(b) for b in day_bookings],
        classes=[ClassOut.model_validate(c) for c in classes],
    )


@router.patch("/coaches/{coach_id}")
def update_coach(coach_id: IdPath, body: CoachPatch, session: SessionDep, actor: Admin) -> CoachOut:
    """Change a coach's level, disciplines, languages, account or whether they teach (active)."""
    return CoachOut.of(catalog.update_coach(session, actor, coach_id, body))


@router.post("/coaches/{coach_id}/availability", status_code=201)
def add_availability(coach_id: IdPath, body: AvailabilityIn, session: SessionDep, actor: Admin) -> AvailabilityOut:
    """A window in which the coach takes private lessons (排班); windows of one coach never overlap."""
    return AvailabilityOut.model_validate(catalog.add_availability(session, actor, coach_id, body))


@router.get("/coaches/{coach_id}/schedule")
def schedule(coach_id: IdPath, session: SessionDep, _: Browsers, day: DayQuery = None) -> ScheduleOut:
    """A coach's day: their availability windows and the times already taken (private lessons and classes)."""
    coach = catalog.get_coach(session, coach_id)
    local_day = _today(session, coach.site_id, day)
    start, end = catalog.day_bounds(catalog.site_zone(session, coach.site_id), local_day)
    windows = catalog.availability(session, coach.id, start, end)
    day_bookings, classes = checkin.coach_day(session, coach, local_day)
    busy = [Interval(start_at=b.start_at, end_at=b.end_at) for b in day_bookings if b.class_id is None]
    busy += [Interval(start_at=c.start_at, end_at=c.end_at) for c in classes]
    return ScheduleOut(
        coach_id=coach.id,
        day=local_day,
        windows=[AvailabilityOut.model_validate(w) for w in windows],
        busy=sorted(busy, key=lambda i: i.start_at),
    )


# --- lesson products and group classes ---


@router.post("/lessons/products", status_code=201)
def create_product(body: LessonProductIn, session: SessionDep, actor: Admin) -> LessonProductOut:
    """A private lesson (price per slot) or a group class type (price per seat, capacity, minimum, cutoff)."""
    return LessonProductOut.model_validate(catalog.create_product(session, actor, body))


@router.get("/lessons/products")
def list_products(site_id: SiteQuery, session: SessionDep, _: Browsers) -> list[LessonProductOut]:
    """A site's lesson products on sale."""
    return [LessonProductOut.model_validate(p) for p in catalog.list_products(session, site_id)]


@router.post("/classes", status_code=201)
def create_class(body: ClassIn, session: SessionDep, actor: Admin) -> ClassOut:
    """Schedule a group class (拼班) of a group product with a coach free at that time."""
    return ClassOut.model_validate(catalog.create_class(session, actor, body, now=utcnow()))


@router.get("/classes")
def list_classes(
    site_id: SiteQuery, session: SessionDep, _: Browsers, day: DayQuery = None, open_only: bool = False
) -> list[ClassOut]:
    """A site's classes of a local day (today by default), by start; `open_only`: those still taking bookings."""
    local_day = _today(session, site_id, day)
    return [ClassOut.model_validate(c) for c in catalog.list_classes(session, site_id, local_day, open_only=open_only)]


@router.get("/classes/{class_id}")
def get_class(class_id: IdPath, session: SessionDep, _: Browsers) -> ClassOut:
    """One class: seats taken (held and paid) of its capacity, and whether it runs."""
    return ClassOut.model_validate(catalog.get_class(session, class_id))


@router.post("/classes/{class_id}/cancel")
def cancel_class(class_id: IdPath, session: SessionDep, settings: SettingsDep, actor: Admin) -> ClassOut:
    """The resort cancels a class (weather, a coach ill): every paid seat refunded in full, unpaid ones cancelled."""
    return ClassOut.model_validate(cancel.cancel_class_by_id(session, settings, actor, class_id, now=utcnow()))


# --- bookings ---


@router.post("/lessons/bookings", status_code=201)
def book(
    body: BookingIn,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    actor: Sellers,
    idempotency_key: Annotated[str | None, Header(min_length=8, max_length=100)] = None,
) -> BookingOut:
    """Book a private slot or class seats: a pending order of kind lesson holds it until paid or expired.
    A retry with the same Idempotency-Key answers the same booking (200)."""
    booking, created = bookings.book(session, settings, actor, body, idempotency_key=idempotency_key, now=utcnow())
    if not created:
        response.status_code = 200
    return BookingOut.model_validate(booking)


@router.get("/lessons/bookings")
def find_bookings(
    order_number: Annotated[str, Query(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9]+$")],
    session: SessionDep,
    _: Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.VERIFIER))],
) -> list[BookingOut]:
    """The booking of an order number (the handheld scans or types it before checking the lesson in)."""
    order_id = session.scalar(select(Order.id).where(Order.number == order_number))
    if order_id is None:
        raise not_found("Order", "订单", order_number)
    found = session.scalars(select(LessonBooking).where(LessonBooking.order_id == order_id))
    return [BookingOut.model_validate(b) for b in found]


@router.get("/lessons/bookings/{booking_id}")
def get_booking(booking_id: IdPath, session: SessionDep, actor: Readers) -> BookingOut:
    """One booking: a customer's own, a coach's own lesson, any for staff."""
    return BookingOut.model_validate(bookings.get_booking(session, booking_id, actor))


@router.post("/lessons/bookings/{booking_id}/cancel")
def cancel_booking(booking_id: IdPath, session: SessionDep, settings: SettingsDep, actor: Sellers) -> BookingOut:
    """Cancel a booking: unpaid, its order cancelled; paid, refunded in full within the cancellation rules
    (a customer: a class seat before its cutoff, a private lesson until 24 h before; staff: until it starts)."""
    return BookingOut.model_validate(cancel.cancel_booking(session, settings, actor, booking_id, now=utcnow()))


@router.post("/lessons/bookings/{booking_id}/check-in")
def check_in(booking_id: IdPath, session: SessionDep, actor: CheckIners) -> BookingOut:
    """Check a paid lesson in (签到) on its day: its coach, a handheld or an admin; once only."""
    return BookingOut.model_validate(checkin.check_in(session, actor, booking_id, now=utcnow()))
