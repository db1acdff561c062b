"""Entries (入园人次) from the passages the gates uploaded: per gate and local hour, and per product.

An entry is a passage a gate admitted inbound and somebody actually walked through: `direction` in, `outcome`
admit, `passed` true. It is counted whether or not it used up one of the ticket's entries (`counted`), so a
re-entry within a ticket's window is a person at the gate all the same; denied scans and exits are not
entries. The product is the ticket's (the passage's `ticket_id` is the ticket number); an entry whose ticket
the cloud does not know (a gate's keep-open passage has none) is counted under 未知.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.products.models import Product
from cloud.reports.formats import Column, Report
from cloud.reports.period import Period
from cloud.sites.models import Gate
from cloud.sync.models import GatePassage

UNKNOWN = "未知"


def _entries(p: Period) -> Any:
    g = GatePassage
    return (g.site_id == p.site_id) & p.contains(g.at) & (g.direction == "in") & (g.outcome == "admit") & g.passed


def entries(session: Session, p: Period) -> Report:
    day, hour = p.day(GatePassage.at), p.hour(GatePassage.at)
    counts = (
        select(day.label("d"), hour.label("h"), GatePassage.gate_id.label("gate_id"), func.count().label("n"))
        .where(_entries(p))
        .group_by(day, hour, GatePassage.gate_id)
        .subquery()
    )
    q = select(counts.c.d, counts.c.h, Gate.id, Gate.code, Gate.name, counts.c.n).join(
        Gate, Gate.id == counts.c.gate_id
    )
    rows = [
        {"day": p.day_of(d), "hour": h, "gate_id": gid, "gate": code, "gate_name": name, "entries": n}
        for d, h, gid, code, name, n in session.execute(q)
    ]
    rows.sort(key=lambda r: (r["day"], r["hour"], r["gate"]))
    cols = [
        Column("day", "日期"),
        Column("hour", "时段(点)"),
        Column("gate_id", "闸机编号"),
        Column("gate", "闸机代码"),
        Column("gate_name", "闸机"),
        Column("entries", "入园人次"),
    ]
    return Report("entries", "入园人次(闸机/小时)", p.site_id, p.first, p.last, cols, rows)


def entries_products(session: Session, p: Period) -> Report:
    """Entries per local day and product: the product the cloud stored on each passage (`GatePassage.product_id`,
    its ticket's when the passage arrived). A season's million passages are grouped by (day, product) alone and
    only that small aggregate is joined to the products for their names; joining every passage to its ticket took
    1.2-1.5 s on the bench's season."""
    day = p.day(GatePassage.at)
    counts = (
        select(day.label("d"), GatePassage.product_id.label("product_id"), func.count().label("n"))
        .where(_entries(p))
        .group_by(day, GatePassage.product_id)
        .subquery()
    )
    q = select(counts.c.d, Product.id, Product.name, counts.c.n).outerjoin(Product, Product.id == counts.c.product_id)
    rows = [
        {"day": p.day_of(d), "product_id": pid, "product": name or UNKNOWN, "entries": n}
        for d, pid, name, n in session.execute(q)
    ]
    rows.sort(key=lambda r: (r["day"], r["product_id"] or 0))
    cols = [
        Column("day", "日期"),
        Column("product_id", "产品编号"),
        Column("product", "产品"),
        Column("entries", "入园人次"),
    ]
    return Report("entries-products", "入园人次(产品)", p.site_id, p.first, p.last, cols, rows)


def entries_by_hour(session: Session, p: Period) -> dict[int, int]:
    """Entries per local hour over the period, every gate together: the chart's line."""
    hour = p.hour(GatePassage.at)
    q = select(hour, func.count()).where(_entries(p)).group_by(hour)
    return {int(h): int(n) for h, n in session.execute(q)}
