"""Issue 8, races and unchecked input: every one is a 4xx with a clear code, never a 5xx.

Races run over real concurrency: threads against a real uvicorn server (8 worker threads, the
production setting) or threads with their own database connections, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from cloud.app import _routers
from cloud.customers import service as customers
from cloud.customers.models import Holder
from cloud.db import Base, utcnow
from cloud.deps import Principal, Role, TransactionScopedRoute
from cloud.orders.models import Order
from cloud.payments.routes import wechat_pay
from cloud.payments.wechat import WechatPay
from cloud.points import service as points
from cloud.points.models import PointsEntry, PointsKind
from cloud.products import service as products
from cloud.products.models import Product
from cloud.products.schemas import ProductIn
from cloud.settings import Settings
from cloud.sites import service as sites
from cloud.sites.models import Gate, Site
from cloud.staff import service as staff
from cloud.staff.models import Staff
from harness.api import Api
from harness.cloud import live_server
from harness.processes import wait_until
from tests.cloud.api import make_product, next_weekday
from tests.cloud.wechat_platform import WechatPlatform

pytestmark = pytest.mark.security

ORDERS = "/api/v1/orders"
WORKERS = 8  # create_app's default thread count


def bearer(api: Api, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.token(role)}"}


def at_once(base: str, n: int, send: Callable[[httpx.Client, int], httpx.Response]) -> list[httpx.Response]:
    """n requests sent together, each from its own thread and connection."""
    start = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=60) as c:
            start.wait()
            return send(c, i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


# --- item 7: a transaction never outlives the worker thread that runs it -----------------------


def test_sixteen_concurrent_creates_with_one_idempotency_key_make_one_order_and_no_5xx(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    product = make_product(api, site["id"], code="rush", daily_stock=100)
    body = {
        "site_id": site["id"],
        "items": [{"product_id": product["id"], "visit_date": next_weekday().isoformat(), "quantity": 1}],
    }
    headers = {**bearer(api, Role.CUSTOMER), "Idempotency-Key": "one-key-for-all-16"}
    with live_server(app) as base:
        answers = at_once(base, 2 * WORKERS, lambda c, _: c.post(ORDERS, json=body, headers=headers))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * (2 * WORKERS - 1) + [201], [r.text for r in answers if r.status_code >= 300]
    assert len({r.json()["id"] for r in answers}) == 1
    with app.state.sessionmaker() as s:
        assert s.scalar(select(func.count(Order.id))) == 1


def test_nine_concurrent_spends_answer_every_committed_spend_with_2xx(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    headers = bearer(api, Role.CUSTOMER)
    customer_id = api.customer_id
    assert customer_id is not None
    with app.state.sessionmaker() as s:
        points.append(s, customer_id, PointsKind.ADJUST, "opening", 100, now=utcnow())
        s.commit()
    n, each = WORKERS + 1, 15  # 135 points asked of 100: 6 spends fit

    def spend(c: httpx.Client, i: int) -> httpx.Response:
        return c.post("/api/v1/points/spend", json={"points": each, "ref": f"coupon:{i}"}, headers=headers)

    with live_server(app) as base:
        answers = at_once(base, n, spend)
    assert all(r.status_code in (201, 409) for r in answers), [r.text for r in answers]
    refused = [r.json()["error"]["code"] for r in answers if r.status_code == 409]
    assert refused == ["insufficient_points"] * (n - 6)
    with app.state.sessionmaker() as s:
        spends = s.scalars(
            select(PointsEntry).where(PointsEntry.customer_id == customer_id, PointsEntry.kind == "spend")
        ).all()
        assert sorted(e.ref for e in spends) == sorted(
            r.json()["entry"]["ref"] for r in answers if r.status_code == 201
        )
        assert points.balance(s, customer_id) == 100 - 6 * each


def test_every_router_ends_its_transactions_in_the_routes_own_thread() -> None:
    for router in _routers():
        assert router.route_class is TransactionScopedRoute
        assert all(isinstance(route, TransactionScopedRoute) for route in router.routes)


# --- item 10: concurrent creates with one name, and the holder limit ----------------------------

ADMIN = Principal(role=Role.ADMIN, subject_id=1, name="rival")


@contextmanager
def rival_before_commit(app: FastAPI, work: Callable[[Session], object]) -> Iterator[None]:
    """`work` runs in a session of its own and stops just before its COMMIT, its rows written and its
    locks held, for as long as the block runs; then it commits."""
    session = app.state.sessionmaker()
    ready, go = threading.Event(), threading.Event()

    def hold(s: Session) -> None:
        if not s.in_nested_transaction():  # the outer COMMIT, not a savepoint's release
            s.flush()
            ready.set()
            go.wait(60)

    event.listen(session, "before_commit", hold)
    with ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(work, session)
        while not ready.wait(0.05):
            if outcome.done():
                outcome.result()
                raise AssertionError("the rival committed without stopping")
        try:
            yield
        finally:
            go.set()
            outcome.result()
            session.close()


def wait_until_stuck_or_answered(app: FastAPI, answers: list[Future[httpx.Response]]) -> None:
    """PostgreSQL: until every request is answered or waits for a lock the rival holds. (On SQLite they
    queue for the database's one write lock, which nothing here can watch.)"""
    if app.state.engine.dialect.name != "postgresql":
        return
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )

    def stuck_or_answered() -> bool:
        with app.state.engine.connect() as c:
            waiting = c.scalar(query) or 0
        return waiting + sum(a.done() for a in answers) >= len(answers)

    wait_until(stuck_or_answered, "every request answered or waiting for the lock the rival holds", 60.0, interval=0.05)


def send_while_rival_holds(
    app: FastAPI, n: int, work: Callable[[Session], object], send: Callable[[httpx.Client], httpx.Response]
) -> list[httpx.Response]:
    def one() -> httpx.Response:
        with httpx.Client(base_url=base, timeout=60) as c:
            return send(c)

    with live_server(app) as base, ThreadPoolExecutor(n) as pool:
        with rival_before_commit(app, work):
            answers = [pool.submit(one) for _ in range(n)]
            wait_until_stuck_or_answered(app, answers)
        return [a.result() for a in answers]


def _staff(api: Api, site: dict[str, Any]) -> tuple[str, dict[str, Any], Callable[[Session], object]]:
    body = {"username": "lift-op", "password": "correct horse battery", "role": "cashier"}
    return "/api/v1/staff", body, lambda s: staff.create_staff(s, ADMIN, "lift-op", "another password", Role.CASHIER)


def _site(api: Api, site: dict[str, Any]) -> tuple[str, dict[str, Any], Callable[[Session], object]]:
    body = {"code": "beihu", "name": "北湖滑雪场"}
    return "/api/v1/sites", body, lambda s: sites.create_site(s, ADMIN, "beihu", "北湖", "Asia/Shanghai")


def _product(api: Api, site: dict[str, Any]) -> tuple[str, dict[str, Any], Callable[[Session], object]]:
    body = {"code": "night", "name": "夜场票", "kind": "day", **dict.fromkeys(PRICES, 9900)}
    return (
        f"/api/v1/sites/{site['id']}/products",
        body,
        lambda s: products.create_product(s, ADMIN, site["id"], ProductIn.model_validate(body)),
    )


def _gate(api: Api, site: dict[str, Any]) -> tuple[str, dict[str, Any], Callable[[Session], object]]:
    body = {"code": "east-1", "name": "东门 1"}
    return (
        f"/api/v1/sites/{site['id']}/gates",
        body,
        lambda s: sites.create_gate(s, ADMIN, site["id"], "east-1", "东门", "in"),
    )


PRICES = ("weekday_price_fen", "weekend_price_fen", "holiday_price_fen")


@pytest.mark.parametrize(
    ("case", "model", "code"),
    [
        pytest.param(_staff, Staff, "username_taken", id="staff"),
        pytest.param(_site, Site, "site_exists", id="site"),
        pytest.param(_product, Product, "product_exists", id="product"),
        pytest.param(_gate, Gate, "gate_exists", id="gate"),
    ],
)
def test_concurrent_creates_of_one_name_are_409_not_500(
    app: FastAPI,
    api: Api,
    site: dict[str, Any],
    case: Callable[[Api, dict[str, Any]], tuple[str, dict[str, Any], Callable[[Session], object]]],
    model: type[Base],
    code: str,
) -> None:
    """Each request checks the name is free while a rival that inserted it has not committed yet."""
    url, body, rival = case(api, site)
    headers = bearer(api, Role.ADMIN)
    with app.state.sessionmaker() as s:
        before = s.scalar(select(func.count()).select_from(model)) or 0
    answers = send_while_rival_holds(app, 4, rival, lambda c: c.post(url, json=body, headers=headers))
    assert [r.status_code for r in answers] == [409] * 4, [r.text for r in answers]
    assert {r.json()["error"]["code"] for r in answers} == {code}
    with app.state.sessionmaker() as s:
        assert s.scalar(select(func.count()).select_from(model)) == before + 1


HOLDER = {"name": "张三", "id_number": "E12345678"}


def test_two_holders_added_while_a_rival_adds_the_twentieth_store_only_one_more(app: FastAPI, api: Api) -> None:
    headers = bearer(api, Role.CUSTOMER)
    customer_id = api.customer_id
    assert customer_id is not None
    with app.state.sessionmaker() as s:
        s.add_all(Holder(customer_id=customer_id, name=f"holder {i}") for i in range(customers.MAX_HOLDERS - 2))
        s.commit()
    answers = send_while_rival_holds(
        app,
        2,
        lambda s: customers.add_holder(s, customer_id, "rival", "E00000000"),
        lambda c: c.post("/api/v1/customers/me/holders", json=HOLDER, headers=headers),
    )
    assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
    assert [r.json()["error"]["code"] for r in answers if r.status_code == 409] == ["too_many_holders"]
    with app.state.sessionmaker() as s:
        assert s.scalar(select(func.count(Holder.id)).where(Holder.customer_id == customer_id)) == customers.MAX_HOLDERS


def test_twenty_one_holders_added_at_once_store_twenty(app: FastAPI, api: Api) -> None:
    headers = bearer(api, Role.CUSTOMER)
    n = customers.MAX_HOLDERS + 1
    with live_server(app) as base:
        answers = at_once(base, n, lambda c, _: c.post("/api/v1/customers/me/holders", json=HOLDER, headers=headers))
    assert sorted(r.status_code for r in answers) == [201] * (n - 1) + [409], [r.text for r in answers]
    assert len(api.as_(Role.CUSTOMER).get("/api/v1/customers/me/holders").json()) == customers.MAX_HOLDERS


# --- item 10: numbers too long to parse ---------------------------------------------------------


@pytest.mark.parametrize(
    "username",
    [
        pytest.param("gate-" + "9" * 5000, id="5000-digits"),
        pytest.param("gate-99999999999999999999", id="past-64-bit"),
        pytest.param("gate-2147483648", id="past-32-bit"),
        pytest.param("gate-0", id="zero"),
    ],
)
def test_a_snapshot_login_with_an_impossible_gate_id_is_401(api: Api, site: dict[str, Any], username: str) -> None:
    r = api.as_(None).get(f"/api/v1/sync/sites/{site['code']}/snapshot", auth=(username, "whatever-secret"))
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "gate_not_authenticated"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[WechatPlatform]:
    p = WechatPlatform(tmp_path).start()
    yield p
    p.stop()


def test_a_wechat_pay_notification_with_a_5000_digit_timestamp_is_401(
    app: FastAPI, api: Api, settings: Settings, platform: WechatPlatform
) -> None:
    configured = WechatPay(platform.configure(settings))
    app.dependency_overrides[wechat_pay] = lambda: configured
    body = b'{"id": "EV-1", "event_type": "TRANSACTION.SUCCESS"}'
    headers = platform.signed_headers(body, timestamp="9" * 5000)
    r = api.as_(None).post("/api/v1/payments/wechat/notify", content=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["message"].startswith("bad_timestamp")
