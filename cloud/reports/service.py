"""Every table report by name: what the route, the tests and the benchmark call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from sqlalchemy.orm import Session

from cloud.reports import desk, entries, money
from cloud.reports.formats import Report
from cloud.reports.period import Period


class ReportName(StrEnum):
    SALES = "sales"
    SALES_PRODUCTS = "sales-products"
    REFUNDS = "refunds"
    SETTLEMENT = "settlement"
    ENTRIES = "entries"
    ENTRIES_PRODUCTS = "entries-products"
    RENTALS = "rentals"
    LESSONS = "lessons"


BUILDERS: dict[ReportName, Callable[[Session, Period, datetime], Report]] = {
    ReportName.SALES: lambda s, p, now: money.sales(s, p),
    ReportName.SALES_PRODUCTS: lambda s, p, now: money.sales_products(s, p),
    ReportName.REFUNDS: lambda s, p, now: money.refunds(s, p),
    ReportName.SETTLEMENT: lambda s, p, now: money.settlement(s, p),
    ReportName.ENTRIES: lambda s, p, now: entries.entries(s, p),
    ReportName.ENTRIES_PRODUCTS: lambda s, p, now: entries.entries_products(s, p),
    ReportName.RENTALS: lambda s, p, now: desk.rentals(s, p, now=now),
    ReportName.LESSONS: lambda s, p, now: desk.lessons(s, p),
}


def build(session: Session, name: ReportName | str, p: Period, *, now: datetime) -> Report:
    """The report `name` over the period; `now` is when rentals' out and overdue are counted."""
    return BUILDERS[ReportName(name)](session, p, now)
