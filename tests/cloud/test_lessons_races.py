"""Concurrent bookings on PostgreSQL (several cloud processes share one): the last seat of a class and one
coach's slot each go to exactly one of the bookings made at the same moment; the others get a clear 409."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from cloud.db import utcnow
from cloud.errors import DomainError
from cloud.lessons import booking
from cloud.lessons.models import LessonBooking, LessonClass
from cloud.lessons.schemas import BookingIn
from cloud.settings import Settings
from tests.cloud.conftest import ReadyDatabases
from tests.cloud.test_lessons import ADMIN, School, a_class, at, book_seats, school

pytestmark = pytest.mark.lessons
__all__ = ["school"]  # the fixture, shared with tests/cloud/test_lessons.py

THREADS = 8


@pytest.fixture
def db_url(ready_databases: ReadyDatabases) -> Iterator[str]:
    """PostgreSQL only: SQLite has one writer, so nothing there can race."""
    url = ready_databases.take()
    yield url
    ready_databases.give_back(url)


def at_once(app: FastAPI, attempt: Callable[[int], BookingIn]) -> list[str]:
    """THREADS bookings at the same moment, each in its own session; "ok" or the refusal's code for each."""
    start = threading.Barrier(THREADS)
    settings: Settings = app.state.settings

    def one(i: int) -> str:
        with app.state.sessionmaker() as s:
            body = attempt(i)
            start.wait()
            try:
                booking.book(s, settings, ADMIN, body, idempotency_key=None, now=utcnow())
            except DomainError as exc:
                return exc.code
            return "ok"

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(one, range(THREADS)))


def test_concurrent_bookings_of_a_class_last_seat_make_exactly_one_winner(app: FastAPI, school: School) -> None:
    with app.state.sessionmaker() as s:
        lesson = a_class(s, school, 13)
        book_seats(s, app.state.settings, lesson.id, lesson.capacity - 1)
    results = at_once(app, lambda _: BookingIn(channel="counter", class_id=lesson.id, seats=1))
    assert sorted(results) == ["class_full"] * (THREADS - 1) + ["ok"]
    with app.state.sessionmaker() as s:
        taken = s.scalar(select(LessonClass.seats_taken).where(LessonClass.id == lesson.id))
        seats = s.scalar(select(func.sum(LessonBooking.seats)).where(LessonBooking.class_id == lesson.id))
        assert taken == seats == lesson.capacity


def test_concurrent_bookings_of_one_coachs_slot_make_exactly_one_winner(app: FastAPI, school: School) -> None:
    # Every attempt overlaps every other: 10:00, 10:10, ... 11:10 for a 2 h lesson.
    results = at_once(
        app,
        lambda i: BookingIn(
            channel="counter",
            product_id=school.private_id,
            coach_id=school.coach_id,
            start_at=at(school.day, 10, 0) + (at(school.day, 10, 10) - at(school.day, 10, 0)) * i,
        ),
    )
    assert sorted(results) == ["coach_busy"] * (THREADS - 1) + ["ok"]
    with app.state.sessionmaker() as s:
        assert s.scalar(select(func.count(LessonBooking.id)).where(LessonBooking.coach_id == school.coach_id)) == 1
