"""Report routes: every report as JSON, CSV or XLSX; two charts as PNG or SVG; the cashier's cash-up.

`GET /reports/{name}?site_id=&from=&to=&format=json|csv|xlsx`: local days `from`..`to` of the site, both
included (`to` defaults to `from`), at most a year. Finance and admin see every report; a cashier or rental
clerk submits and sees their own cash-ups (`/reports/cash-ups`), finance and admin everyone's.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cloud.db import utcnow
from cloud.deps import MAX_ID, IdPath, Principal, Role, SessionDep, TransactionScopedRoute, require
from cloud.reports import cashup, charts
from cloud.reports.formats import render
from cloud.reports.period import period
from cloud.reports.service import ReportName, build

router = APIRouter(prefix="/reports", tags=["reports"], route_class=TransactionScopedRoute)
Finance = Annotated[Principal, Depends(require(Role.ADMIN, Role.FINANCE))]
Drawer = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.RENTAL_CLERK))]
CashUpReader = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.FINANCE, Role.RENTAL_CLERK))]
SiteId = Annotated[int, Query(ge=1, le=MAX_ID)]
From = Annotated[date, Query(alias="from", description="First local day, included")]
To = Annotated[date | None, Query(alias="to", description="Last local day, included (default: `from`)")]


class TableFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    XLSX = "xlsx"


class ChartFormat(StrEnum):
    PNG = "png"
    SVG = "svg"


CHART_MEDIA = {ChartFormat.PNG: "image/png", ChartFormat.SVG: "image/svg+xml"}
Money = Annotated[int, Field(ge=0, le=10**9)]


class CashUpIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: int = Field(ge=1, le=MAX_ID)
    counted_fen: dict[Annotated[str, Field(pattern="^(cash|card)$")], Money] = Field(
        description="What the cashier counted per method (cash, card), fen; a method left out counted 0"
    )
    note: str = Field(default="", max_length=200)


class CashUpLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    method: str
    takings_fen: int
    refunds_fen: int
    expected_fen: int
    counted_fen: int
    difference_fen: int = Field(description="counted - expected: negative is money missing")


class CashUpOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    site_id: int
    actor: str
    opened_at: datetime
    closed_at: datetime
    note: str
    lines: list[CashUpLineOut]


@router.post("/cash-ups", status_code=201)
def submit_cash_up(session: SessionDep, actor: Drawer, body: Annotated[CashUpIn, Body()]) -> CashUpOut:
    """Close my shift at the site with what I counted; the answer shows expected, counted and the difference."""
    done = cashup.submit(session, actor, body.site_id, body.counted_fen, body.note, now=utcnow())
    return CashUpOut.model_validate(done)


@router.get("/cash-ups", response_model=None)
def cash_ups(
    session: SessionDep,
    actor: CashUpReader,
    site_id: SiteId,
    first: From,
    last: To = None,
    format: TableFormat = TableFormat.JSON,
) -> Response:
    """Cash-ups closed in the range, a row per method: a cashier's own, everyone's for finance and admin."""
    return render(cashup.report(session, actor, period(session, site_id, first, last)), format.value)


@router.get("/cash-ups/{cash_up_id}")
def cash_up(cash_up_id: IdPath, session: SessionDep, actor: CashUpReader) -> CashUpOut:
    """One cash-up: a cashier's own only (another's: 404)."""
    return CashUpOut.model_validate(cashup.get(session, actor, cash_up_id))


@router.get("/charts/entries-hourly", response_model=None)
def chart_entries(
    session: SessionDep,
    _: Finance,
    site_id: SiteId,
    day: date,
    format: ChartFormat = ChartFormat.PNG,
) -> Response:
    """Entries per hour of `day` (bars) against the same weekday a week before (line)."""
    period(session, site_id, day)  # 404 / 422 before drawing (and before a week back from year 1)
    return Response(charts.entries_hourly(session, site_id, day, format.value), media_type=CHART_MEDIA[format])


@router.get("/charts/sales-channels", response_model=None)
def chart_sales(
    session: SessionDep,
    _: Finance,
    site_id: SiteId,
    first: From,
    last: To = None,
    format: ChartFormat = ChartFormat.PNG,
) -> Response:
    """Money taken per channel over the range, in yuan."""
    p = period(session, site_id, first, last)
    return Response(charts.sales_channels(session, p, format.value), media_type=CHART_MEDIA[format])


@router.get("/{name}", response_model=None)
def report(
    name: ReportName,
    session: SessionDep,
    _: Finance,
    site_id: SiteId,
    first: From,
    last: To = None,
    format: TableFormat = TableFormat.JSON,
) -> Response:
    """One report over the site's local days `from`..`to` as JSON (money in fen), CSV or XLSX (money in yuan)."""
    p = period(session, site_id, first, last)
    return render(build(session, name, p, now=utcnow()), format.value)
