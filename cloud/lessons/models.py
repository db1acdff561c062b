"""Tables of coaches and lessons (教练, 教务): coaches, their availability, lesson products, group classes
(拼班) and bookings. A booking's money is an ordinary `Order` of kind lesson (`orders.id`), with no order items.

Times are UTC instants (`UtcDateTime`); what day a lesson is on is the site's local day (sites.timezone).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow


class LessonKind(StrEnum):
    PRIVATE = "private"  # one coach, one slot, booked by the slot (私教)
    GROUP = "group"  # a seat in a scheduled group class (拼班)


class ClassStatus(StrEnum):
    OPEN = "open"  # taking bookings until its cutoff
    CONFIRMED = "confirmed"  # at or above its minimum at the cutoff: it runs
    CANCELLED = "cancelled"  # below its minimum at the cutoff (or cancelled by the resort): every booking refunded
    HELD = "held"  # a confirmed class whose end has passed: it took place


class BookingStatus(StrEnum):
    PENDING = "pending"  # its order is unpaid: the slot or seat is held until the order expires
    CONFIRMED = "confirmed"  # paid
    CANCELLED = "cancelled"  # given up unpaid, cancelled by the customer or the resort, or its class cancelled


class Coach(Base):
    """A coach (教练) at a site; optionally the staff account (role coach) they sign in with."""

    __tablename__ = "coaches"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    level: Mapped[int] = mapped_column(Integer, default=1)  # 1 (初级) .. 5 (高级/考官)
    disciplines: Mapped[str] = mapped_column(String(32), default="ski")  # "ski", "snowboard" or "ski,snowboard"
    languages: Mapped[str] = mapped_column(String(64), default="zh")  # comma-separated: "zh,en"
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CoachAvailability(Base):
    """A window in which a coach can be booked (排班): private slots must lie inside one."""

    __tablename__ = "coach_availability"
    __table_args__ = (UniqueConstraint("coach_id", "start_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    coach_id: Mapped[int] = mapped_column(ForeignKey("coaches.id"), index=True)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LessonProduct(Base):
    """What is sold: a private lesson of `duration_minutes` (price per slot) or a group class type (price per
    seat, with the capacity, minimum and cutoff its classes get). Prices by day type like tickets."""

    __tablename__ = "lesson_products"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(8))  # LessonKind
    discipline: Mapped[str] = mapped_column(String(16), default="ski")  # ski | snowboard
    duration_minutes: Mapped[int] = mapped_column(Integer)
    price_weekday_fen: Mapped[int] = mapped_column(Integer)
    price_weekend_fen: Mapped[int] = mapped_column(Integer)
    price_holiday_fen: Mapped[int] = mapped_column(Integer)
    capacity: Mapped[int] = mapped_column(Integer, default=1)  # group: seats per class
    min_participants: Mapped[int] = mapped_column(Integer, default=1)  # group: seats paid at the cutoff to run
    cutoff_minutes: Mapped[int] = mapped_column(Integer, default=0)  # group: bookings close this long before start
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class LessonClass(Base):
    """A scheduled group class (拼班): one coach, a start and end, seats filled up to `capacity`.

    `seats_taken` counts held (unpaid, until their order expires) and paid seats; it only grows by a
    conditional UPDATE (`seats_taken + n <= capacity`), so concurrent bookings never overbook it."""

    __tablename__ = "lesson_classes"
    __table_args__ = (Index("ix_lesson_classes_site_start", "site_id", "start_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("lesson_products.id"), index=True)
    coach_id: Mapped[int] = mapped_column(ForeignKey("coaches.id"), index=True)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[datetime] = mapped_column(UtcDateTime)
    cutoff_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    capacity: Mapped[int] = mapped_column(Integer)
    min_participants: Mapped[int] = mapped_column(Integer)
    seats_taken: Mapped[int] = mapped_column(Integer, default=0)
    price_fen: Mapped[int] = mapped_column(Integer)  # per seat, by the day type of the class's day
    status: Mapped[str] = mapped_column(String(16), default=ClassStatus.OPEN.value, index=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # confirmed or cancelled at


class LessonBooking(Base):
    """A private slot or seats in a class, paid by its order (`orders.kind` lesson, one booking per order).

    `coach_id`, `start_at` and `end_at` are copied from the class for a group booking, so a coach's day and
    double-booking checks read one table. `checked_in_at`: the lesson took place for this booking (签到)."""

    __tablename__ = "lesson_bookings"
    __table_args__ = (
        Index("ix_lesson_bookings_coach_start", "coach_id", "start_at"),
        Index("ix_lesson_bookings_site_start", "site_id", "start_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # LessonKind
    product_id: Mapped[int] = mapped_column(ForeignKey("lesson_products.id"))
    coach_id: Mapped[int] = mapped_column(ForeignKey("coaches.id"))
    class_id: Mapped[int | None] = mapped_column(ForeignKey("lesson_classes.id"), index=True)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[datetime] = mapped_column(UtcDateTime)
    seats: Mapped[int] = mapped_column(Integer, default=1)
    price_fen: Mapped[int] = mapped_column(Integer)  # the whole booking (= the order's total_fen)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    holder_name: Mapped[str] = mapped_column(String(100), default="")  # who takes the lesson (学员)
    phone: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[str] = mapped_column(String(16), default=BookingStatus.PENDING.value, index=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    checked_in_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    checked_in_by: Mapped[str | None] = mapped_column(String(100))
