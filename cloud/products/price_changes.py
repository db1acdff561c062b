"""Price changes (调价): scheduled, listed as the product's price history, withdrawn before they apply.

Decisions:
- A change takes effect at `effective_at`, now or later (up to a year ahead). A time up to `PAST_GRACE` in the
  past (a form filled in a moment ago) means now: orders made before the change was saved paid the old price,
  so the history never claims the new one applied earlier than it did. Further in the past is refused.
- An order's unit price is the one in effect when it was created (`service.price_fen(..., now)`); a change
  never reprices an order already made, paid or not.
- Only a change not yet in effect can be withdrawn; one in effect is undone by scheduling another. Nothing is
  ever deleted: the history keeps every change, who made it and when, and who withdrew it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NoReturn, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal
from cloud.errors import Conflict, DomainError, not_found
from cloud.products import catalog, prices
from cloud.products.models import PriceChange
from cloud.products.schemas import PriceChangeIn, PriceChangeOut, PriceChangeStatus
from cloud.products.service import get_product

PAST_GRACE = timedelta(minutes=5)
MAX_AHEAD = timedelta(days=366)
HISTORY_LIMIT = 1000


def as_change(row: PriceChange) -> prices.Change:
    """The pure rule's view of a row."""
    return prices.Change(
        row.id,
        row.effective_at,
        prices.Prices(row.weekday_price_fen, row.weekend_price_fen, row.holiday_price_fen),
        row.withdrawn_at is not None,
    )


def in_effect(rows: Iterable[PriceChange], now: datetime) -> PriceChange | None:
    """The change whose prices apply at `now` (the latest started, later id on a tie), or None."""
    live = [r for r in rows if r.withdrawn_at is None and r.effective_at <= now]
    return max(live, key=lambda r: (r.effective_at, r.id), default=None)


def next_scheduled(rows: Iterable[PriceChange], now: datetime) -> PriceChange | None:
    """The next change to take effect after `now` (of two at the same time, the later id, which wins then)."""
    ahead = [r for r in rows if r.withdrawn_at is None and r.effective_at > now]
    return min(ahead, key=lambda r: (r.effective_at, -r.id), default=None)


def schedule(session: Session, actor: Principal, product_id: int, body: PriceChangeIn, *, now: datetime) -> PriceChange:
    """Schedule new prices for a product from `body.effective_at` (default now)."""
    product = get_product(session, product_id)
    at = body.effective_at or now
    if at < now - PAST_GRACE:
        raise DomainError(
            "effective_at_past",
            f"A price change cannot start in the past ({at.isoformat()})",
            f"调价生效时间不能早于现在（{at.isoformat()}）",
        )
    if at > now + MAX_AHEAD:
        raise DomainError(
            "effective_at_too_far",
            "A price change can be scheduled up to a year ahead",
            "调价最多可提前一年安排",
        )
    change = PriceChange(
        product_id=product.id,
        effective_at=max(at, now),
        weekday_price_fen=body.weekday_price_fen,
        weekend_price_fen=body.weekend_price_fen,
        holiday_price_fen=body.holiday_price_fen,
        note=body.note,
        created_by=actor.actor,
        created_at=now,
    )
    session.add(change)
    session.flush()
    detail = body.model_dump(mode="json") | {"effective_at": change.effective_at.isoformat()}
    record(session, actor, "price_change.schedule", "product", product.id, detail | {"price_change_id": change.id})
    catalog.bump(session, product.site_id)
    session.commit()
    return change


def history(session: Session, product_id: int, *, now: datetime, limit: int = HISTORY_LIMIT) -> list[PriceChangeOut]:
    """Every change of the product, the newest made first, each with its status at `now`."""
    get_product(session, product_id)
    rows = list(session.scalars(select(PriceChange).where(PriceChange.product_id == product_id)))
    rows.sort(key=lambda r: r.id, reverse=True)
    return [out(r, rows, now) for r in rows[:limit]]


def out(row: PriceChange, siblings: Iterable[PriceChange], now: datetime) -> PriceChangeOut:
    """The change as the API shows it; `siblings` are all changes of its product (to tell in effect from
    superseded)."""
    status: PriceChangeStatus
    if row.withdrawn_at is not None:
        status = "withdrawn"
    elif row.effective_at > now:
        status = "scheduled"
    else:
        current = in_effect(siblings, now)
        status = "in_effect" if current is not None and current.id == row.id else "superseded"
    return PriceChangeOut.model_validate(row).model_copy(update={"status": status})


def get_change(session: Session, change_id: int) -> PriceChange:
    change = session.get(PriceChange, change_id)
    if change is None:
        raise not_found("Price change", "调价", change_id)
    return change


def withdraw(session: Session, actor: Principal, change_id: int, *, now: datetime) -> PriceChange:
    """Withdraw a change not yet in effect: it never applies; it stays in the history as withdrawn.

    One conditional UPDATE decides (not yet withdrawn, not yet in effect at `now`): of two withdrawals at once
    exactly one succeeds (one audit entry, one bump); the other is told why from the row as it is then."""
    change = get_change(session, change_id)
    result = cast(
        CursorResult[Any],
        session.execute(
            update(PriceChange)
            .where(PriceChange.id == change_id, PriceChange.withdrawn_at.is_(None), PriceChange.effective_at > now)
            .values(withdrawn_at=now, withdrawn_by=actor.actor)
            .execution_options(synchronize_session=False)
        ),
    )
    if result.rowcount != 1:
        session.rollback()  # expires what this session held: the row is read as it is now
        _refuse(get_change(session, change_id), now)
    session.refresh(change)
    product = get_product(session, change.product_id)
    record(session, actor, "price_change.withdraw", "product", product.id, {"price_change_id": change.id})
    catalog.bump(session, product.site_id)
    session.commit()
    return change


def _refuse(change: PriceChange, now: datetime) -> NoReturn:
    """Why a change cannot be withdrawn (already withdrawn, or in effect)."""
    if change.withdrawn_at is not None:
        raise Conflict(
            "price_change_withdrawn",
            f"Price change {change.id} was already withdrawn",
            f"调价 {change.id} 已撤回",
        )
    raise Conflict(
        "price_change_in_effect",
        f"Price change {change.id} took effect at {change.effective_at.isoformat()}: schedule a new one instead",
        f"调价 {change.id} 已于 {change.effective_at.isoformat()} 生效，请另行调价",
    )
