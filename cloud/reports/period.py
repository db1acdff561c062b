"""A report's period: local days of a site turned into UTC instants in Python, and SQL buckets within it.

Day and hour buckets are integer arithmetic on epoch seconds from the period's first local midnight, so the
same SQL groups the same way on SQLite and PostgreSQL (no time-zone functions in the database). Exact for a
zone whose UTC offset does not change within the period, which holds for every site in China (Asia/Shanghai
has had no daylight saving since 1991); elsewhere a DST change moves rows within an hour of midnight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, literal_column, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from cloud.errors import DomainError
from cloud.sites.service import get_site

MAX_DAYS = 366
EARLIEST, LATEST = date(2000, 1, 1), date(2099, 12, 31)
DAY_S, HOUR_S = 86400, 3600
WORK_MEM = "64MB"


class epoch_s(FunctionElement[int]):
    """Whole epoch seconds of a UTC datetime column."""

    type = Integer()
    inherit_cache = True
    name = "epoch_s"


@compiles(epoch_s, "postgresql")
def _epoch_pg(element: epoch_s, compiler: SQLCompiler, **kw: Any) -> str:
    # date_part gives double precision: cheaper than EXTRACT's numeric over millions of rows.
    return f"CAST(floor(date_part('epoch', {compiler.process(element.clauses, **kw)})) AS BIGINT)"


@compiles(epoch_s)
def _epoch_sqlite(element: epoch_s, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


def bad_range(en: str, zh: str) -> DomainError:
    return DomainError("bad_range", en, zh, status_code=422)


@dataclass(frozen=True, slots=True)
class Period:
    """Local days `first`..`last` (both included) at a site; `start`/`end` their UTC instants [start, end)."""

    site_id: int
    zone: ZoneInfo
    first: date
    last: date

    @property
    def start(self) -> datetime:
        return midnight(self.first, self.zone)

    @property
    def end(self) -> datetime:
        return midnight(self.last + timedelta(days=1), self.zone)

    def _since(self, column: Any) -> ColumnElement[int]:
        origin = int(self.start.timestamp())
        return epoch_s(column) - literal_column(str(origin), Integer)  # an int inlined: GROUP BY sees one text

    def day(self, column: Any) -> ColumnElement[int]:
        """The column's local day as a number of days after `first` (see `day_of`)."""
        return self._since(column) // literal_column(str(DAY_S), Integer)

    def hour(self, column: Any) -> ColumnElement[int]:
        """The column's local hour of its day, 0..23."""
        return (self._since(column) % literal_column(str(DAY_S), Integer)) // literal_column(str(HOUR_S), Integer)

    def day_of(self, index: int) -> date:
        return self.first + timedelta(days=int(index))

    def contains(self, column: Any) -> ColumnElement[bool]:
        return (column >= self.start) & (column < self.end)


def midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def period(session: Session, site_id: int, first: date, last: date | None = None) -> Period:
    """The site's period `first`..`last` (default: the one day `first`); 404 for an unknown site, 422 for a range
    backwards, longer than a year or outside 2000..2099."""
    last = first if last is None else last
    if last < first:
        raise bad_range(f"The range ends ({last}) before it starts ({first})", f"结束日期 {last} 早于开始日期 {first}")
    if (last - first).days >= MAX_DAYS:
        raise bad_range(f"A report covers at most {MAX_DAYS} days", f"报表最多覆盖 {MAX_DAYS} 天")
    if first < EARLIEST or last > LATEST:
        raise bad_range("Dates must be within 2000-2099", "日期须在 2000 至 2099 年之间")
    site = get_site(session, site_id)
    if session.get_bind().dialect.name == "postgresql":
        # A season's aggregation hashes and sorts ~a million rows: in memory, not in 4 MB batches on disk.
        # SET LOCAL: for this report's transaction only.
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    return Period(site_id=site.id, zone=ZoneInfo(site.timezone), first=first, last=last)
