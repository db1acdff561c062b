"""The rental desk's and the ski school's reports: rentals out and overdue, lessons sold and held.

Rentals, per item: `out_now` units with customers and `overdue` the part of them past their due time, both as
of the moment the report runs (what the desk must chase now, whatever the range); `handed_out`, `returned`,
`damaged` and `lost` units and `charges_fen` (overtime, damage, loss) from the desk's movements within the
range. Lessons, per local day of the lesson, coach and lesson product: `sold_seats` paid bookings (confirmed),
`held_seats` those checked in (the lesson took place), `cancelled_seats` bookings cancelled after their order was
paid (a booking given up unpaid, its order expired, was never a sale), and `amount_fen` of the paid ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from cloud.lessons.models import BookingStatus, Coach, LessonBooking, LessonProduct
from cloud.orders.models import Order
from cloud.rentals.models import RentalItem, RentalLine, RentalMovement
from cloud.reports.formats import Column, Report
from cloud.reports.period import Period


def _when(cond: Any, value: Any) -> Any:
    return func.coalesce(func.sum(case((cond, value), else_=0)), 0)


def rentals(session: Session, p: Period, *, now: datetime) -> Report:
    with_customer = RentalLine.out_qty - RentalLine.returned_qty - RentalLine.lost_qty
    state = (
        select(RentalLine.item_id, func.sum(with_customer), _when(RentalLine.due_at < now, with_customer))
        .join(RentalItem, and_(RentalItem.id == RentalLine.item_id, RentalItem.site_id == p.site_id))
        .where(with_customer > 0)
        .group_by(RentalLine.item_id)
    )
    m = RentalMovement
    moved = (
        select(
            RentalLine.item_id,
            _when(m.kind == "out", m.quantity),
            _when(m.kind == "back", m.quantity),
            _when(m.kind == "damaged", m.quantity),
            _when(m.kind == "lost", m.quantity),
            func.sum(m.overtime_fen + m.damage_fen + m.loss_fen),
        )
        .select_from(m)
        .join(RentalLine, RentalLine.id == m.line_id)
        .join(RentalItem, and_(RentalItem.id == RentalLine.item_id, RentalItem.site_id == p.site_id))
        .where(p.contains(m.at))
        .group_by(RentalLine.item_id)
    )
    figures: dict[int, dict[str, int]] = {}
    for item, out_now, overdue in session.execute(state):
        figures[item] = {"out_now": int(out_now), "overdue": int(overdue)}
    for item, out, back, damaged, lost, charges in session.execute(moved):
        figures.setdefault(item, {}).update(
            handed_out=int(out), returned=int(back), damaged=int(damaged), lost=int(lost), charges_fen=int(charges or 0)
        )
    items = session.execute(
        select(RentalItem.id, RentalItem.code, RentalItem.name, RentalItem.category, RentalItem.size)
        .where(RentalItem.id.in_(figures))
        .order_by(RentalItem.category, RentalItem.code)
    )
    keys = ("out_now", "overdue", "handed_out", "returned", "damaged", "lost", "charges_fen")
    rows = [
        {
            "item_id": i,
            "item": code,
            "name": name,
            "category": cat,
            "size": size,
            **{k: figures[i].get(k, 0) for k in keys},
        }
        for i, code, name, cat, size in items
    ]
    cols = [
        Column("item_id", "物品编号"),
        Column("item", "物品代码"),
        Column("name", "物品"),
        Column("category", "类别"),
        Column("size", "尺码"),
        Column("out_now", "在外(件)"),
        Column("overdue", "逾期未还(件)"),
        Column("handed_out", "期间租出"),
        Column("returned", "期间归还"),
        Column("damaged", "期间损坏"),
        Column("lost", "期间丢失"),
        Column("charges_fen", "期间扣费"),
    ]
    note = f"在外、逾期截至 {now.astimezone(p.zone):%Y-%m-%d %H:%M} / out and overdue as of the report's run"
    return Report("rentals", "租赁报表", p.site_id, p.first, p.last, cols, rows, note)


def lessons(session: Session, p: Period) -> Report:
    b = LessonBooking
    day = p.day(b.start_at)
    confirmed = b.status == BookingStatus.CONFIRMED.value
    cancelled = (b.status == BookingStatus.CANCELLED.value) & Order.paid_at.is_not(None)
    counts = (
        select(
            day.label("d"),
            b.coach_id.label("coach_id"),
            b.product_id.label("product_id"),
            _when(confirmed, b.seats).label("sold"),
            _when(confirmed & b.checked_in_at.is_not(None), b.seats).label("held"),
            _when(cancelled, b.seats).label("cancelled"),
            _when(confirmed, b.price_fen).label("amount"),
        )
        .join(Order, Order.id == b.order_id)
        .where(b.site_id == p.site_id, p.contains(b.start_at), b.status != BookingStatus.PENDING.value)
        .group_by(day, b.coach_id, b.product_id)
        .subquery()
    )
    q = (
        select(counts, Coach.name, LessonProduct.name, LessonProduct.kind)
        .join(Coach, Coach.id == counts.c.coach_id)
        .join(LessonProduct, LessonProduct.id == counts.c.product_id)
    )
    rows = [
        {
            "day": p.day_of(d),
            "coach_id": cid,
            "coach": coach,
            "product_id": pid,
            "product": product,
            "kind": kind,
            "sold_seats": int(sold),
            "held_seats": int(held),
            "cancelled_seats": int(cancelled),
            "amount_fen": int(amount),
        }
        for d, cid, pid, sold, held, cancelled, amount, coach, product, kind in session.execute(q)
    ]
    rows.sort(key=lambda r: (r["day"], r["coach_id"], r["product_id"]))
    cols = [
        Column("day", "日期"),
        Column("coach_id", "教练编号"),
        Column("coach", "教练"),
        Column("product_id", "课程编号"),
        Column("product", "课程"),
        Column("kind", "类型"),
        Column("sold_seats", "售出人次"),
        Column("held_seats", "已上课人次"),
        Column("cancelled_seats", "取消人次"),
        Column("amount_fen", "销售额"),
    ]
    return Report("lessons", "课程报表", p.site_id, p.first, p.last, cols, rows)
