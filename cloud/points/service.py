"""Points (积分): an append-only ledger per customer; the balance is the last entry's `balance_after`.

Appending reads the last (seq, balance) and inserts seq+1 with the new balance inside a savepoint.
Two concurrent appends read the same last entry; the loser collides on UNIQUE(customer_id, seq),
rolls its savepoint back, re-reads and decides again, so a spend is always checked against the
balance it is really booked on and the CHECK(balance_after >= 0) is never the last line of defence.

Points earned from an order are booked when it is paid (they show in the balance at once) but are
*held*, not spendable, while the order can still be refunded: while any of its tickets is unused,
refundable and before its refund cutoff. They become spendable by themselves once every ticket of the
order is used, refunded or past its cutoff (no job: the hold is worked out at each spend). A refund takes
its share of the order's points back, and since held points could not have been spent, that never
leaves a shortfall: buying, spending the points and refunding gains nothing. A spend may use at most
balance - held (`spendable`); the hold is re-read on each attempt, after the last entry, so a concurrent
payment's fresh points are never spendable either.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.customers.service import get_customer
from cloud.deps import Principal
from cloud.errors import Conflict, DomainError
from cloud.orders.models import Order, OrderStatus
from cloud.points import rules
from cloud.points.models import PointsEntry, PointsKind, SignIn
from cloud.products.models import Product
from cloud.refunds.rules import refund_deadline
from cloud.settings import Settings
from cloud.sites.models import Site
from cloud.tickets.models import Ticket, TicketState

MAX_BALANCE = 1_000_000_000  # keeps every balance inside a 32-bit INTEGER column
_MAX_ATTEMPTS = 200  # each failed attempt means another append committed; this only bounds starvation


def balance(session: Session, customer_id: int) -> int:
    """The customer's balance: the last ledger entry's balance_after (0 without entries)."""
    return _last(session, customer_id)[1]


def recent_entries(session: Session, customer_id: int, limit: int) -> list[PointsEntry]:
    q = select(PointsEntry).where(PointsEntry.customer_id == customer_id).order_by(PointsEntry.seq.desc())
    return list(session.scalars(q.limit(limit)))


def _find(session: Session, customer_id: int, kind: PointsKind, ref: str) -> PointsEntry | None:
    return session.scalar(
        select(PointsEntry).where(
            PointsEntry.customer_id == customer_id, PointsEntry.kind == kind.value, PointsEntry.ref == ref
        )
    )


def _last(session: Session, customer_id: int) -> tuple[int, int]:
    row = session.execute(
        select(PointsEntry.seq, PointsEntry.balance_after)
        .where(PointsEntry.customer_id == customer_id)
        .order_by(PointsEntry.seq.desc())
        .limit(1)
    ).first()
    return (row.seq, row.balance_after) if row is not None else (0, 0)


def held(session: Session, customer_id: int, now: datetime) -> int:
    """Points earned from orders that can still be refunded: in the balance, not yet spendable."""
    # A ticket can only be refunded before its visit day starts (local time), so older ones need no look.
    rows = session.execute(
        select(Ticket.order_id, Ticket.visit_date, Product.refund_cutoff_hours, Site.timezone)
        .join(Order, Order.id == Ticket.order_id)
        .join(Product, Product.id == Ticket.product_id)
        .join(Site, Site.id == Ticket.site_id)
        .where(
            Order.customer_id == customer_id,
            Ticket.status.in_([TicketState.VALID.value, TicketState.BLOCKED.value]),  # blocked: still refundable
            Ticket.entries_used == 0,
            Ticket.first_entry_at.is_(None),
            Product.refundable.is_(True),
            Ticket.visit_date >= (now - timedelta(days=1)).date(),
        )
    )
    open_orders = {
        r.order_id for r in rows if now < refund_deadline(r.visit_date, ZoneInfo(r.timezone), r.refund_cutoff_hours)
    }
    if not open_orders:
        return 0
    left = session.execute(
        select(PointsEntry.order_id, func.sum(PointsEntry.delta - PointsEntry.shortfall))
        .where(
            PointsEntry.customer_id == customer_id,
            PointsEntry.order_id.in_(open_orders),
            PointsEntry.kind.in_([PointsKind.EARN.value, PointsKind.REVERSE.value]),
        )
        .group_by(PointsEntry.order_id)
    )
    return sum(max(0, int(points)) for _, points in left)


def spendable(session: Session, customer_id: int, now: datetime) -> int:
    """What the customer may spend now: the balance less the points held (never below 0)."""
    return max(0, balance(session, customer_id) - held(session, customer_id, now))


def insufficient(balance_now: int, needed: int, held_now: int = 0) -> Conflict:
    available = max(0, balance_now - held_now)
    return Conflict(
        "insufficient_points",
        f"Not enough points: {available} of the balance {balance_now} can be spent now, needed {needed}",
        f"积分不足：余额 {balance_now}，当前可用 {available}，需要 {needed}",
        balance=balance_now,
        spendable=available,
        needed=needed,
    )


def append(
    session: Session,
    customer_id: int,
    kind: PointsKind,
    ref: str,
    amount: int,
    *,
    now: datetime,
    order_id: int | None = None,
    note: str = "",
    clamp: bool = False,
    keep: Callable[[], int] | None = None,
) -> tuple[PointsEntry, bool]:
    """Book `amount` once per (customer, kind, ref); (entry, created). Does not commit.

    A debit larger than the balance (less `keep()`, read after the balance on each attempt) raises
    `insufficient_points`, or with `clamp` takes the balance to 0 and records the rest as the shortfall.
    """
    existing = _find(session, customer_id, kind, ref)
    if existing is not None:
        return existing, False
    for _ in range(_MAX_ATTEMPTS):
        seq, before = _last(session, customer_id)
        floor = keep() if keep is not None and amount < 0 else 0
        delta, shortfall = amount, 0
        if before + amount < 0 and clamp:
            delta, shortfall = -before, -(before + amount)
        elif before + amount < floor:
            raise insufficient(before, -amount, floor)
        if before + delta > MAX_BALANCE:
            raise Conflict("points_limit", f"A balance may not exceed {MAX_BALANCE}", f"积分余额不能超过 {MAX_BALANCE}")
        entry = PointsEntry(
            customer_id=customer_id,
            seq=seq + 1,
            delta=delta,
            balance_after=before + delta,
            kind=kind.value,
            ref=ref,
            order_id=order_id,
            shortfall=shortfall,
            note=note,
            created_at=now,
        )
        try:
            with session.begin_nested():
                session.add(entry)
        except IntegrityError:
            existing = _find(session, customer_id, kind, ref)
            if existing is not None:
                return existing, False  # a concurrent request booked the same thing
            if _last(session, customer_id)[0] == seq:
                raise  # not a lost race on seq: a real integrity problem
            continue
        return entry, True
    raise DomainError("points_busy", "Points are busy; try again", "积分系统繁忙，请重试", status_code=503)


def earn_for_order(session: Session, settings: Settings, order: Order, *, now: datetime) -> PointsEntry | None:
    """points_per_yuan (the rules in force, `cloud.points.rules`) for each whole yuan paid, once per order
    (ref order:{id}). Does not commit."""
    paid_fen = order.total_fen - (order.deposit_fen or 0)  # a deposit is given back: it earns nothing
    if order.customer_id is None or paid_fen < 100:
        return None
    points = paid_fen // 100 * rules.current(session, settings).points_per_yuan
    if points <= 0:
        return None
    entry, _ = append(
        session, order.customer_id, PointsKind.EARN, f"order:{order.id}", points, now=now, order_id=order.id
    )
    return entry


def reverse_for_refund(
    session: Session, settings: Settings, order: Order, *, refund_amount_fen: int, refund_id: int, now: datetime
) -> PointsEntry | None:
    """Take back the refunded share of an order's points, once per refund (ref refund:{id}). Does not commit.

    `refund_amount_fen` is the price of the refunded tickets, the fee included: a refunded ticket keeps
    no points. floor(earned * refunded / total), never more than what is left unreversed, and all that
    is left once the whole order is refunded (no rounding crumbs). If the customer has
    already spent the points, the balance goes to 0, not below; the entry's `shortfall` says how
    many points could not be taken back (visible to finance; not clawed back from later earnings).
    """
    earning_fen = order.total_fen - (order.deposit_fen or 0)  # what earned points (`earn_for_order`)
    if order.customer_id is None or earning_fen <= 0 or refund_amount_fen <= 0:
        return None
    ref = f"refund:{refund_id}"
    existing = _find(session, order.customer_id, PointsKind.REVERSE, ref)
    if existing is not None:
        return existing
    earning = _find(session, order.customer_id, PointsKind.EARN, f"order:{order.id}")
    earned = earning.delta if earning is not None else None
    if not earned:
        return None
    reversed_before = session.scalar(
        select(func.coalesce(func.sum(PointsEntry.shortfall - PointsEntry.delta), 0)).where(
            PointsEntry.kind == PointsKind.REVERSE.value, PointsEntry.order_id == order.id
        )
    )
    left = earned - int(reversed_before or 0)
    if order.status == OrderStatus.REFUNDED.value:
        amount = left
    else:
        amount = min(earned * min(refund_amount_fen, earning_fen) // earning_fen, left)
    if amount <= 0:
        return None
    entry, _ = append(
        session,
        order.customer_id,
        PointsKind.REVERSE,
        ref,
        -amount,
        now=now,
        order_id=order.id,
        note=f"order:{order.id}",
        clamp=True,
    )
    return entry


def already_signed_in(day: object) -> Conflict:
    return Conflict("already_signed_in", f"Already signed in on {day}", f"{day} 已签到", day=str(day))


def signin(session: Session, settings: Settings, customer_id: int, *, now: datetime) -> tuple[SignIn, int]:
    """每日签到 once per local day: signin_points, plus signin_streak_bonus on every 7th day in a row (the rules
    in force, `cloud.points.rules`)."""
    get_customer(session, customer_id)
    day = now.astimezone(ZoneInfo(settings.timezone)).date()
    if session.scalar(select(SignIn.id).where(SignIn.customer_id == customer_id, SignIn.day == day)) is not None:
        raise already_signed_in(day)
    yesterday = session.scalar(
        select(SignIn.streak).where(SignIn.customer_id == customer_id, SignIn.day == day - timedelta(days=1))
    )
    streak = (yesterday or 0) + 1
    rule = rules.current(session, settings)
    points = rule.signin_points + (rule.signin_streak_bonus if streak % 7 == 0 else 0)
    row = SignIn(customer_id=customer_id, day=day, streak=streak, points=points, created_at=now)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        raise already_signed_in(day) from exc  # a concurrent sign-in won
    if points > 0:
        append(session, customer_id, PointsKind.SIGNIN, f"signin:{day.isoformat()}", points, now=now)
    session.commit()
    return row, balance(session, customer_id)


def spend(session: Session, customer_id: int, points: int, ref: str, *, now: datetime) -> tuple[PointsEntry, bool]:
    """Spend points once per ref; (entry, created). 409 `insufficient_points` beyond what is spendable now."""
    get_customer(session, customer_id)
    entry, created = append(
        session, customer_id, PointsKind.SPEND, ref, -points, now=now, keep=lambda: held(session, customer_id, now)
    )
    if entry.delta != -points:
        raise Conflict(
            "ref_reused",
            f"Reference {ref} was used for a spend of {-entry.delta} points",
            f"编号 {ref} 已用于消费 {-entry.delta} 积分",
        )
    session.commit()
    return entry, created


def adjust(
    session: Session, actor: Principal, customer_id: int, delta: int, reason: str, *, now: datetime
) -> PointsEntry:
    """A manual correction by an admin, audit-logged; it cannot take the balance below 0 either."""
    get_customer(session, customer_id)
    ref = f"adjust:{uuid.uuid4().hex}"
    entry, _ = append(session, customer_id, PointsKind.ADJUST, ref, delta, now=now, note=reason)
    record(
        session,
        actor,
        "points.adjust",
        "customer",
        customer_id,
        {"delta": delta, "reason": reason, "entry_id": entry.id, "balance_after": entry.balance_after},
    )
    session.commit()
    return entry
