"""Request and answer bodies of the coaches and lessons API."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from cloud.lessons.models import BookingStatus, ClassStatus, Coach, LessonKind

MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Fen = Annotated[int, Field(ge=0, le=10**8)]
Discipline = Literal["ski", "snowboard"]
Language = Annotated[str, Field(pattern=r"^[a-z]{2}$")]


def _in_range(value: datetime) -> datetime:
    if not 2000 <= value.year <= 2100:
        raise ValueError("a time between the years 2000 and 2100")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_in_range)]
Text = Annotated[str, Field(max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CoachIn(_In):
    site_id: Id
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")]
    level: int = Field(1, ge=1, le=5, description="1 (初级) to 5 (高级/考官)")
    disciplines: list[Discipline] = Field(["ski"], min_length=1, max_length=2)
    languages: list[Language] = Field(["zh"], min_length=1, max_length=8)
    staff_id: Id | None = Field(None, description="The coach's own staff account (role coach), to sign in with")


class CoachPatch(_In):
    level: int | None = Field(None, ge=1, le=5)
    disciplines: list[Discipline] | None = Field(None, min_length=1, max_length=2)
    languages: list[Language] | None = Field(None, min_length=1, max_length=8)
    staff_id: Id | None = None
    active: bool | None = None


class CoachOut(BaseModel):
    id: int
    site_id: int
    staff_id: int | None
    name: str
    level: int
    disciplines: list[str]
    languages: list[str]
    active: bool

    @classmethod
    def of(cls, coach: Coach) -> CoachOut:
        return cls(
            id=coach.id,
            site_id=coach.site_id,
            staff_id=coach.staff_id,
            name=coach.name,
            level=coach.level,
            disciplines=coach.disciplines.split(","),
            languages=coach.languages.split(","),
            active=coach.active,
        )


class AvailabilityIn(_In):
    start_at: Instant
    end_at: Instant

    @model_validator(mode="after")
    def _a_window(self) -> AvailabilityIn:
        if not self.start_at < self.end_at <= self.start_at + timedelta(hours=24):
            raise ValueError("end_at must be after start_at, within 24 hours")
        return self


class AvailabilityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    coach_id: int
    start_at: datetime
    end_at: datetime


class LessonProductIn(_In):
    site_id: Id
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")]
    kind: LessonKind
    discipline: Discipline = "ski"
    duration_minutes: int = Field(ge=15, le=600)
    price_weekday_fen: Fen
    price_weekend_fen: Fen
    price_holiday_fen: Fen
    capacity: int = Field(1, ge=1, le=100, description="group: seats per class")
    min_participants: int = Field(1, ge=1, le=100, description="group: paid seats at the cutoff for it to run")
    cutoff_minutes: int = Field(0, ge=0, le=10080, description="group: bookings close this long before start")


class LessonProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    site_id: int
    name: str
    kind: LessonKind
    discipline: str
    duration_minutes: int
    price_weekday_fen: int
    price_weekend_fen: int
    price_holiday_fen: int
    capacity: int
    min_participants: int
    cutoff_minutes: int
    active: bool


class ClassIn(_In):
    product_id: Id
    coach_id: Id
    start_at: Instant


class ClassOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    site_id: int
    product_id: int
    coach_id: int
    start_at: datetime
    end_at: datetime
    cutoff_at: datetime
    capacity: int
    min_participants: int
    seats_taken: int
    price_fen: int
    status: ClassStatus


class BookingIn(_In):
    """A private slot (`product_id`, `coach_id`, `start_at`) or seats in a group class (`class_id`, `seats`)."""

    channel: Literal["online", "counter"]
    product_id: Id | None = None
    coach_id: Id | None = None
    start_at: Instant | None = None
    class_id: Id | None = None
    seats: int = Field(1, ge=1, le=10)
    customer_id: Id | None = Field(None, description="staff: the customer the lesson is for (points)")
    holder_name: Text = ""
    phone: Annotated[str, Field(max_length=32, pattern=r"^[0-9+\- ]*$")] = ""


class BookingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    site_id: int
    order_id: int
    kind: LessonKind
    product_id: int
    coach_id: int
    class_id: int | None
    start_at: datetime
    end_at: datetime
    seats: int
    price_fen: int
    customer_id: int | None
    holder_name: str
    status: BookingStatus
    checked_in_at: datetime | None
    checked_in_by: str | None


class CoachDayOut(BaseModel):
    """A coach's lessons of one local day: private bookings and group classes, each by start."""

    coach: CoachOut
    day: date
    bookings: list[BookingOut]
    classes: list[ClassOut]


class Interval(BaseModel):
    start_at: datetime
    end_at: datetime


class ScheduleOut(BaseModel):
    """A coach's local day: when they take private lessons, and which of it is taken already."""

    coach_id: int
    day: date
    windows: list[AvailabilityOut]
    busy: list[Interval]
