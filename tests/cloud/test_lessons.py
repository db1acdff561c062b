"""Coaches and lessons (教练, 教务): a private lesson booked, paid, checked in once; no coach double-booked; a group
class (拼班) fills up, and at its cutoff runs at its minimum or is cancelled with every paid seat refunded.

One HTTP scenario for the window's flow; the rest through the services with an explicit clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud.audit.models import AuditEntry
from cloud.customers.models import Customer
from cloud.db import utcnow
from cloud.deps import Principal, Role
from cloud.errors import DomainError
from cloud.lessons import booking, cancel, catalog, checkin
from cloud.lessons.models import LessonBooking, LessonClass
from cloud.lessons.schemas import AvailabilityIn, BookingIn, ClassIn, CoachIn, LessonProductIn
from cloud.orders.models import Order
from cloud.orders.service import expire_pending
from cloud.payments.providers import Confirmation
from cloud.payments.schemas import CounterPaymentIn
from cloud.payments.service import pay_at_counter, settle
from cloud.points.service import balance
from cloud.refunds.models import Refund
from cloud.settings import Settings
from cloud.staff.models import Staff
from harness.api import Api
from tests.cloud.api import next_weekday

pytestmark = pytest.mark.lessons

SHANGHAI = ZoneInfo("Asia/Shanghai")
ADMIN = Principal(Role.ADMIN, 1, "boss")


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), SHANGHAI)


@dataclass
class School:
    """A site with a coach (signed in as `coach-user`) on duty 09:00-17:00 on `day`, a 2 h private lesson
    and a group class type (4 seats, at least 2, bookings close 2 h before)."""

    site_id: int
    day: date
    coach_id: int
    coach_staff_id: int
    private_id: int
    group_id: int


@pytest.fixture
def school(app: FastAPI, api: Api, site: dict[str, Any]) -> School:
    api.token(Role.COACH)  # the coach's staff account
    day = next_weekday()
    with app.state.sessionmaker() as s:
        staff_id = s.scalar(select(Staff.id).where(Staff.role == "coach"))
        assert staff_id is not None
        coach = catalog.create_coach(
            s, ADMIN, CoachIn(site_id=site["id"], name="王教练", disciplines=["ski"], staff_id=staff_id)
        )
        catalog.add_availability(s, ADMIN, coach.id, AvailabilityIn(start_at=at(day, 9), end_at=at(day, 17)))
        private = catalog.create_product(
            s,
            ADMIN,
            LessonProductIn(
                site_id=site["id"], name="双板私教2小时", kind="private", duration_minutes=120,
                price_weekday_fen=60000, price_weekend_fen=80000, price_holiday_fen=90000,
            ),
        )  # fmt: skip
        group = catalog.create_product(
            s,
            ADMIN,
            LessonProductIn(
                site_id=site["id"], name="双板拼班", kind="group", duration_minutes=120, price_weekday_fen=30000,
                price_weekend_fen=40000, price_holiday_fen=45000, capacity=4, min_participants=2, cutoff_minutes=120,
            ),
        )  # fmt: skip
        return School(site["id"], day, coach.id, staff_id, private.id, group.id)


def customer(s: Session, phone: str) -> Principal:
    c = Customer(phone=phone, nickname=f"c{phone[-4:]}")
    s.add(c)
    s.commit()
    return Principal(Role.CUSTOMER, c.id, c.nickname)


def a_class(s: Session, school: School, hour: int) -> LessonClass:
    body = ClassIn(product_id=school.group_id, coach_id=school.coach_id, start_at=at(school.day, hour))
    return catalog.create_class(s, ADMIN, body, now=utcnow())


def book_private(s: Session, settings: Settings, school: School, hour: int, who: Principal = ADMIN) -> LessonBooking:
    channel = "online" if who.role is Role.CUSTOMER else "counter"
    body = BookingIn(
        channel=channel, product_id=school.private_id, coach_id=school.coach_id, start_at=at(school.day, hour)
    )
    return booking.book(s, settings, who, body, idempotency_key=None, now=utcnow())[0]


def book_seats(s: Session, settings: Settings, class_id: int, seats: int = 1, who: Principal = ADMIN) -> LessonBooking:
    channel = "online" if who.role is Role.CUSTOMER else "counter"
    body = BookingIn(channel=channel, class_id=class_id, seats=seats)
    return booking.book(s, settings, who, body, idempotency_key=None, now=utcnow())[0]


def pay_cash(s: Session, settings: Settings, b: LessonBooking) -> None:
    order = s.get(Order, b.order_id)
    assert order is not None
    pay_at_counter(
        s, settings, ADMIN, order.id, CounterPaymentIn(method="cash", amount_fen=order.total_fen), now=utcnow()
    )


def pay_wechat(s: Session, settings: Settings, b: LessonBooking) -> None:
    order = s.get(Order, b.order_id)
    assert order is not None
    paid = Confirmation(order.number, f"wx{order.id:08d}", order.total_fen, utcnow())
    settle(s, settings, "wechat", "jsapi", paid, now=utcnow())
    s.commit()


def refused(code: str, call: Any, *args: Any, **kwargs: Any) -> DomainError:
    with pytest.raises(DomainError) as err:
        call(*args, **kwargs)
    assert err.value.code == code, (err.value.code, err.value.en)
    return err.value


def status_of(s: Session, b: LessonBooking) -> tuple[str, str]:
    s.expire_all()
    order = s.get(Order, b.order_id)
    fresh = s.get(LessonBooking, b.id)
    assert order is not None and fresh is not None
    return fresh.status, order.status


def test_a_private_lesson_booked_at_the_window_is_paid_at_the_counter_and_checked_in_once_by_its_coach(
    app: FastAPI, api: Api, school: School
) -> None:
    body = {
        "channel": "counter", "product_id": school.private_id, "coach_id": school.coach_id,
        "start_at": at(school.day, 10).isoformat(), "holder_name": "李雷", "phone": "13900000001",
    }  # fmt: skip
    r = api.as_(Role.CASHIER).post("/api/v1/lessons/bookings", json=body, headers={"Idempotency-Key": "window-0001"})
    assert r.status_code == 201, r.text
    booked = r.json()
    assert (booked["status"], booked["price_fen"], booked["kind"]) == ("pending", 60000, "private")  # a weekday
    again = api.as_(Role.CASHIER).post(
        "/api/v1/lessons/bookings", json=body, headers={"Idempotency-Key": "window-0001"}
    )
    assert (again.status_code, again.json()["id"]) == (200, booked["id"])

    pay = {"method": "cash", "amount_fen": 60000}
    r = api.as_(Role.CASHIER).post(f"/api/v1/orders/{booked['order_id']}/payments/counter", json=pay)
    assert r.status_code == 201, r.text
    assert api.as_(Role.CASHIER).get(f"/api/v1/orders/{booked['order_id']}").json()["status"] == "issued"

    day = api.as_(Role.COACH).get("/api/v1/coaches/me/lessons", params={"day": school.day.isoformat()}).json()
    assert [(b["id"], b["status"], b["holder_name"]) for b in day["bookings"]] == [(booked["id"], "confirmed", "李雷")]
    assert day["coach"]["name"] == "王教练"
    params = {"day": school.day.isoformat()}
    seen = api.as_(Role.CUSTOMER).get(f"/api/v1/coaches/{school.coach_id}/schedule", params=params).json()
    taken = [(datetime.fromisoformat(b["start_at"]), datetime.fromisoformat(b["end_at"])) for b in seen["busy"]]
    assert taken == [(at(school.day, 10), at(school.day, 12))]  # what a customer sees before picking a slot
    assert [datetime.fromisoformat(w["start_at"]) for w in seen["windows"]] == [at(school.day, 9)]
    for nonsense in ("9999-12-31", "0001-01-01"):  # a day out of any season: a clear 422, not a crash
        r = api.as_(Role.CUSTOMER).get("/api/v1/classes", params={"site_id": school.site_id, "day": nonsense})
        assert r.status_code == 422, r.text

    url = f"/api/v1/lessons/bookings/{booked['id']}/check-in"
    r = api.as_(Role.COACH).post(url)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "not_lesson_day")  # it is days ahead

    with app.state.sessionmaker() as s:
        coach = Principal(Role.COACH, school.coach_staff_id, "coach-user")
        done = checkin.check_in(s, coach, booked["id"], now=at(school.day, 9, 55))
        assert done.checked_in_by == "coach:coach-user"
        err = refused("already_checked_in", checkin.check_in, s, ADMIN, booked["id"], now=at(school.day, 10))
        assert err.details["checked_in_by"] == "coach:coach-user"
        assert status_of(s, done) == ("confirmed", "used")
        refused("already_checked_in", cancel.cancel_booking, s, app.state.settings, ADMIN, booked["id"], now=utcnow())
        other = Staff(username="coach-two", password_hash="!", role="coach")
        s.add(other)
        s.commit()
        catalog.create_coach(s, ADMIN, CoachIn(site_id=school.site_id, name="张教练", staff_id=other.id))
        refused(
            "booking_not_found",
            checkin.check_in,
            s,
            Principal(Role.COACH, other.id, "coach-two"),
            done.id,
            now=utcnow(),
        )


def test_a_coach_is_never_double_booked(app: FastAPI, settings: Settings, school: School) -> None:
    with app.state.sessionmaker() as s:
        first = book_private(s, settings, school, 10)  # 10:00-12:00
        refused("coach_busy", book_private, s, settings, school, 11)  # overlaps it
        refused("coach_busy", a_class, s, school, 9)  # a class 09:00-11:00 would too
        a_class(s, school, 13)  # 13:00-15:00
        refused("coach_busy", book_private, s, settings, school, 14)  # overlaps the class
        refused("coach_not_available", book_private, s, settings, school, 16)  # 16:00-18:00 runs past 17:00
        assert book_private(s, settings, school, 15).start_at == at(school.day, 15)  # back to back is fine

        # The unpaid first booking holds its slot until its order expires; then the slot is free again.
        s.execute(update(Order).where(Order.id == first.order_id).values(expires_at=utcnow()))
        s.commit()
        assert expire_pending(s, utcnow()) == 1
        assert status_of(s, first) == ("cancelled", "expired")
        assert book_private(s, settings, school, 11).start_at == at(school.day, 11)


def test_a_class_fills_up_and_refuses_a_seat_past_its_capacity(
    app: FastAPI, settings: Settings, school: School
) -> None:
    with app.state.sessionmaker() as s:
        lesson = a_class(s, school, 13)
        three = book_seats(s, settings, lesson.id, 3)
        assert three.price_fen == 3 * 30000
        err = refused("class_full", book_seats, s, settings, lesson.id, 2)
        assert err.details["seats_left"] == 1
        last = book_seats(s, settings, lesson.id, 1)
        refused("class_full", book_seats, s, settings, lesson.id, 1)
        s.refresh(lesson)
        assert lesson.seats_taken == lesson.capacity == 4

        cancel.cancel_booking(s, settings, ADMIN, last.id, now=utcnow())  # unpaid: cancelled, its seat back
        assert status_of(s, last) == ("cancelled", "cancelled")
        s.refresh(lesson)
        assert lesson.seats_taken == 3
        assert book_seats(s, settings, lesson.id, 1).seats == 1


def test_a_class_short_of_its_minimum_at_the_cutoff_is_cancelled_and_every_paid_seat_refunded(
    app: FastAPI, settings: Settings, school: School
) -> None:
    with app.state.sessionmaker() as s:
        lesson = s.get(LessonClass, a_class(s, school, 13).id)
        assert lesson is not None
        lesson.min_participants = 3
        s.commit()
        online_customer = customer(s, "13700000001")
        at_counter = book_seats(s, settings, lesson.id)
        online = book_seats(s, settings, lesson.id, who=online_customer)
        unpaid = book_seats(s, settings, lesson.id)
        pay_cash(s, settings, at_counter)
        pay_wechat(s, settings, online)
        assert balance(s, online_customer.subject_id) > 0  # the online seat earned points

        assert cancel.cancel_short_classes(s, settings, at(school.day, 10, 59)) == 0  # before the cutoff (11:00)
        assert cancel.cancel_short_classes(s, settings, at(school.day, 11)) == 1  # 2 of at least 3 seats paid
        s.expire_all()
        assert (lesson.status, lesson.seats_taken) == ("cancelled", 0)
        assert status_of(s, at_counter) == ("cancelled", "refunded")
        assert status_of(s, online) == ("cancelled", "refunded")
        assert status_of(s, unpaid) == ("cancelled", "cancelled")
        refunds = {r.order_id: (r.amount_fen, r.status, r.provider) for r in s.scalars(select(Refund))}
        assert refunds == {
            at_counter.order_id: (30000, "succeeded", None),  # cash back at the window
            online.order_id: (30000, "pending_provider", "wechat"),  # the refund sweep sends it to WeChat Pay
        }
        assert balance(s, online_customer.subject_id) == 0  # points back
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.entity_id == str(lesson.id)))
        assert "lesson_class.cancel" in list(actions)
        assert cancel.cancel_short_classes(s, settings, at(school.day, 11, 1)) == 0  # decided once
        refused("lesson_unavailable", _late_payment_refused, s, settings, unpaid)


def _late_payment_refused(s: Session, settings: Settings, b: LessonBooking) -> None:
    """A payment of the cancelled class's unpaid order is not taken (the order is cancelled)."""
    from cloud.lessons.orders import on_paid

    order = s.get(Order, b.order_id)
    assert order is not None
    on_paid(s, settings, order, actor="cashier:x", now=utcnow())


def test_a_class_at_its_minimum_at_the_cutoff_runs_and_is_held_once_it_ended(
    app: FastAPI, settings: Settings, school: School
) -> None:
    with app.state.sessionmaker() as s:
        lesson = a_class(s, school, 13)
        paid = book_seats(s, settings, lesson.id, 2)
        pay_cash(s, settings, paid)
        pending = book_seats(s, settings, lesson.id)
        # before the cutoff the class may still be cancelled (and every seat refunded): no check-in yet
        refused("class_not_confirmed", checkin.check_in, s, ADMIN, paid.id, now=at(school.day, 10))
        assert cancel.cancel_short_classes(s, settings, at(school.day, 11)) == 1
        s.refresh(lesson)
        assert lesson.status == "confirmed"
        refused("class_closed", book_seats, s, settings, lesson.id)  # past the cutoff
        pay_cash(s, settings, pending)  # a seat held before the cutoff may still be paid
        assert status_of(s, pending) == ("confirmed", "issued")
        assert checkin.check_in(s, ADMIN, paid.id, now=at(school.day, 12, 55)).checked_in_at is not None
        assert cancel.cancel_short_classes(s, settings, at(school.day, 15)) == 1
        s.refresh(lesson)
        assert lesson.status == "held"
        assert s.scalar(select(Refund.id)) is None


def test_a_class_whose_cancellation_fails_does_not_hold_up_the_other_classes_at_the_cutoff(
    app: FastAPI, settings: Settings, school: School, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app.state.sessionmaker() as s:
        stuck, other = a_class(s, school, 13), a_class(s, school, 15)
        stuck_seat, other_seat = book_seats(s, settings, stuck.id), book_seats(s, settings, other.id)
        pay_cash(s, settings, stuck_seat)
        pay_cash(s, settings, other_seat)
        real_refund = cancel.refund_money

        def refund_failing_for_stuck(*args: Any, **kwargs: Any) -> Refund:
            if args[3].id == stuck_seat.order_id:
                raise RuntimeError("refund refused")
            return real_refund(*args, **kwargs)

        monkeypatch.setattr(cancel, "refund_money", refund_failing_for_stuck)
        assert cancel.cancel_short_classes(s, settings, at(school.day, 14)) == 1  # both short (1 of 2 seats)
        s.expire_all()
        assert (stuck.status, other.status) == ("open", "cancelled")
        assert status_of(s, stuck_seat) == ("confirmed", "issued")  # rolled back whole, retried on the next run
        assert status_of(s, other_seat) == ("cancelled", "refunded")
        monkeypatch.setattr(cancel, "refund_money", real_refund)
        assert cancel.cancel_short_classes(s, settings, at(school.day, 14, 1)) == 1
        assert status_of(s, stuck_seat) == ("cancelled", "refunded")


def test_a_customer_cancels_before_the_deadline_and_not_after_the_desk_may_until_the_start(
    app: FastAPI, settings: Settings, school: School
) -> None:
    with app.state.sessionmaker() as s:
        me = customer(s, "13700000002")
        seat = book_seats(s, settings, a_class(s, school, 13).id, who=me)
        private = book_private(s, settings, school, 9, who=me)
        body = BookingIn(
            channel="counter", product_id=school.private_id, coach_id=school.coach_id,
            start_at=at(school.day, 15), customer_id=me.subject_id,
        )  # fmt: skip
        late = booking.book(s, settings, ADMIN, body, idempotency_key=None, now=utcnow())[0]  # theirs, at the window
        for b in (seat, private):
            pay_wechat(s, settings, b)
        pay_cash(s, settings, late)

        day_before = at(school.day, 9) - timedelta(hours=23)  # inside the 24 h notice of the 09:00 lesson
        refused("too_late_to_cancel", cancel.cancel_booking, s, settings, me, private.id, now=day_before)
        cancel.cancel_booking(s, settings, me, seat.id, now=day_before)  # the class's cutoff is 11:00
        assert status_of(s, seat) == ("cancelled", "refunded")
        refused("refund_at_counter", cancel.cancel_booking, s, settings, me, late.id, now=day_before)
        cashier = Principal(Role.CASHIER, 2, "desk")
        cancel.cancel_booking(s, settings, cashier, late.id, now=at(school.day, 14, 59))
        assert status_of(s, late) == ("cancelled", "refunded")
        refused("too_late_to_cancel", cancel.cancel_booking, s, settings, cashier, private.id, now=at(school.day, 9))
