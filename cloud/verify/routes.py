"""Handheld verification (核销) API: for handheld terminals and the staff mini-program."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from cloud.db import utcnow
from cloud.deps import IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, require
from cloud.verify import listing, service
from cloud.verify.schemas import DEVICE, PRINTABLE, LookupOut, UndoIn, VerificationOut, VerifyIn

router = APIRouter(prefix="/verify", tags=["verify"], route_class=TransactionScopedRoute)
Verifiers = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.GATE_TECH, Role.VERIFIER))]
Readers = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.FINANCE, Role.GATE_TECH, Role.VERIFIER))]
SiteQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1)]


@router.get("/lookup")
def lookup(
    q: Annotated[str, Query(min_length=1, max_length=512, pattern=PRINTABLE)],
    session: SessionDep,
    settings: SettingsDep,
    _: Verifiers,
    site_id: SiteQuery = None,
) -> LookupOut:
    """The tickets a signed QR, plain/OTA code, ticket number or holder's phone names, each valid now or why
    not (the gates' codes); with `site_id`, another site's ticket reads `wrong_site`."""
    return service.lookup(session, settings, q, site_id, now=utcnow())


@router.post("", status_code=200)
def verify(body: VerifyIn, session: SessionDep, settings: SettingsDep, actor: Verifiers) -> VerificationOut:
    """Consume one entry of the ticket `code` names, under the gates' rules; `accepted` false says why not.
    The same `event_id` again answers the same (a handheld's offline queue replays with its own ids)."""
    return service.out(service.verify(session, settings, actor, body, now=utcnow()))


@router.post("/{verification_id}/undo")
def undo(
    verification_id: IdPath, body: UndoIn, session: SessionDep, settings: SettingsDep, actor: Verifiers
) -> VerificationOut:
    """Give a verification's entry back, within `STARFISH_VERIFY_UNDO_MINUTES` of it; audited."""
    return service.out(service.undo(session, settings, actor, verification_id, body.reason, now=utcnow()))


CSV_COLUMNS = (
    "source", "id", "at", "site_id", "device", "staff_name", "ticket_id", "channel", "ota_channel",
    "accepted", "reason", "entries_left", "undone_at", "undone_by", "undo_reason",
)  # fmt: skip


@router.get("/list", response_model=None)
def verifications(
    session: SessionDep,
    settings: SettingsDep,
    _: Readers,
    site_id: SiteQuery = None,
    channel: Annotated[str | None, Query(max_length=16, pattern=PRINTABLE)] = None,
    staff: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
    gate: Annotated[str | None, Query(pattern=DEVICE, description="A handheld's or a gate's name")] = None,
    day: date | None = None,
    accepted: bool | None = None,
    source: listing.Source = "all",
    format: Literal["json", "csv"] = "json",
) -> list[VerificationOut] | Response:
    """Verifications (核销记录) per site, channel, staff member, handheld or gate and local day, oldest first:
    handhelds' verifications and gates' admissions (`cloud.verify.listing`); `format=csv` for a spreadsheet
    (UTF-8 with BOM, so Excel reads the Chinese)."""
    rows = listing.listing(
        session,
        settings,
        source=source,
        site_id=site_id,
        channel=channel,
        staff=staff,
        gate=gate,
        day=day,
        accepted=accepted,
        limit=100_000 if format == "csv" else 1000,
    )
    if format == "json":
        return rows
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_cell(getattr(row, c)) for c in CSV_COLUMNS])
    name = f"verifications-{day.isoformat() if day else 'all'}.csv"
    return Response(
        "\ufeff" + buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _cell(value: object) -> str:
    """A CSV cell; text a spreadsheet would run as a formula is quoted with a leading apostrophe."""
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
