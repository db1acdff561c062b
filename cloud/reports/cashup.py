"""End-of-shift cash-up (交班对账): what a cashier took at the counter against what they counted.

A shift runs from the cashier's previous cash-up at the site (for their first one: that local day's midnight)
to the moment they submit, so every counter payment belongs to exactly one cash-up. Expected per method:
counter payments they recorded (`payments.recorded_by`, provider counter, succeeded) less the counter refunds
they paid out (`refunds.created_by`, succeeded, not through a provider, of an order the counter took the money
for: an online rental paid in cash at the desk too, as `cloud/refunds/money.py` settles them). Counter refunds
are handed back in cash at the window or desk, so they come out of the cash line whatever the method was.
A cash-up submitted again within 10 minutes of the actor's last one, with nothing taken or paid back in
between, is refused (409 `cash_up_too_soon`): it is a retried or double-clicked submission, and a second
empty shift would only confuse the drawer's history.
Anyone who takes money at a counter closes their own drawer (cashier, rental clerk, admin); a cashier
or rental clerk sees only their own cash-ups, finance and admin see everyone's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal, Role
from cloud.errors import Conflict, not_found
from cloud.orders.models import Order
from cloud.payments.models import Payment, PaymentStatus
from cloud.refunds.models import Refund, RefundStatus
from cloud.reports.formats import Column, Report
from cloud.reports.models import CashUp, CashUpLine
from cloud.reports.period import Period, midnight
from cloud.sites.service import get_site

SEES_ALL = (Role.ADMIN, Role.FINANCE)
TOO_SOON = timedelta(minutes=10)
REFUNDS_IN = "cash"  # counter refunds are paid back in cash


def shift_start(session: Session, site_id: int, actor: str, now: datetime, zone: ZoneInfo) -> datetime:
    """The end of the actor's last cash-up at the site; none yet: the start of their local day."""
    last = session.scalar(select(func.max(CashUp.closed_at)).where(CashUp.site_id == site_id, CashUp.actor == actor))
    return last if last is not None else midnight(now.astimezone(zone).date(), zone)


def recorded(session: Session, site_id: int, actor: str, start: datetime, end: datetime) -> dict[str, list[int]]:
    """{method: [taken, paid back]} the system recorded for `actor` at the site's counter in [start, end)."""
    takings = (
        select(Payment.method, func.sum(Payment.amount_fen))
        .join(Order, and_(Order.id == Payment.order_id, Order.site_id == site_id))
        .where(
            Payment.recorded_by == actor,
            Payment.paid_at >= start,
            Payment.paid_at < end,
            Payment.provider == "counter",
            Payment.status == PaymentStatus.SUCCEEDED.value,
        )
        .group_by(Payment.method)
    )
    out = {method: [int(n), 0] for method, n in session.execute(takings)}
    at_counter = (
        select(Payment.id)
        .where(
            Payment.order_id == Refund.order_id,
            Payment.provider == "counter",
            Payment.status == PaymentStatus.SUCCEEDED.value,
        )
        .exists()
    )
    back = session.scalar(
        select(func.sum(Refund.amount_fen))
        .join(Order, and_(Order.id == Refund.order_id, Order.site_id == site_id))
        .where(
            Refund.created_by == actor,
            Refund.created_at >= start,
            Refund.created_at < end,
            Refund.status == RefundStatus.SUCCEEDED.value,
            Refund.provider.is_(None),
            at_counter,
        )
    )
    if back:
        out.setdefault(REFUNDS_IN, [0, 0])[1] = int(back)
    return out


def submit(
    session: Session, actor: Principal, site_id: int, counted: dict[str, int], note: str, *, now: datetime
) -> CashUp:
    """Close the actor's shift at the site with what they counted per method; the lines say the difference."""
    site = get_site(session, site_id)
    start = shift_start(session, site.id, actor.actor, now, ZoneInfo(site.timezone))
    figures = recorded(session, site_id, actor.actor, start, now)
    if not figures and start > now - TOO_SOON:  # start is the last cash-up's end when there was one today
        mine = (CashUp.site_id == site.id) & (CashUp.actor == actor.actor) & (CashUp.closed_at == start)
        if session.scalar(select(func.count()).where(mine)):
            raise Conflict(
                "cash_up_too_soon",
                "You cashed up minutes ago and took nothing since; look at your cash-ups",
                "您几分钟前刚交班，之后没有收退款，请查看交班记录",
            )
    cash_up = CashUp(
        site_id=site.id, staff_id=actor.subject_id, actor=actor.actor, opened_at=start, closed_at=now, note=note
    )
    for method in sorted(set(figures) | set(counted)):
        taken, back = figures.get(method, [0, 0])
        cash_up.lines.append(
            CashUpLine(method=method, takings_fen=taken, refunds_fen=back, counted_fen=counted.get(method, 0))
        )
    session.add(cash_up)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(
            "cash_up_in_progress",
            "This shift was just closed; look at your cash-ups",
            "该班次刚刚已交班，请查看交班记录",
        ) from exc
    differences = {line.method: line.difference_fen for line in cash_up.lines}
    record(session, actor, "cash_up.submit", "cash_up", cash_up.id, {"site_id": site_id, "difference_fen": differences})
    session.commit()
    return cash_up


def get(session: Session, actor: Principal, cash_up_id: int) -> CashUp:
    """One cash-up: a cashier's own only (another's is not found), anyone's for finance and admin."""
    cash_up = session.get(CashUp, cash_up_id)
    if cash_up is None or (actor.role not in SEES_ALL and cash_up.actor != actor.actor):
        raise not_found("Cash-up", "交班记录", cash_up_id)
    return cash_up


def report(session: Session, actor: Principal, p: Period) -> Report:
    """Cash-ups closed in the period, one row per method; a cashier's own only."""
    q = (
        select(
            CashUp.id,
            CashUp.actor,
            CashUp.opened_at,
            CashUp.closed_at,
            CashUpLine.method,
            CashUpLine.takings_fen,
            CashUpLine.refunds_fen,
            CashUpLine.counted_fen,
        )
        .join(CashUpLine, CashUpLine.cash_up_id == CashUp.id)
        .where(CashUp.site_id == p.site_id, p.contains(CashUp.closed_at))
        .order_by(CashUp.closed_at, CashUp.id, CashUpLine.method)
    )
    if actor.role not in SEES_ALL:
        q = q.where(CashUp.actor == actor.actor)
    rows = []
    for cid, who, opened, closed, method, taken, back, counted in session.execute(q):
        expected = taken - back
        rows.append(
            {
                "cash_up_id": cid,
                "cashier": who,
                "opened_at": opened.astimezone(p.zone).replace(tzinfo=None),
                "closed_at": closed.astimezone(p.zone).replace(tzinfo=None),
                "method": method,
                "takings_fen": taken,
                "refunds_fen": back,
                "expected_fen": expected,
                "counted_fen": counted,
                "difference_fen": counted - expected,
            }
        )
    cols = [
        Column("cash_up_id", "交班编号"),
        Column("cashier", "收银员"),
        Column("opened_at", "开始"),
        Column("closed_at", "交班时间"),
        Column("method", "支付方式"),
        Column("takings_fen", "系统收款"),
        Column("refunds_fen", "系统退款"),
        Column("expected_fen", "应有"),
        Column("counted_fen", "实点"),
        Column("difference_fen", "差额"),
    ]
    return Report("cash-ups", "交班对账", p.site_id, p.first, p.last, cols, rows, "差额 = 实点 - 应有")
