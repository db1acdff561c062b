"""Points: a ledger that earns on paid orders, signs in daily with streaks, spends, and never goes negative."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.audit.models import AuditEntry
from cloud.deps import Role
from cloud.errors import DomainError
from cloud.orders.models import Order, OrderStatus
from cloud.points import service
from cloud.points.models import PointsEntry, PointsKind, SignIn
from cloud.settings import Settings
from harness.api import Api

# 2026-12-20 09:00 in Beijing (01:00 UTC), a Sunday in the season.
NOW = datetime(2026, 12, 20, 1, 0, tzinfo=UTC)


@pytest.fixture
def customer_id(api: Api) -> int:
    api.token(Role.CUSTOMER)
    assert api.customer_id is not None
    return api.customer_id


@pytest.fixture
def session(app: FastAPI) -> Iterator[Session]:
    with app.state.sessionmaker() as s:
        yield s


def credit(session: Session, customer_id: int, points: int, ref: str = "opening") -> None:
    service.append(session, customer_id, PointsKind.ADJUST, ref, points, now=NOW)
    session.commit()


def paid_order(session: Session, site: dict[str, Any], customer_id: int, total_fen: int) -> Order:
    order = Order(
        number=f"SF-test-{total_fen}-{customer_id}",
        site_id=site["id"],
        customer_id=customer_id,
        channel="online",
        status=OrderStatus.ISSUED.value,
        total_fen=total_fen,
        created_by="test",
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=15),
        paid_at=NOW,
    )
    session.add(order)
    session.commit()
    return order


def ledger(session: Session, customer_id: int) -> list[PointsEntry]:
    q = select(PointsEntry).where(PointsEntry.customer_id == customer_id).order_by(PointsEntry.seq)
    return list(session.scalars(q))


# --- earning and reversing -----------------------------------------------------------------


def test_a_paid_order_earns_points_per_whole_yuan_once(
    session: Session, settings: Settings, site: dict[str, Any], customer_id: int
) -> None:
    rated = settings.model_copy(update={"points_per_yuan": 2})
    order = paid_order(session, site, customer_id, total_fen=38_099)  # 380.99 yuan -> 380 whole yuan
    first = service.earn_for_order(session, rated, order, now=NOW)
    again = service.earn_for_order(session, rated, order, now=NOW)
    session.commit()
    assert first is not None and again is not None
    assert first.id == again.id
    assert [(e.kind, e.ref, e.delta) for e in ledger(session, customer_id)] == [("earn", f"order:{order.id}", 760)]
    assert service.balance(session, customer_id) == 760


def test_earning_is_left_for_the_caller_to_commit(
    session: Session,
    settings: Settings,
    site: dict[str, Any],
    customer_id: int,
) -> None:
    order = paid_order(session, site, customer_id, total_fen=10_000)
    service.earn_for_order(session, settings, order, now=NOW)
    session.rollback()
    assert ledger(session, customer_id) == []


def test_orders_without_a_customer_or_a_whole_yuan_earn_nothing(
    session: Session, settings: Settings, site: dict[str, Any], customer_id: int
) -> None:
    assert service.earn_for_order(session, settings, paid_order(session, site, customer_id, 99), now=NOW) is None
    anonymous = paid_order(session, site, customer_id, 10_000)
    anonymous.customer_id = None
    assert service.earn_for_order(session, settings, anonymous, now=NOW) is None
    assert ledger(session, customer_id) == []


def test_refunds_reverse_their_share_of_the_earned_points_once(
    session: Session, settings: Settings, site: dict[str, Any], customer_id: int
) -> None:
    order = paid_order(session, site, customer_id, total_fen=38_000)
    service.earn_for_order(session, settings, order, now=NOW)  # 380 points
    half = service.reverse_for_refund(session, settings, order, refund_amount_fen=19_000, refund_id=1, now=NOW)
    same = service.reverse_for_refund(session, settings, order, refund_amount_fen=19_000, refund_id=1, now=NOW)
    rest = service.reverse_for_refund(session, settings, order, refund_amount_fen=19_000, refund_id=2, now=NOW)
    beyond = service.reverse_for_refund(session, settings, order, refund_amount_fen=19_000, refund_id=3, now=NOW)
    session.commit()
    assert half is not None and same is not None and rest is not None
    assert same.id == half.id
    assert beyond is None  # never more than was earned
    assert [(e.kind, e.ref, e.delta) for e in ledger(session, customer_id)] == [
        ("earn", f"order:{order.id}", 380),
        ("reverse", "refund:1", -190),
        ("reverse", "refund:2", -190),
    ]
    assert service.balance(session, customer_id) == 0


def test_a_refund_after_the_points_were_spent_stops_at_zero_and_records_the_shortfall(
    session: Session, settings: Settings, site: dict[str, Any], customer_id: int
) -> None:
    order = paid_order(session, site, customer_id, total_fen=38_000)
    service.earn_for_order(session, settings, order, now=NOW)
    session.commit()
    service.spend(session, customer_id, 300, "coupon:1", now=NOW)
    entry = service.reverse_for_refund(session, settings, order, refund_amount_fen=38_000, refund_id=7, now=NOW)
    session.commit()
    assert entry is not None
    assert (entry.delta, entry.shortfall, entry.balance_after) == (-80, 300, 0)
    assert service.balance(session, customer_id) == 0


# --- daily sign-in -------------------------------------------------------------------------


def test_signing_in_twice_the_same_day_is_already_signed_in(api: Api) -> None:
    me = api.as_(Role.CUSTOMER)
    first = me.post("/api/v1/points/signin")
    assert first.status_code == 201, first.text
    assert first.json()["streak"] == 1
    assert first.json()["points"] == first.json()["balance"] == 5
    second = me.post("/api/v1/points/signin")
    assert second.status_code == 409, second.text
    assert second.json()["error"]["code"] == "already_signed_in"
    assert me.get("/api/v1/points").json()["balance"] == 5


def test_the_day_is_the_resort_local_day(session: Session, settings: Settings, customer_id: int) -> None:
    late_evening_utc = datetime(2026, 12, 20, 15, 59, tzinfo=UTC)  # 23:59 in Beijing
    service.signin(session, settings, customer_id, now=late_evening_utc)
    next_morning, _ = service.signin(session, settings, customer_id, now=late_evening_utc + timedelta(minutes=1))
    assert (next_morning.day.isoformat(), next_morning.streak) == ("2026-12-21", 2)
    with pytest.raises(DomainError) as err:
        service.signin(session, settings, customer_id, now=datetime(2026, 12, 21, 15, 0, tzinfo=UTC))
    assert err.value.code == "already_signed_in"


def test_every_seventh_day_in_a_row_earns_the_streak_bonus_and_a_gap_restarts_it(
    session: Session, settings: Settings, customer_id: int
) -> None:
    days = [0, 1, 2, 3, 4, 5, 6, 7, 9]  # a week in a row, one more day, then a day missed
    got = [service.signin(session, settings, customer_id, now=NOW + timedelta(days=d))[0] for d in days]
    assert [s.streak for s in got] == [1, 2, 3, 4, 5, 6, 7, 8, 1]
    assert [s.points for s in got] == [5, 5, 5, 5, 5, 5, 15, 5, 5]
    assert service.balance(session, customer_id) == 8 * 5 + 10 + 5
    assert session.scalar(select(func.count(SignIn.id)).where(SignIn.customer_id == customer_id)) == len(days)


# --- spending ------------------------------------------------------------------------------


def test_spending_more_than_the_balance_is_insufficient_points(api: Api, session: Session, customer_id: int) -> None:
    credit(session, customer_id, 100)
    me = api.as_(Role.CUSTOMER)
    spent = me.post("/api/v1/points/spend", json={"points": 30, "ref": "coupon:1"})
    assert spent.status_code == 201, spent.text
    assert spent.json()["balance"] == 70
    refused = me.post("/api/v1/points/spend", json={"points": 71, "ref": "coupon:2"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "insufficient_points"
    assert refused.json()["error"]["details"] == {"balance": 70, "spendable": 70, "needed": 71}
    assert me.get("/api/v1/points").json()["balance"] == 70


def test_a_repeated_spend_ref_is_booked_once(api: Api, session: Session, customer_id: int) -> None:
    credit(session, customer_id, 100)
    me = api.as_(Role.CUSTOMER)
    first = me.post("/api/v1/points/spend", json={"points": 40, "ref": "coupon:9"})
    retry = me.post("/api/v1/points/spend", json={"points": 40, "ref": "coupon:9"})
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json()["entry"]["id"] == first.json()["entry"]["id"]
    assert retry.json()["balance"] == 60
    other = me.post("/api/v1/points/spend", json={"points": 10, "ref": "coupon:9"})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "ref_reused"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"points": 0, "ref": "x"}, id="zero"),
        pytest.param({"points": -5, "ref": "x"}, id="negative"),
        pytest.param({"points": 5, "ref": ""}, id="empty-ref"),
        pytest.param({"points": 5, "ref": "a b"}, id="space-in-ref"),
        pytest.param({"points": 5}, id="no-ref"),
    ],
)
def test_bad_spends_are_422(api: Api, body: dict[str, Any]) -> None:
    assert api.as_(Role.CUSTOMER).post("/api/v1/points/spend", json=body).status_code == 422


def test_points_show_the_balance_and_the_latest_entries_first(api: Api, session: Session, customer_id: int) -> None:
    credit(session, customer_id, 50, "a")
    credit(session, customer_id, 20, "b")
    service.spend(session, customer_id, 10, "shop:1", now=NOW)
    r = api.as_(Role.CUSTOMER).get("/api/v1/points", params={"limit": 2})
    assert r.status_code == 200, r.text
    assert (r.json()["balance"], r.json()["spendable"]) == (60, 60)
    assert [(e["seq"], e["kind"], e["delta"]) for e in r.json()["entries"]] == [(3, "spend", -10), (2, "adjust", 20)]


# --- adjusting -----------------------------------------------------------------------------


def test_admins_adjust_balances_and_the_audit_log_says_who(api: Api, session: Session, customer_id: int) -> None:
    url = f"/api/v1/customers/{customer_id}/points/adjust"
    assert api.as_(Role.CASHIER).post(url, json={"delta": 10, "reason": "x"}).status_code == 403
    assert api.as_(Role.CUSTOMER).post(url, json={"delta": 10, "reason": "x"}).status_code == 403
    admin = api.as_(Role.ADMIN)
    r = admin.post(url, json={"delta": 120, "reason": "雪季补偿"})
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == 120
    too_much = admin.post(url, json={"delta": -121, "reason": "correction"})
    assert too_much.json()["error"]["code"] == "insufficient_points"
    assert admin.post(url, json={"delta": 0, "reason": "nothing"}).status_code == 422
    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "points.adjust")).one()
    assert (audit.actor, audit.entity_id, audit.detail["delta"]) == ("admin:admin-user", str(customer_id), 120)


def test_adjusting_an_unknown_customer_is_404(api: Api) -> None:
    r = api.as_(Role.ADMIN).post("/api/v1/customers/999999/points/adjust", json={"delta": 1, "reason": "x"})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "customer_not_found"


@pytest.mark.parametrize(
    ("role", "method", "url"),
    [
        pytest.param(Role.CASHIER, "GET", "/api/v1/points", id="staff-balance"),
        pytest.param(Role.ADMIN, "POST", "/api/v1/points/signin", id="staff-signin"),
        pytest.param(None, "POST", "/api/v1/points/spend", id="anonymous-spend"),
    ],
)
def test_points_are_for_signed_in_customers(api: Api, role: Role | None, method: str, url: str) -> None:
    r = api.as_(role).request(method, url, json={"points": 1, "ref": "x"})
    assert r.status_code == (401 if role is None else 403), r.text


# --- the ledger's guarantees ---------------------------------------------------------------


def test_the_database_refuses_a_negative_balance_or_a_reused_seq(session: Session, customer_id: int) -> None:
    credit(session, customer_id, 10)

    def entry(seq: int, balance_after: int, ref: str) -> PointsEntry:
        delta = balance_after - 10
        return PointsEntry(
            customer_id=customer_id, seq=seq, delta=delta, balance_after=balance_after, kind="adjust", ref=ref
        )

    for bad in (entry(2, -1, "negative"), entry(1, 20, "same-seq")):
        session.add(bad)
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()
    assert service.balance(session, customer_id) == 10


def test_concurrent_spends_never_take_the_balance_below_zero(app: FastAPI, db_url: str, customer_id: int) -> None:
    factory = app.state.sessionmaker
    with factory() as s:
        credit(s, customer_id, 100)
    threads, each = 20, 15  # 300 points asked of 100: exactly 6 spends fit
    start = threading.Barrier(threads)

    def spend(i: int) -> bool:
        with factory() as s:
            if not db_url.startswith("sqlite"):  # SQLite: a connection's first read takes the one write lock
                s.connection()  # each thread holds its own connection before the race starts
            start.wait()
            try:
                service.spend(s, customer_id, each, f"race:{i}", now=NOW)
            except DomainError as exc:
                assert exc.code == "insufficient_points"
                return False
            return True

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(spend, range(threads)))

    with factory() as s:
        entries = ledger(s, customer_id)
        assert sum(results) == 100 // each
        assert service.balance(s, customer_id) == 100 - 6 * each == sum(e.delta for e in entries)
        assert [e.seq for e in entries] == list(range(1, 8))
        assert all(e.balance_after >= 0 for e in entries)
