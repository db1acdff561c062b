"""Reports over a generated two days at one site: every figure equals a hand count of what was generated.

The days are made by direct inserts (orders over every channel and method, rentals and lessons, refunds,
passages on two gates; a few just outside the range at local midnight, some that never count), and each
report's rows are compared with the same figures counted here in plain Python.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session

from cloud.db import make_engine, make_sessionmaker
from cloud.orders.models import Order, OrderItem
from cloud.payments.models import Payment
from cloud.products.models import Product
from cloud.refunds.models import Refund
from cloud.reports.period import period
from cloud.reports.service import build
from cloud.sites.models import Gate, Site
from cloud.sync.models import GatePassage
from cloud.tickets.models import Ticket

pytestmark = pytest.mark.reports

TZ = ZoneInfo("Asia/Shanghai")
FIRST = date(2026, 1, 7)  # a Wednesday; the range is it and the next day
LAST = FIRST + timedelta(days=1)
NOW = datetime(2026, 1, 9, 4, 0, tzinfo=UTC)
# (channel, ota platform, provider, method)
WAYS = [
    ("counter", None, "counter", "cash"),
    ("counter", None, "counter", "card"),
    ("online", None, "wechat", "jsapi"),
    ("ota", "douyin", "douyin", "ota"),
    ("ota", "meituan", "meituan", "ota"),
]


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """A local wall-clock time at the site, as the UTC instant stored."""
    return datetime.combine(day, time(hour, minute), tzinfo=TZ).astimezone(UTC)


@dataclass
class World:
    """What was generated, in plain Python: the hand count's source."""

    site_id: int = 0
    gates: dict[int, str] = field(default_factory=dict)
    products: dict[int, str] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)  # paid ones, with their items
    refunds: list[dict[str, Any]] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)  # late payments, each refunded whole
    passages: list[dict[str, Any]] = field(default_factory=list)
    tickets: dict[int, int] = field(default_factory=dict)  # ticket id -> product id


def local_day(instant: datetime) -> date:
    return instant.astimezone(TZ).date()


def in_range(instant: datetime) -> bool:
    return FIRST <= local_day(instant) <= LAST


def when(rng: random.Random) -> datetime:
    """Mostly during opening hours of either day; now and then right at a local midnight edge, in or out."""
    edge = rng.random()
    if edge < 0.06:
        return at(FIRST, 0, 0)  # the first instant in range
    if edge < 0.12:
        return at(FIRST, 0, 0) - timedelta(seconds=1)  # the day before: out
    if edge < 0.18:
        return at(LAST + timedelta(days=1), 0, 0)  # the day after: out
    if edge < 0.22:
        return at(LAST + timedelta(days=1), 0, 0) - timedelta(seconds=1)  # 23:59:59 of the last day: in
    return at(rng.choice([FIRST, LAST]), rng.randint(7, 17), rng.randint(0, 59))


def generate(session: Session, rng: random.Random) -> World:
    w = World()
    site = Site(code="nanshan", name="南山滑雪场", timezone="Asia/Shanghai")
    session.add(site)
    session.flush()
    w.site_id = site.id
    for code in ("east", "west"):
        gate = Gate(site_id=site.id, code=code, name=f"{code}门", secret_hash="!")
        session.add(gate)
        session.flush()
        w.gates[gate.id] = code
    for code, name, price in (("day", "全天票", 28000), ("half", "半天票", 18000)):
        product = Product(
            site_id=site.id,
            code=code,
            name=name,
            kind="day",
            weekday_price_fen=price,
            weekend_price_fen=price,
            holiday_price_fen=price,
        )
        session.add(product)
        session.flush()
        w.products[product.id] = name
    prices = {pid: 28000 if name == "全天票" else 18000 for pid, name in w.products.items()}

    for i in range(60):
        channel, ota, provider, method = rng.choice(WAYS)
        kind = "ticket" if channel == "ota" else rng.choice(["ticket", "ticket", "ticket", "rental", "lesson"])
        paid_at = when(rng)
        items = []
        if kind == "ticket":
            for pid in rng.sample(sorted(w.products), rng.randint(1, 2)):
                items.append({"product_id": pid, "quantity": rng.randint(1, 3), "unit": prices[pid]})
        total = sum(x["quantity"] * x["unit"] for x in items) or rng.choice([15000, 30000, 60000])
        deposit = 50000 if kind == "rental" else 0
        total += deposit
        unpaid = rng.random() < 0.1  # pending or given up: never a sale
        order = Order(
            number=f"T{i:04d}",
            site_id=site.id,
            channel=channel,
            ota_channel=ota,
            kind=kind,
            deposit_fen=deposit,
            status="pending" if unpaid else "issued",
            total_fen=total,
            created_by="cashier:test",
            created_at=paid_at - timedelta(minutes=1),
            expires_at=paid_at + timedelta(minutes=15),
            paid_at=None if unpaid else paid_at,
        )
        session.add(order)
        session.flush()
        status = "late" if unpaid and rng.random() < 0.5 else ("pending" if unpaid else "succeeded")
        payment = Payment(
            order_id=order.id,
            provider=provider,
            method=method,
            status=status,
            amount_fen=total,
            provider_ref=f"ref{i}",
            created_at=paid_at,
            paid_at=paid_at,
            recorded_by="cashier:test",
        )
        session.add(payment)
        if status == "late":  # money received, never a sale: it is sent back whole, against its own payment
            session.flush()
            w.late.append({"provider": provider, "method": method, "amount": total, "paid_at": paid_at})
            session.add(
                Refund(
                    order_id=order.id,
                    amount_fen=total,
                    fee_fen=0,
                    status="pending_provider",
                    created_by="wechat",
                    created_at=paid_at,
                    provider="wechat",
                    payment_id=payment.id,
                )
            )
            w.refunds.append(
                {
                    "channel": "late",
                    "provider": provider,
                    "method": method,
                    "status": "pending_provider",
                    "amount": total,
                    "fee": 0,
                    "created_at": paid_at,
                }
            )
        for x in items:
            item = OrderItem(
                order_id=order.id,
                product_id=x["product_id"],
                visit_date=FIRST,
                quantity=x["quantity"],
                unit_price_fen=x["unit"],
            )
            session.add(item)
            session.flush()
            for unit in range(1, x["quantity"] + 1):
                ticket = Ticket(
                    order_id=order.id,
                    order_item_id=item.id,
                    unit_no=unit,
                    site_id=site.id,
                    product_id=x["product_id"],
                    kind="day",
                    visit_date=FIRST,
                    valid_from=paid_at,
                    valid_until=paid_at + timedelta(days=1),
                    price_fen=x["unit"],
                )
                session.add(ticket)
                session.flush()
                w.tickets[ticket.id] = x["product_id"]
        if unpaid:
            continue
        w.orders.append(
            {
                "id": order.id,
                "channel": ota or channel,
                "provider": provider,
                "method": method,
                "kind": kind,
                "total": total,
                "deposit": deposit,
                "paid_at": paid_at,
                "items": items,
            }
        )
        if rng.random() < 0.3:
            amount = rng.randint(0, total)
            fee = rng.choice([0, 1000])
            created = paid_at + timedelta(hours=rng.randint(0, 20))
            status = rng.choice(["succeeded", "succeeded", "pending_provider", "processing", "failed"])
            session.add(
                Refund(
                    order_id=order.id,
                    amount_fen=amount,
                    fee_fen=fee,
                    status=status,
                    reason="test",
                    created_by="cashier:test",
                    created_at=created,
                )
            )
            w.refunds.append(
                {
                    "channel": ota or channel,
                    "provider": provider,
                    "method": method,
                    "status": status,
                    "amount": amount,
                    "fee": fee,
                    "created_at": created,
                }
            )

    ticket_ids = [str(t) for t in w.tickets]
    for _ in range(400):
        p = {
            "gate_id": rng.choice(sorted(w.gates)),
            "at": when(rng),
            "direction": rng.choice(["in", "in", "in", "out"]),
            "outcome": rng.choice(["admit", "admit", "admit", "deny"]),
            "passed": rng.random() < 0.9,
            "counted": rng.random() < 0.7,
            "ticket_id": rng.choice([*ticket_ids, None, "987654"]),
        }
        w.passages.append(p)
        # Stored as the cloud stores an arriving passage: with its ticket's product (cloud.sync.service).
        named = p["ticket_id"]
        product_id = w.tickets.get(int(named)) if isinstance(named, str) else None
        session.add(
            GatePassage(
                event_id=uuid.uuid4(), site_id=site.id, code="ok", credential="signed", product_id=product_id, **p
            )
        )
    session.commit()
    return w


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[Session, World]]:
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as session:
        yield session, generate(session, random.Random(14))
    engine.dispose()


def rows(session: Session, site_id: int, name: str, first: date = FIRST, last: date = LAST) -> list[dict[str, Any]]:
    return build(session, name, period(session, site_id, first, last), now=NOW).rows


def test_sales_by_day_channel_and_method_equal_a_hand_count(world: tuple[Session, World]) -> None:
    session, w = world
    hand: dict[tuple[date, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for o in w.orders:
        if in_range(o["paid_at"]):
            figures = hand[(local_day(o["paid_at"]), o["channel"], o["method"])]
            figures[0] += 1
            figures[1] += o["total"]
            figures[2] += o["deposit"]
    got = {
        (r["day"], r["channel"], r["method"]): [r["orders"], r["amount_fen"], r["deposit_fen"]]
        for r in rows(session, w.site_id, "sales")
    }
    assert got == dict(hand)
    assert {k[1] for k in got} == {"counter", "online", "douyin", "meituan"}


def test_sales_by_product_count_tickets_and_rentals_and_lessons_without_deposits(world: tuple[Session, World]) -> None:
    session, w = world
    hand: dict[tuple[date, str, str], list[int]] = defaultdict(lambda: [0, 0])
    names = {"rental": "租赁", "lesson": "课程"}
    for o in w.orders:
        if not in_range(o["paid_at"]):
            continue
        day = local_day(o["paid_at"])
        if o["kind"] == "ticket":
            for x in o["items"]:
                figures = hand[(day, w.products[x["product_id"]], o["channel"])]
                figures[0] += x["quantity"]
                figures[1] += x["quantity"] * x["unit"]
        else:
            figures = hand[(day, names[o["kind"]], o["channel"])]
            figures[0] += 1
            figures[1] += o["total"] - o["deposit"]
    got = {
        (r["day"], r["product"], r["channel"]): [r["quantity"], r["amount_fen"]]
        for r in rows(session, w.site_id, "sales-products")
    }
    assert got == dict(hand)


def test_refunds_by_day_channel_and_status_equal_a_hand_count(world: tuple[Session, World]) -> None:
    session, w = world
    hand: dict[tuple[date, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in w.refunds:
        if in_range(r["created_at"]):
            figures = hand[(local_day(r["created_at"]), r["channel"], r["status"])]
            figures[0] += 1
            figures[1] += r["amount"]
            figures[2] += r["fee"]
    got = {
        (r["day"], r["channel"], r["status"]): [r["refunds"], r["amount_fen"], r["fee_fen"]]
        for r in rows(session, w.site_id, "refunds")
    }
    assert got == dict(hand) and got


def test_settlement_nets_refunds_against_the_provider_that_took_the_money(world: tuple[Session, World]) -> None:
    session, w = world
    hand: dict[tuple[date, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for o in w.orders:
        if in_range(o["paid_at"]):
            hand[(local_day(o["paid_at"]), o["provider"], o["method"])][0] += o["total"]
    for late in w.late:
        if in_range(late["paid_at"]):
            hand[(local_day(late["paid_at"]), late["provider"], late["method"])][0] += late["amount"]
    for r in w.refunds:
        if in_range(r["created_at"]):
            figures = hand[(local_day(r["created_at"]), r["provider"], r["method"])]
            figures[1] += r["amount"]
            figures[2] += r["fee"]
    got = {
        (r["day"], r["provider"], r["method"]): [r["gross_fen"], r["refunds_fen"], r["fees_kept_fen"]]
        for r in rows(session, w.site_id, "settlement")
    }
    assert got == dict(hand)
    assert all(r["net_fen"] == r["gross_fen"] - r["refunds_fen"] for r in rows(session, w.site_id, "settlement"))


def entered(p: dict[str, Any]) -> bool:
    return p["direction"] == "in" and p["outcome"] == "admit" and p["passed"] and in_range(p["at"])


def test_entries_per_gate_and_hour_count_admitted_passages_only(world: tuple[Session, World]) -> None:
    session, w = world
    hand = Counter(
        (local_day(p["at"]), p["at"].astimezone(TZ).hour, w.gates[p["gate_id"]]) for p in w.passages if entered(p)
    )
    got = {(r["day"], r["hour"], r["gate"]): r["entries"] for r in rows(session, w.site_id, "entries")}
    assert got == dict(hand)
    assert {k[1] for k in got} >= {0, 23, 7, 17}  # the midnight edges land in their own local hours


def test_entries_per_product_follow_the_ticket_and_unknown_tickets_are_counted_apart(
    world: tuple[Session, World],
) -> None:
    session, w = world
    hand = Counter(
        (local_day(p["at"]), w.products.get(w.tickets.get(int(p["ticket_id"] or 0), 0), "未知"))
        for p in w.passages
        if entered(p)
    )
    got = {(r["day"], r["product"]): r["entries"] for r in rows(session, w.site_id, "entries-products")}
    assert got == dict(hand)
    assert any(product == "未知" for _, product in got)


def test_a_one_day_range_counts_that_local_day_only(world: tuple[Session, World]) -> None:
    session, w = world
    only = [r for r in rows(session, w.site_id, "entries", LAST, LAST)]
    assert {r["day"] for r in only} == {LAST}
    assert sum(r["entries"] for r in only) == sum(1 for p in w.passages if entered(p) and local_day(p["at"]) == LAST)
