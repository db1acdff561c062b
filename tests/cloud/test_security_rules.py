"""Business rules an attack run broke (issue 8): far visit dates, someone else's holder, points farming, hoarding.

Every refusal is a 4xx with a stable code; nothing here may answer 5xx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from cloud.audit.models import AuditEntry
from cloud.customers.models import Customer
from cloud.db import utcnow
from cloud.deps import Role
from cloud.orders.models import Order, OrderItem
from cloud.orders.service import MAX_UNITS_PER_ORDER, MAX_UNPAID_UNITS_PER_DAY, pending_minutes
from cloud.payments.routes import wechat_pay
from cloud.payments.wechat import WechatPay
from cloud.points import service as points
from cloud.products.models import Product
from cloud.refunds.rules import refund_deadline
from cloud.tickets.models import Ticket
from harness.api import Api, AuthedClient
from harness.cloud import live_server
from tests.cloud.api import make_product, next_weekday
from tests.cloud.paid_orders import add_holder, another_customer, pay, sell_paid
from tests.cloud.wechat_platform import WechatPlatform

pytestmark = pytest.mark.security

ORDERS = "/api/v1/orders"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def resort_today() -> date:
    return datetime.now(SHANGHAI).date()


def order(
    client: AuthedClient, product: dict[str, Any], day: date, quantity: int = 1, *, channel: str = "online", **item: Any
) -> httpx.Response:
    """POST one order of one item: online (a customer) unless told `channel="counter"` (a cashier)."""
    body = {
        "site_id": product["site_id"],
        "channel": channel,
        "items": [{"product_id": product["id"], "visit_date": day.isoformat(), "quantity": quantity, **item}],
    }
    return client.post(ORDERS, json=body)


def error(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def available(api: Api, product: dict[str, Any], day: date) -> int:
    r = api.as_(None).get(f"/api/v1/products/{product['id']}/price", params={"day": day.isoformat()})
    return int(r.json()["available"])


# --- 8. visit dates within the sale horizon; money that cannot be fulfilled is refunded ---------------


@pytest.mark.parametrize(
    "visit",
    [
        pytest.param(lambda today: today + timedelta(days=91), id="a-day-past-the-90-day-horizon"),
        pytest.param(lambda _: date(2107, 1, 1), id="2107-beyond-what-a-ticket-can-carry"),
        pytest.param(lambda _: date(9999, 12, 31), id="the-last-date-there-is"),
    ],
)
def test_a_visit_date_beyond_the_sale_horizon_is_refused_and_holds_no_stock(
    api: Api, day_product: dict[str, Any], visit: Callable[[date], date]
) -> None:
    day = visit(resort_today())
    r = order(api.as_(Role.CUSTOMER), day_product, day)
    assert error(r) == (400, "visit_date_out_of_range"), r.text
    assert r.json()["error"]["details"]["latest"] == (resort_today() + timedelta(days=90)).isoformat()
    assert r.json()["error"]["message_zh"]
    cashier = order(api.as_(Role.CASHIER), day_product, day, channel="counter")
    assert error(cashier) == (400, "visit_date_out_of_range")  # the window sells within the horizon too
    assert api.as_(Role.ADMIN).get(ORDERS).json() == []


def test_the_last_day_of_the_horizon_is_on_sale_and_a_product_sets_its_own_horizon(
    api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    today = resort_today()
    assert order(api.as_(Role.CUSTOMER), day_product, today + timedelta(days=90)).status_code == 201
    week = make_product(api, site["id"], code="week-ahead", sale_horizon_days=7)
    assert week["sale_horizon_days"] == 7
    assert order(api.as_(Role.CUSTOMER), week, today + timedelta(days=7)).status_code == 201
    assert error(order(api.as_(Role.CUSTOMER), week, today + timedelta(days=8))) == (400, "visit_date_out_of_range")
    assert error(order(api.as_(Role.CUSTOMER), week, today - timedelta(days=1))) == (400, "visit_date_past")


def test_a_season_pass_is_on_sale_for_its_season_however_far_ahead(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    today = resort_today()
    start, end = today + timedelta(days=120), today + timedelta(days=240)
    season = make_product(
        api, site["id"], code="next-season", kind="season", season_start=start.isoformat(), season_end=end.isoformat()
    )
    me = api.as_(Role.CUSTOMER)
    assert api.customer_id is not None
    holder = add_holder(app, api.customer_id)
    assert order(me, season, start, holder_id=holder).status_code == 201  # pre-sale, beyond 90 days
    r = order(me, season, end + timedelta(days=1), holder_id=holder)
    assert error(r) == (400, "visit_date_out_of_range")
    assert r.json()["error"]["details"]["latest"] == end.isoformat()


@pytest.mark.parametrize("field", ["season_start", "season_end"])
def test_a_season_a_ticket_could_not_carry_is_refused_when_the_product_is_made(
    api: Api, site: dict[str, Any], field: str
) -> None:
    dates = {"season_start": "2026-12-01", "season_end": "2027-03-31", field: "2107-01-01"}
    if field == "season_start":
        dates["season_start"] = "1900-01-01"
    r = api.as_(Role.ADMIN).post(
        f"/api/v1/sites/{site['id']}/products",
        json={
            "code": "far",
            "name": "Far",
            "kind": "season",
            "weekday_price_fen": 1,
            "weekend_price_fen": 1,
            "holiday_price_fen": 1,
            **dates,
        },
    )
    assert r.status_code == 422, r.text


@pytest.fixture(scope="module")
def wechat_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WechatPlatform]:
    p = WechatPlatform(tmp_path_factory.mktemp("wechatpay-rules")).start()
    yield p
    p.stop()


def _visit_date_beyond_2106(app: FastAPI, order_id: int) -> None:
    """An order accepted before visit dates were bounded."""
    with app.state.sessionmaker() as s:
        for item in s.scalars(select(OrderItem).where(OrderItem.order_id == order_id)):
            item.visit_date = date(2107, 1, 1)
        s.commit()


def _product_changed(app: FastAPI, order_id: int) -> None:
    """The product was changed after the order into one whose tickets need what it lacks."""
    with app.state.sessionmaker() as s:
        item = s.scalars(select(OrderItem).where(OrderItem.order_id == order_id)).first()
        assert item is not None
        product = s.get(Product, item.product_id)
        assert product is not None
        product.kind, product.window_minutes = "time_window", None
        s.commit()


UNFULFILLABLE = [
    pytest.param(_visit_date_beyond_2106, id="visit-date-beyond-2106"),
    pytest.param(_product_changed, id="product-changed-after-the-order"),
]


@pytest.mark.parametrize("break_order", UNFULFILLABLE)
def test_wechat_money_for_an_order_whose_tickets_cannot_be_issued_is_recorded_to_refund(
    app: FastAPI,
    api: Api,
    day_product: dict[str, Any],
    wechat_platform: WechatPlatform,
    break_order: Callable[[FastAPI, int], None],
) -> None:
    app.dependency_overrides[wechat_pay] = lambda: WechatPay(wechat_platform.configure(app.state.settings))
    me = api.as_(Role.CUSTOMER)
    customer_id = api.customer_id
    assert customer_id is not None
    with app.state.sessionmaker() as s:
        customer = s.get(Customer, customer_id)
        assert customer is not None
        customer.wechat_openid = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
        s.commit()
    day = next_weekday()
    placed = order(me, day_product, day, 2).json()
    assert me.post(f"{ORDERS}/{placed['id']}/payments/wechat").status_code == 201
    break_order(app, placed["id"])

    notify = wechat_platform.notification(placed["number"], placed["total_fen"])
    r = api.as_(None).post("/api/v1/payments/wechat/notify", content=notify.body, headers=notify.headers)

    assert r.status_code == 200, r.text  # received: WeChat stops retrying; the money goes back by refund
    assert api.as_(Role.ADMIN).get(f"{ORDERS}/{placed['id']}").json()["status"] == "cancelled"
    pays = api.as_(Role.FINANCE).get(f"{ORDERS}/{placed['id']}/payments").json()
    assert [(p["status"], p["provider_ref"]) for p in pays] == [("late", notify.transaction_id)]
    with app.state.sessionmaker() as s:
        assert s.scalar(select(func.count()).select_from(Ticket).where(Ticket.order_id == placed["id"])) == 0
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "payment.unfulfilled")).one()
        assert audit.detail["needs_refund"] is True and audit.detail["reason"] == "issue_failed"
        assert points.balance(s, customer_id) == 0
    if break_order is _product_changed:
        assert available(api, day_product, day) == 100  # the held stock went back on sale


def test_cash_for_an_order_whose_tickets_cannot_be_issued_is_refused_at_the_window(
    app: FastAPI, api: Api, day_product: dict[str, Any]
) -> None:
    placed = order(api.as_(Role.CASHIER), day_product, next_weekday(), channel="counter").json()
    _visit_date_beyond_2106(app, placed["id"])
    r = api.as_(Role.CASHIER).post(
        f"{ORDERS}/{placed['id']}/payments/counter", json={"method": "cash", "amount_fen": placed["total_fen"]}
    )
    assert error(r) == (409, "order_unfulfillable")
    assert r.json()["error"]["details"]["reason"] == "issue_failed"
    assert api.as_(Role.FINANCE).get(f"{ORDERS}/{placed['id']}/payments").json() == []
    assert api.as_(Role.ADMIN).get(f"{ORDERS}/{placed['id']}").json()["status"] == "pending"


# --- 9. a holder belongs to one customer ------------------------------------------------------------


def test_another_customers_holder_cannot_be_put_on_any_ticket_and_looks_like_no_holder(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    me = api.as_(Role.CUSTOMER)
    other_id, _ = another_customer(api, app)
    theirs = add_holder(app, other_id, "王五")
    missing = theirs + 1000
    today = resort_today()
    season = make_product(
        api,
        site["id"],
        code="season",
        kind="season",
        season_start=today.isoformat(),
        season_end=(today + timedelta(days=100)).isoformat(),
    )
    for product in (day_product, season):
        someone_elses = order(me, product, next_weekday(), holder_id=theirs)
        nobodys = order(me, product, next_weekday(), holder_id=missing)
        assert error(someone_elses) == error(nobodys) == (404, "holder_not_found")
        assert someone_elses.json()["error"]["message"].replace(str(theirs), "N") == nobodys.json()["error"][
            "message"
        ].replace(str(missing), "N")
    # Staff selling for a named customer (or for nobody) cannot borrow another account's holder either.
    assert api.customer_id is not None
    cashier = api.as_(Role.CASHIER)
    for customer_id in (api.customer_id, None):
        body = {
            "site_id": site["id"],
            "channel": "counter",
            "customer_id": customer_id,
            "items": [{"product_id": day_product["id"], "visit_date": next_weekday().isoformat(), "holder_id": theirs}],
        }
        assert error(cashier.post(ORDERS, json=body)) == (404, "holder_not_found")
    assert available(api, day_product, next_weekday()) == 100


def test_a_customers_own_holder_goes_on_their_day_ticket(app: FastAPI, api: Api, day_product: dict[str, Any]) -> None:
    me = api.as_(Role.CUSTOMER)
    assert api.customer_id is not None
    mine = add_holder(app, api.customer_id, "李雪")
    r = order(me, day_product, next_weekday(), holder_id=mine)
    assert r.status_code == 201, r.text
    assert r.json()["items"][0]["holder_id"] == mine


# --- 11. points earned from an order wait until it can no longer be refunded ---------------------------


def test_buying_spending_the_points_and_refunding_three_times_gains_nothing(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    me = api.as_(Role.CUSTOMER)
    for round_no in range(3):
        placed = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), role=Role.CUSTOMER)
        mine = me.get("/api/v1/points").json()
        assert (mine["balance"], mine["spendable"]) == (280, 0)
        spend = me.post("/api/v1/points/spend", json={"points": 280, "ref": f"coupon:{round_no}"})
        assert error(spend) == (409, "insufficient_points")
        assert spend.json()["error"]["details"] == {"balance": 280, "spendable": 0, "needed": 280}
        tickets = [t["id"] for t in me.get(f"{ORDERS}/{placed['id']}/tickets").json()]
        assert me.post(f"{ORDERS}/{placed['id']}/refunds", json={"ticket_ids": tickets}).status_code == 201
    final = me.get("/api/v1/points").json()
    assert (final["balance"], final["spendable"]) == (0, 0)
    assert [e["kind"] for e in final["entries"] if e["kind"] == "spend"] == []
    assert all(e["shortfall"] == 0 for e in final["entries"])


def test_points_of_an_order_become_spendable_once_its_refund_cutoff_has_passed(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    day = next_weekday()
    sell_paid(app, api, site["id"], day_product["id"], day, role=Role.CUSTOMER)
    cutoff = refund_deadline(day, SHANGHAI, day_product["refund_cutoff_hours"])
    assert api.customer_id is not None
    with app.state.sessionmaker() as s:
        assert points.spendable(s, api.customer_id, cutoff - timedelta(seconds=1)) == 0
        assert points.spendable(s, api.customer_id, cutoff) == 280
        entry, _ = points.spend(s, api.customer_id, 280, "coupon:after-cutoff", now=cutoff)
        assert entry.balance_after == 0


def test_points_of_an_order_become_spendable_once_its_tickets_are_used(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    placed = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=2, role=Role.CUSTOMER)
    me = api.as_(Role.CUSTOMER)
    first, second = (t["id"] for t in me.get(f"{ORDERS}/{placed['id']}/tickets").json())

    def use(ticket_id: int) -> None:  # as sync records a passage a gate reported
        with app.state.sessionmaker() as s:
            ticket = s.get(Ticket, ticket_id)
            assert ticket is not None
            ticket.entries_used, ticket.first_entry_at = 1, utcnow()
            s.commit()

    use(first)
    assert me.get("/api/v1/points").json()["spendable"] == 0  # the second ticket can still be refunded
    use(second)
    assert me.get("/api/v1/points").json()["spendable"] == 560
    assert me.post("/api/v1/points/spend", json={"points": 560, "ref": "coupon:used"}).status_code == 201


def test_points_from_elsewhere_stay_spendable_while_an_order_is_refundable(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    me = api.as_(Role.CUSTOMER)
    assert me.post("/api/v1/points/signin").status_code == 201
    sell_paid(app, api, site["id"], day_product["id"], next_weekday(), role=Role.CUSTOMER)
    assert me.post("/api/v1/points/spend", json={"points": 6, "ref": "coupon:a"}).status_code == 409
    spent = me.post("/api/v1/points/spend", json={"points": 5, "ref": "coupon:b"})
    assert spent.status_code == 201 and spent.json()["balance"] == 280


# --- 12. what one customer may hold unpaid --------------------------------------------------------------


def test_one_customer_cannot_hoard_a_days_stock_with_unpaid_orders(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    day = next_weekday()
    product = make_product(api, site["id"], code="busy-day", daily_stock=1000)
    hoarder = api.as_(Role.CUSTOMER)
    whole_day = {
        "site_id": site["id"],
        "items": [{"product_id": product["id"], "visit_date": day.isoformat(), "quantity": 20}] * 10,
    }
    assert error(hoarder.post(ORDERS, json=whole_day)) == (422, "order_too_large")

    codes = [order(hoarder, product, day, MAX_UNITS_PER_ORDER).status_code for _ in range(5)]
    assert codes == [201, 409, 409, 409, 409]
    refused = order(hoarder, product, day, 1)
    assert error(refused) == (409, "unpaid_limit")
    assert refused.json()["error"]["details"]["unpaid"] == MAX_UNPAID_UNITS_PER_DAY
    assert available(api, product, day) == 1000 - MAX_UNITS_PER_ORDER

    _, someone_else = another_customer(api, app)
    assert order(someone_else, product, day, MAX_UNITS_PER_ORDER).status_code == 201
    other_day = order(hoarder, product, day + timedelta(days=1), 1)
    assert other_day.status_code == 201  # the limit is per product and day
    # The window pays at once: a group of 200 is sold there.
    group = api.as_(Role.CASHIER).post(ORDERS, json={**whole_day, "channel": "counter"})
    assert group.status_code == 201, group.text


def test_a_paid_or_cancelled_hold_no_longer_counts_against_the_limit(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    day = next_weekday()
    me = api.as_(Role.CUSTOMER)
    first = order(me, day_product, day, MAX_UNPAID_UNITS_PER_DAY).json()
    assert error(order(me, day_product, day, 1)) == (409, "unpaid_limit")
    pay(app, first["id"])
    second = order(me, day_product, day, MAX_UNPAID_UNITS_PER_DAY).json()
    assert me.post(f"{ORDERS}/{second['id']}/cancel").status_code == 200
    assert order(me, day_product, day, MAX_UNPAID_UNITS_PER_DAY).status_code == 201


def test_a_larger_unpaid_order_is_held_for_less_time(api: Api, day_product: dict[str, Any]) -> None:
    me = api.as_(Role.CUSTOMER)

    def held_for(quantity: int, day: date) -> timedelta:
        placed = order(me, day_product, day, quantity).json()
        return datetime.fromisoformat(placed["expires_at"]) - datetime.fromisoformat(placed["created_at"])

    assert held_for(1, next_weekday()) == timedelta(minutes=15)
    assert held_for(10, next_weekday(weekday=3)) == timedelta(minutes=6)
    cashier = api.as_(Role.CASHIER)
    placed = order(cashier, day_product, next_weekday(), 20, channel="counter").json()
    assert datetime.fromisoformat(placed["expires_at"]) - datetime.fromisoformat(placed["created_at"]) == timedelta(
        minutes=15
    )


@pytest.mark.parametrize(
    ("units", "minutes"),
    [
        pytest.param(1, 15, id="one"),
        pytest.param(4, 15, id="a-family"),
        pytest.param(5, 12, id="five"),
        pytest.param(10, 6, id="ten"),
        pytest.param(200, 5, id="never-below-five-minutes"),
    ],
)
def test_pending_lifetime_shrinks_with_quantity(units: int, minutes: int) -> None:
    assert pending_minutes(15, units) == minutes


def test_concurrent_orders_of_one_customer_cannot_pass_the_unpaid_limit_together(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    day = next_weekday()
    product = make_product(api, site["id"], code="rush", daily_stock=1000)
    token = api.token(Role.CUSTOMER)
    body = {
        "site_id": site["id"],
        "items": [{"product_id": product["id"], "visit_date": day.isoformat(), "quantity": MAX_UNITS_PER_ORDER}],
    }
    with live_server(app) as base:

        def buy(_: int) -> int:
            with httpx.Client(base_url=base, timeout=30) as c:
                return c.post(ORDERS, json=body, headers={"Authorization": f"Bearer {token}"}).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(buy, range(8)))
    assert sorted(codes) == [201] + [409] * 7
    assert available(api, product, day) == 1000 - MAX_UNITS_PER_ORDER
    with app.state.sessionmaker() as s:
        assert s.scalar(select(func.count()).select_from(Order).where(Order.customer_id == api.customer_id)) == 1
