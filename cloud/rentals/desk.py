"""The desk: hand-out, return and the deposit settled automatically when everything is back.

Hand-out scans tagged pairs (one conditional UPDATE ... WHERE status = 'available' each: a pair out on one
order is refused to every other, whatever runs at once) or gives counted units out, never more than a line's
quantity. Every desk action on an order takes the order's rental row lock first, so two handhelds scanning for
the same order take turns.

Return (partial returns allowed; a line never takes back more than went out) charges, per unit:
- overtime: `GRACE` (15 min) after `due_at` is free; past it, every started hour since `due_at` at the line's
  hourly price (of the day type it was rented at), at most the unit's deposit;
- damaged: the fee the clerk gives, else the item's damage fee (the pair goes to `damaged`, off the shelf;
  a counted unit leaves the stock until the admin adds it back);
- lost: the item's loss fee (replacement value) instead of overtime; the pair is `lost`, the stock one less.
When every unit of every line has gone out and come back (or been declared lost), or the clerk closes an order
with nothing out (`close`: units never picked up are freed; the rent is kept), the deposit less the charges is
refunded at once through `refund_money` (points_fen 0: the deposit earned none): cash back at the desk for a
desk order, a WeChat refund queued for an online one. Charges above the deposit: nothing is refunded and the
difference is recorded as `owed_fen` on the rental order (to collect at the desk; audited as rental.owed).

The handheld (role verifier) scans pairs and units in as `ok` only (overtime, which the clock decides, is still
charged): declaring a unit damaged or lost, or giving a damage fee, is the rental clerk's or the admin's (403
`clerk_only`), and so is the money. When a handheld's return brings the last unit back, the rental stays `out`
with nothing out and the deposit is settled by the clerk's `close` at the desk (the handheld has no cash drawer
and hands no money back).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal, Role
from cloud.errors import Conflict, DomainError, Forbidden, not_found
from cloud.orders.models import Order, OrderStatus
from cloud.orders.service import transition
from cloud.refunds.money import refund_money
from cloud.rentals.items import asset_by_tag, get_item
from cloud.rentals.models import (
    AssetStatus,
    RentalAsset,
    RentalItem,
    RentalLine,
    RentalMovement,
    RentalOrder,
    RentalStatus,
)
from cloud.rentals.orders import give_back, rental_of
from cloud.rentals.schemas import HandOutIn, ReturnIn
from cloud.settings import Settings

GRACE = timedelta(minutes=15)


def overtime_fen(line: RentalLine, unit_deposit_fen: int, now: datetime) -> int:
    """One unit's overtime: each started hour past due_at once the grace is over, capped at its deposit."""
    late = now - line.due_at
    if late <= GRACE:
        return 0
    hours = math.ceil(late / timedelta(hours=1))
    return min(hours * line.hour_fen, unit_deposit_fen)


def _locked(session: Session, order_id: int) -> tuple[Order, RentalOrder, dict[int, RentalLine]]:
    order = session.get(Order, order_id)
    if order is None:
        raise not_found("Order", "订单", order_id)
    rental = rental_of(session, order, lock=True)
    session.refresh(order)
    lines = {
        x.id: x
        for x in session.scalars(
            select(RentalLine).where(RentalLine.order_id == order.id).execution_options(populate_existing=True)
        )
    }
    return order, rental, lines


def _at_desk(order: Order, rental: RentalOrder, doing: str) -> None:
    if rental.status not in (RentalStatus.READY.value, RentalStatus.OUT.value):
        raise Conflict(
            "rental_not_at_desk",
            f"Rental {order.number} is {rental.status}; nothing to {doing}",
            f"租赁订单 {order.number} 当前为 {rental.status}，不能{'出租' if doing == 'hand out' else '归还'}",
            status=rental.status,
        )


def _line_for(lines: dict[int, RentalLine], item_id: int, pending: dict[int, int], number: str) -> RentalLine:
    for line in lines.values():
        if line.item_id == item_id and line.out_qty + pending.get(line.id, 0) < line.quantity:
            return line
    raise Conflict(
        "nothing_to_hand_out",
        f"Order {number} has no unit of this item left to hand out",
        f"订单 {number} 中该物品已全部租出",
        item_id=item_id,
    )


def hand_out(session: Session, actor: Principal, order_id: int, body: HandOutIn, *, now: datetime) -> Order:
    """Scanned pairs and counted units go out to the customer; all or nothing."""
    order, rental, lines = _locked(session, order_id)
    _at_desk(order, rental, "hand out")
    pending: dict[int, int] = {}
    for tag in body.tags:
        asset = asset_by_tag(session, tag)
        line = _line_for(lines, asset.item_id, pending, order.number)
        got = session.execute(
            update(RentalAsset)
            .where(RentalAsset.id == asset.id, RentalAsset.status == AssetStatus.AVAILABLE.value)
            .values(status=AssetStatus.OUT.value, line_id=line.id, updated_at=now)
        )
        if got.rowcount == 0:  # type: ignore[attr-defined]
            session.refresh(asset)
            raise Conflict(
                "asset_not_available",
                f"Asset {tag} is {asset.status}; it cannot go out",
                f"资产 {tag} 当前为 {asset.status}，不能出租",
                tag=tag,
                status=asset.status,
            )
        pending[line.id] = pending.get(line.id, 0) + 1
        session.add(_move(order, line, "out", 1, actor, now, asset_id=asset.id))
    for count in body.counted:
        line = _order_line(lines, count.line_id, order.number)
        if get_item(session, line.item_id).tracking != "counted":
            raise DomainError("scan_tags", "A tagged item goes out by scanning its pairs", "按编号管理的物品请扫码出租")
        if line.out_qty + pending.get(line.id, 0) + count.quantity > line.quantity:
            raise Conflict(
                "nothing_to_hand_out",
                f"Line {line.id} has {line.quantity - line.out_qty - pending.get(line.id, 0)} units left to go out",
                f"该行仅剩 {line.quantity - line.out_qty - pending.get(line.id, 0)} 件可出租",
                line_id=line.id,
            )
        pending[line.id] = pending.get(line.id, 0) + count.quantity
        session.add(_move(order, line, "out", count.quantity, actor, now))
    for line_id, n in pending.items():
        line = lines[line_id]
        line.out_qty += n
        line.handed_out_at = line.handed_out_at or now
    rental.status = RentalStatus.OUT.value
    record(session, actor, "rental.hand_out", "order", order.id, {"tags": body.tags, "counted": pending})
    session.commit()
    return order


def _order_line(lines: dict[int, RentalLine], line_id: int, number: str) -> RentalLine:
    line = lines.get(line_id)
    if line is None:
        raise not_found("Rental line", "租赁明细", f"{line_id} of {number}")
    return line


def _move(
    order: Order, line: RentalLine, kind: str, qty: int, actor: Principal, now: datetime, **fees: int | None
) -> RentalMovement:
    return RentalMovement(order_id=order.id, line_id=line.id, kind=kind, quantity=qty, at=now, by=actor.actor, **fees)


def return_items(
    session: Session, settings: Settings, actor: Principal, order_id: int, body: ReturnIn, *, now: datetime
) -> Order:
    """Pairs and units come back (or are declared lost) with their charges; the last one settles the deposit."""
    _scan_only(actor, body)
    order, rental, lines = _locked(session, order_id)
    _at_desk(order, rental, "return")
    back: dict[int, int] = {}  # line id -> units back or lost in this return
    charges = 0
    for a in body.assets:
        asset = asset_by_tag(session, a.tag)
        if asset.status != AssetStatus.OUT.value or asset.line_id not in lines:
            raise Conflict(
                "asset_not_out_here",
                f"Asset {a.tag} is not out on order {order.number}",
                f"资产 {a.tag} 不在订单 {order.number} 的租出物品中",
                tag=a.tag,
            )
        line = lines[asset.line_id]
        item = get_item(session, line.item_id)
        fees = _fees(line, item, a.condition, a.damage_fen, now)
        charges += sum(fees.values())
        asset.status = {"ok": "available", "damaged": "damaged", "lost": "lost"}[a.condition]
        asset.line_id, asset.updated_at = None, now
        _restock(session, item, a.condition, 1)
        _count_back(line, a.condition, 1, back, sum(fees.values()))
        session.add(_move(order, line, _kind(a.condition), 1, actor, now, asset_id=asset.id, **fees))
    for c in body.counted:
        line = _order_line(lines, c.line_id, order.number)
        item = get_item(session, line.item_id)
        if item.tracking != "counted":
            raise DomainError(
                "scan_tags", "A tagged item comes back by scanning its pairs", "按编号管理的物品请扫码归还"
            )
        fees = {k: v * c.quantity for k, v in _fees(line, item, c.condition, c.damage_fen, now).items()}
        charges += sum(fees.values())
        _restock(session, item, c.condition, c.quantity)
        _count_back(line, c.condition, c.quantity, back, sum(fees.values()))
        session.add(_move(order, line, _kind(c.condition), c.quantity, actor, now, **fees))
    for line_id, n in back.items():
        line = lines[line_id]
        if line.returned_qty + line.lost_qty > line.out_qty:
            raise Conflict(
                "more_back_than_out",
                f"Line {line.id}: {n} units back but only {line.out_qty} went out",
                f"该行仅租出 {line.out_qty} 件，不能归还 {n} 件",
                line_id=line.id,
            )
        if line.returned_qty + line.lost_qty == line.quantity:
            line.returned_at = now
    rental.charges_fen += charges
    record(session, actor, "rental.return", "order", order.id, {"lines": back, "charges_fen": charges})
    everything_back = all(x.out_qty == x.quantity and x.returned_qty + x.lost_qty == x.quantity for x in lines.values())
    if everything_back and actor.role is not Role.VERIFIER:  # the handheld leaves the money to the desk (close)
        _settle(session, settings, actor, order, rental, now)
    session.commit()
    return order


def _scan_only(actor: Principal, body: ReturnIn) -> None:
    """The handheld scans units in as they are; damage, loss and their fees are the clerk's to declare."""
    backs = [(x.condition, x.damage_fen) for x in body.assets] + [(x.condition, x.damage_fen) for x in body.counted]
    if actor.role is Role.VERIFIER and any(cond != "ok" or fee is not None for cond, fee in backs):
        raise Forbidden(
            "clerk_only",
            "Only the rental desk declares a unit damaged or lost and sets its fee",
            "损坏、丢失及其费用只能由租赁柜台登记",
        )


def _kind(condition: str) -> str:
    return {"ok": "back", "damaged": "damaged", "lost": "lost"}[condition]


def _fees(line: RentalLine, item: RentalItem, condition: str, damage_fen: int | None, now: datetime) -> dict[str, int]:
    unit_deposit = line.deposit_fen // line.quantity
    if condition == "lost":
        return {"overtime_fen": 0, "damage_fen": 0, "loss_fen": item.loss_fee_fen}
    damage = (item.damage_fee_fen if damage_fen is None else damage_fen) if condition == "damaged" else 0
    return {"overtime_fen": overtime_fen(line, unit_deposit, now), "damage_fen": damage, "loss_fen": 0}


def _restock(session: Session, item: RentalItem, condition: str, qty: int) -> None:
    if condition == "ok":
        give_back(session, item.id, qty)
    elif condition == "lost" or item.tracking == "counted":  # a damaged counted unit leaves the stock too
        session.execute(update(RentalItem).where(RentalItem.id == item.id).values(stock=RentalItem.stock - qty))


def _count_back(line: RentalLine, condition: str, qty: int, back: dict[int, int], fees: int) -> None:
    if condition == "lost":
        line.lost_qty += qty
    else:
        line.returned_qty += qty
    line.charges_fen += fees
    back[line.id] = back.get(line.id, 0) + qty


def close(session: Session, settings: Settings, actor: Principal, order_id: int, *, now: datetime) -> Order:
    """End a paid rental with nothing out: units never picked up are freed, the deposit less charges refunded."""
    order, rental, lines = _locked(session, order_id)
    _at_desk(order, rental, "close")
    still_out = sum(x.out_qty - x.returned_qty - x.lost_qty for x in lines.values())
    if still_out:
        raise Conflict(
            "rental_still_out",
            f"{still_out} units of order {order.number} are still out",
            f"订单 {order.number} 还有 {still_out} 件未归还",
            still_out=still_out,
        )
    for line in lines.values():
        give_back(session, line.item_id, line.quantity - line.out_qty)
        line.returned_at = line.returned_at or now
    _settle(session, settings, actor, order, rental, now)
    session.commit()
    return order


def _settle(
    session: Session, settings: Settings, actor: Principal, order: Order, rental: RentalOrder, now: datetime
) -> None:
    refund_fen = max(0, rental.deposit_fen - rental.charges_fen)
    rental.owed_fen = max(0, rental.charges_fen - rental.deposit_fen)
    if refund_fen > 0:
        refund = refund_money(
            session, settings, actor, order, refund_fen, points_fen=0, reason="rental deposit", now=now
        )
        rental.refund_id = refund.id
    rental.deposit_refund_fen, rental.status, rental.closed_at = refund_fen, RentalStatus.CLOSED.value, now
    if order.status == OrderStatus.ISSUED.value:
        transition(session, order, OrderStatus.USED, actor, "rental closed")
    detail = {"charges_fen": rental.charges_fen, "deposit_refund_fen": refund_fen, "owed_fen": rental.owed_fen}
    record(session, actor, "rental.owed" if rental.owed_fen else "rental.close", "order", order.id, detail)
