"""The verification list (核销记录) as finance reads it: every entry a code was used for, at a handheld or at a gate.

A handheld's verifications are stored one by one (accepted or refused, `cloud.verify.service`); a gate's are the
admissions it uploaded that counted an entry on one of the cloud's tickets (`GatePassage`, passed and counted).
A gate's denials are not verifications and are not listed; its admissions are listed as accepted, with reason
``ok`` or the conflict the cloud found when the passage arrived (``over_use``, ``after_revocation``). Gate rows
have `source` "gate", the gate's code as `device`, no staff member, and their `id` is the stored passage's.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.errors import DomainError
from cloud.orders.models import Order
from cloud.settings import Settings
from cloud.sites.models import Gate
from cloud.sites.service import get_site
from cloud.sync.models import GatePassage
from cloud.tickets.models import Ticket
from cloud.tickets.service import local_midnight
from cloud.verify import rules, service
from cloud.verify.schemas import VerificationOut

Source = Literal["all", "handheld", "gate"]
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2100, 1, 1)  # days a list may ask for (local midnights stay in range)


def day_bounds(session: Session, settings: Settings, site_id: int | None, day: date) -> tuple[datetime, datetime]:
    """The local day's [start, end) in UTC (the site's time zone; the service's without a site)."""
    if not FIRST_DAY <= day <= LAST_DAY:
        raise DomainError("day_out_of_range", f"No verifications on {day}", f"{day} 无核销记录", status_code=422)
    tz = ZoneInfo(get_site(session, site_id).timezone if site_id is not None else settings.timezone)
    return local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)


def listing(
    session: Session,
    settings: Settings,
    *,
    source: Source = "all",
    site_id: int | None = None,
    channel: str | None = None,
    staff: str | None = None,
    gate: str | None = None,
    day: date | None = None,
    accepted: bool | None = None,
    limit: int = 1000,
) -> list[VerificationOut]:
    """Handheld verifications and gate admissions, oldest first, filtered alike; `gate` names a handheld or a
    gate, `staff` and `accepted=False` match handheld rows only (a gate has no staff and lists no refusals)."""
    window = day_bounds(session, settings, site_id, day) if day is not None else None
    rows: list[VerificationOut] = []
    if source in ("all", "handheld"):
        found = service.listing(
            session,
            settings,
            site_id=site_id,
            channel=channel,
            staff=staff,
            gate=gate,
            window=window,
            accepted=accepted,
            limit=limit,
        )
        rows += [service.out(v) for v in found]
    if source in ("all", "gate") and staff is None and accepted is not False:
        rows += _gate_rows(session, site_id=site_id, channel=channel, gate=gate, window=window, limit=limit)
    rows.sort(key=lambda r: (r.at, r.source, r.id))
    return rows[:limit]


def _gate_rows(
    session: Session,
    *,
    site_id: int | None,
    channel: str | None,
    gate: str | None,
    window: tuple[datetime, datetime] | None,
    limit: int,
) -> list[VerificationOut]:
    stmt = (
        select(GatePassage, Gate.code)
        .join(Gate, Gate.id == GatePassage.gate_id)
        .where(GatePassage.passed.is_(True), GatePassage.counted.is_(True), GatePassage.outcome == "admit")
        .order_by(GatePassage.at, GatePassage.id)
    )
    if site_id is not None:
        stmt = stmt.where(GatePassage.site_id == site_id)
    if gate:
        stmt = stmt.where(Gate.code == gate)
    if window is not None:
        stmt = stmt.where(GatePassage.at >= window[0], GatePassage.at < window[1])
    passages = [
        (p, code)
        for p, code in session.execute(stmt)
        if p.ticket_id and p.ticket_id.isascii() and p.ticket_id.isdigit() and len(p.ticket_id) <= 10
    ]
    ids = {int(p.ticket_id or 0) for p, _ in passages}
    channels: dict[int, tuple[str, str | None]] = {}
    for start in range(0, len(ids), 500):
        chunk = sorted(ids)[start : start + 500]
        q = select(Ticket.id, Order.channel, Order.ota_channel).join(Order, Order.id == Ticket.order_id)
        channels.update({t: (c, o) for t, c, o in session.execute(q.where(Ticket.id.in_(chunk)))})
    out: list[VerificationOut] = []
    for p, gate_code in passages:
        ticket_id = int(p.ticket_id or 0)
        if ticket_id not in channels:
            continue  # not one of the cloud's tickets
        order_channel, ota_channel = channels[ticket_id]
        if channel and channel not in (order_channel, ota_channel):
            continue
        reason = p.conflict or "ok"
        en, zh = rules.TEXTS.get(reason, rules.TEXTS["ok"])
        out.append(
            VerificationOut(
                source="gate",
                id=p.id,
                event_id=p.event_id,
                site_id=p.site_id,
                device=gate_code,
                staff_name="",
                ticket_id=ticket_id,
                channel=order_channel,
                ota_channel=ota_channel,
                at=p.at,
                received_at=p.received_at,
                accepted=True,
                reason=reason,
                message=en,
                message_zh=zh,
                entries_left=None,
                undone_at=None,
                undone_by=None,
                undo_reason=None,
            )
        )
        if len(out) >= limit:
            break
    return out
