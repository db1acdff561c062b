"""The products back office: edits (terms frozen once sold), price changes (调价) with history, reactivation,
holidays listed and removed, ticket layouts (电子票/纸质票设置)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cloud.db import utcnow
from cloud.deps import Principal, Role
from cloud.errors import Conflict
from cloud.orders.sale import counter_sale
from cloud.orders.schemas import CounterSaleIn, OrderItemIn, SalePaymentIn
from cloud.products import price_changes
from cloud.products.models import Product
from cloud.products.schemas import PriceChangeIn
from cloud.products.service import price_fen
from cloud.sites.models import Site
from cloud.tickets.models import Ticket
from harness.api import Api
from tests.cloud.api import make_product, next_weekday
from tests.cloud.paid_orders import sell, sell_paid
from tests.cloud.test_security_races import send_while_rival_holds

API = "/api/v1"
ADMIN = Principal(role=Role.ADMIN, subject_id=1, name="admin-user")
NEW_PRICES = {"weekday_price_fen": 30000, "weekend_price_fen": 40000, "holiday_price_fen": 50000}


def catalog_version(app: FastAPI, site_id: int) -> int:
    with app.state.sessionmaker() as s:
        site = s.get(Site, site_id)
        assert site is not None
        return site.catalog_version


def audit_actions(api: Api, entity: str) -> list[str]:
    return [e["action"] for e in api.as_(Role.FINANCE).get(f"{API}/audit", params={"entity": entity}).json()]


def unit_price(api: Api, site: dict[str, Any], product: dict[str, Any], day: date) -> int:
    """What an order made now pays for one unit."""
    return int(sell(api, site["id"], product["id"], day)["total_fen"])


def listed(api: Api, site: dict[str, Any], product: dict[str, Any]) -> dict[str, Any]:
    rows = api.as_(None).get(f"{API}/sites/{site['id']}/products").json()
    return next(p for p in rows if p["id"] == product["id"])


def test_admin_edits_name_sale_window_stock_and_refund_rules_audited_and_the_catalog_bumped(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    before = catalog_version(app, site["id"])
    edit = {
        "name": "全天票（雪季）",
        "sale_start": "2026-11-01T00:00:00+08:00",
        "sale_end": "2099-04-30T00:00:00+08:00",
        "daily_stock": 300,
        "sale_horizon_days": 30,
        "refund_cutoff_hours": 24,
        "refund_fee_fen": 2000,
    }
    r = api.as_(Role.ADMIN).patch(f"{API}/products/{day_product['id']}", json=edit)
    assert r.status_code == 200, r.text
    shown = listed(api, site, day_product)
    assert (shown["name"], shown["daily_stock"], shown["sale_horizon_days"]) == ("全天票（雪季）", 300, 30)
    assert (shown["refund_cutoff_hours"], shown["refund_fee_fen"]) == (24, 2000)
    assert catalog_version(app, site["id"]) > before
    assert audit_actions(api, "product")[0] == "product.edit"
    shorter = api.as_(Role.ADMIN).patch(f"{API}/products/{day_product['id']}", json={"sale_horizon_days": 1})
    assert shorter.json()["sale_horizon_days"] == 1
    item = {"product_id": day_product["id"], "visit_date": (next_weekday() + timedelta(days=7)).isoformat()}
    r = api.as_(Role.CASHIER).post(f"{API}/orders", json={"site_id": site["id"], "channel": "counter", "items": [item]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "visit_date_out_of_range"


@pytest.mark.parametrize(
    ("edit", "status", "code"),
    [
        pytest.param({"weekday_price_fen": 1}, 422, None, id="prices-only-through-price-changes"),
        pytest.param({"kind": "time_window"}, 422, "invalid_product", id="time-window-without-minutes"),
        pytest.param(
            {"sale_start": "2027-01-02T00:00:00+08:00", "sale_end": "2027-01-01T00:00:00+08:00"},
            422,
            "invalid_product",
            id="sale-ends-before-it-starts",
        ),
        pytest.param({"name": None}, 422, "invalid_product", id="name-cleared"),
        pytest.param({"sale_start": "0001-01-01T00:00:00+01:00"}, 422, "invalid_product", id="sale-starts-in-year-1"),
    ],
)
def test_an_edit_that_would_leave_the_product_invalid_is_refused(
    api: Api, day_product: dict[str, Any], edit: dict[str, Any], status: int, code: str | None
) -> None:
    r = api.as_(Role.ADMIN).patch(f"{API}/products/{day_product['id']}", json=edit)
    assert r.status_code == status, r.text
    if code is not None:
        assert r.json()["error"]["code"] == code
    assert api.as_(Role.ADMIN).get(f"{API}/products/{day_product['id']}").json()["kind"] == "day"


def test_ticket_terms_change_until_the_first_sale_then_stay_as_the_tickets_were_sold(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    product = make_product(api, site["id"], code="ten", kind="punch", entries=5)
    url = f"{API}/products/{product['id']}"
    assert api.as_(Role.ADMIN).patch(url, json={"entries": 10, "code": "ten-rides"}).status_code == 200
    assert api.as_(Role.ADMIN).get(url).json()["terms_frozen"] is False

    order = sell_paid(app, api, site["id"], product["id"], next_weekday())
    r = api.as_(Role.ADMIN).patch(url, json={"entries": 20, "valid_days": 3})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "product_terms_frozen"
    assert r.json()["error"]["details"]["fields"] == ["entries", "valid_days"]
    # A form sends every field: the frozen ones unchanged are fine.
    r = api.as_(Role.ADMIN).patch(url, json={"entries": 10, "kind": "punch", "code": "ten-rides", "name": "十次卡"})
    assert r.status_code == 200, r.text
    ticket = api.as_(Role.ADMIN).get(f"{API}/orders/{order['id']}/tickets").json()[0]
    assert ticket["entries"] == 10
    assert api.as_(Role.ADMIN).get(url).json()["terms_frozen"] is True


def test_an_edit_of_the_terms_while_the_first_sale_is_being_made_waits_for_it_and_is_refused(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    product = make_product(api, site["id"], code="ten", kind="punch", entries=10)
    day = next_weekday()
    price = int(
        api.as_(None).get(f"{API}/products/{product['id']}/price", params={"day": day.isoformat()}).json()["price_fen"]
    )
    sale = CounterSaleIn(
        site_id=site["id"],
        items=[OrderItemIn(product_id=product["id"], visit_date=day)],
        payment=SalePaymentIn(method="cash", amount_fen=price),
    )
    cashier = Principal(role=Role.CASHIER, subject_id=1, name="cashier-user")
    headers = {"Authorization": f"Bearer {api.token(Role.ADMIN)}"}

    [edit] = send_while_rival_holds(  # the first sale's rows are written, its commit not yet made
        app,
        1,
        lambda s: counter_sale(s, app.state.settings, cashier, sale, idempotency_key=None, now=utcnow()),
        lambda c: c.patch(f"{API}/products/{product['id']}", json={"entries": 20}, headers=headers),
    )

    assert edit.status_code == 409, edit.text
    assert edit.json()["error"]["code"] == "product_terms_frozen"
    with app.state.sessionmaker() as s:
        sold = list(s.scalars(select(Ticket.entries).where(Ticket.product_id == product["id"])))
    assert (sold, api.as_(Role.ADMIN).get(f"{API}/products/{product['id']}").json()["entries"]) == ([10], 10)


def test_deactivated_product_leaves_the_catalogue_and_comes_back_when_reactivated(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    assert api.as_(Role.ADMIN).post(f"{API}/products/{day_product['id']}/deactivate").json()["active"] is False
    assert api.as_(None).get(f"{API}/sites/{site['id']}/products").json() == []
    everything = api.as_(Role.CASHIER).get(f"{API}/sites/{site['id']}/products/all").json()
    assert [(p["id"], p["active"]) for p in everything] == [(day_product["id"], False)]
    before = catalog_version(app, site["id"])
    assert api.as_(Role.ADMIN).post(f"{API}/products/{day_product['id']}/activate").json()["active"] is True
    assert catalog_version(app, site["id"]) > before
    assert [p["id"] for p in api.as_(None).get(f"{API}/sites/{site['id']}/products").json()] == [day_product["id"]]
    assert audit_actions(api, "product")[:2] == ["product.activate", "product.deactivate"]


def test_a_price_change_scheduled_for_later_leaves_orders_until_then_at_the_old_price(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    wednesday = next_weekday()
    at = utcnow() + timedelta(hours=1)
    before = catalog_version(app, site["id"])
    r = api.as_(Role.ADMIN).post(
        f"{API}/products/{day_product['id']}/price-changes",
        json={**NEW_PRICES, "effective_at": at.isoformat(), "note": "雪季涨价"},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["created_by"]) == ("scheduled", "admin:admin-user")
    assert catalog_version(app, site["id"]) > before

    assert unit_price(api, site, day_product, wednesday) == 28000
    shown = listed(api, site, day_product)
    assert shown["weekday_price_fen"] == 28000
    assert shown["next_price_change"]["weekday_price_fen"] == 30000
    assert "note" not in shown["next_price_change"]  # the public catalogue shows no internal note
    with app.state.sessionmaker() as s:
        product = s.get(Product, day_product["id"])
        assert product is not None
        assert price_fen(s, product, wednesday, at - timedelta(seconds=1)) == ("weekday", 28000)
        assert price_fen(s, product, wednesday, at) == ("weekday", 30000)


def test_once_its_time_has_come_a_price_change_prices_every_new_order_and_the_history_says_so(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    """Scheduled two hours ago for one hour ago (the service with an explicit clock, rather than waiting)."""
    wednesday, saturday = next_weekday(), next_weekday(weekday=5)
    now = utcnow()
    with app.state.sessionmaker() as s:
        body = PriceChangeIn(**NEW_PRICES, effective_at=now - timedelta(hours=1), note="雪季")
        earlier = price_changes.schedule(s, ADMIN, day_product["id"], body, now=now - timedelta(hours=2)).id
    assert unit_price(api, site, day_product, wednesday) == 30000
    assert unit_price(api, site, day_product, saturday) == 40000
    assert listed(api, site, day_product)["weekday_price_fen"] == 30000
    assert (
        api.as_(None)
        .get(f"{API}/products/{day_product['id']}/price", params={"day": wednesday.isoformat()})
        .json()["price_fen"]
        == 30000
    )

    r = api.as_(Role.ADMIN).post(
        f"{API}/products/{day_product['id']}/price-changes", json={**NEW_PRICES, "weekday_price_fen": 25000}
    )
    assert r.status_code == 201 and r.json()["status"] == "in_effect"
    assert unit_price(api, site, day_product, wednesday) == 25000
    history = api.as_(Role.FINANCE).get(f"{API}/products/{day_product['id']}/price-changes").json()
    assert [(h["id"], h["status"]) for h in history] == [(r.json()["id"], "in_effect"), (earlier, "superseded")]
    assert history[1]["note"] == "雪季" and history[1]["created_by"] == "admin:admin-user"
    assert api.as_(Role.CASHIER).get(f"{API}/products/{day_product['id']}/price-changes").status_code == 403


def test_a_scheduled_price_change_withdrawn_never_applies_and_one_in_effect_cannot_be_withdrawn(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    changes = f"{API}/products/{day_product['id']}/price-changes"
    later = (
        api.as_(Role.ADMIN)
        .post(changes, json={**NEW_PRICES, "effective_at": (utcnow() + timedelta(minutes=30)).isoformat()})
        .json()
    )
    now_change = api.as_(Role.ADMIN).post(changes, json={**NEW_PRICES, "weekday_price_fen": 29000}).json()
    before = catalog_version(app, site["id"])

    r = api.as_(Role.ADMIN).post(f"{API}/price-changes/{later['id']}/withdraw")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["withdrawn_by"]) == ("withdrawn", "admin:admin-user")
    assert catalog_version(app, site["id"]) > before
    assert listed(api, site, day_product)["next_price_change"] is None
    with app.state.sessionmaker() as s:
        product = s.get(Product, day_product["id"])
        assert product is not None
        assert price_fen(s, product, next_weekday(), utcnow() + timedelta(hours=1))[1] == 29000

    again = api.as_(Role.ADMIN).post(f"{API}/price-changes/{later['id']}/withdraw")
    assert again.status_code == 409 and again.json()["error"]["code"] == "price_change_withdrawn"
    in_effect = api.as_(Role.ADMIN).post(f"{API}/price-changes/{now_change['id']}/withdraw")
    assert in_effect.status_code == 409 and in_effect.json()["error"]["code"] == "price_change_in_effect"
    assert api.as_(Role.ADMIN).post(f"{API}/price-changes/999999/withdraw").status_code == 404
    statuses = [h["status"] for h in api.as_(Role.ADMIN).get(changes).json()]
    assert statuses == ["in_effect", "withdrawn"]
    assert audit_actions(api, "product")[:3] == [
        "price_change.withdraw",
        "price_change.schedule",
        "price_change.schedule",
    ]


def test_of_two_withdrawals_at_once_one_withdraws_and_the_other_is_told_it_was_already_withdrawn(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    at = utcnow() + timedelta(minutes=30)
    with app.state.sessionmaker() as s:
        later = price_changes.schedule(
            s, ADMIN, day_product["id"], PriceChangeIn(**NEW_PRICES, effective_at=at), now=utcnow()
        )
    before = catalog_version(app, site["id"])
    finance = Principal(role=Role.ADMIN, subject_id=2, name="second-admin")
    with app.state.sessionmaker() as first, app.state.sessionmaker(expire_on_commit=False) as second:
        seen = second.get(type(later), later.id)  # both read it as scheduled
        assert seen is not None and seen.withdrawn_at is None
        second.commit()  # (SQLite: its reading transaction writes nothing; it keeps what it read)
        assert price_changes.withdraw(first, ADMIN, later.id, now=utcnow()).withdrawn_by == "admin:admin-user"
        with pytest.raises(Conflict) as lost:
            price_changes.withdraw(second, finance, later.id, now=utcnow())
    assert lost.value.code == "price_change_withdrawn"
    history = api.as_(Role.FINANCE).get(f"{API}/products/{day_product['id']}/price-changes").json()
    assert [(h["status"], h["withdrawn_by"]) for h in history] == [("withdrawn", "admin:admin-user")]
    assert audit_actions(api, "product").count("price_change.withdraw") == 1
    assert catalog_version(app, site["id"]) == before + 1


@pytest.mark.parametrize(
    ("offset", "status", "code"),
    [
        pytest.param(timedelta(minutes=-2), 201, None, id="a-moment-ago-means-now"),
        pytest.param(timedelta(hours=-1), 400, "effective_at_past", id="an-hour-ago"),
        pytest.param(timedelta(days=400), 400, "effective_at_too_far", id="over-a-year-ahead"),
    ],
)
def test_a_price_change_starts_now_or_later(
    api: Api, day_product: dict[str, Any], offset: timedelta, status: int, code: str | None
) -> None:
    asked = utcnow() + offset
    r = api.as_(Role.ADMIN).post(
        f"{API}/products/{day_product['id']}/price-changes", json={**NEW_PRICES, "effective_at": asked.isoformat()}
    )
    assert r.status_code == status, r.text
    if code is not None:
        assert r.json()["error"]["code"] == code
    else:  # not backdated: orders made in those two minutes paid the old price
        assert r.json()["effective_at"] > asked.isoformat() and r.json()["status"] == "in_effect"


def test_holidays_are_listed_by_year_and_a_removed_one_sells_at_the_ordinary_price_again(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    wednesday = next_weekday()
    holidays = f"{API}/sites/{site['id']}/holidays"
    for day, name in [(wednesday, "元旦"), (date(2098, 10, 1), "国庆节")]:
        assert api.as_(Role.ADMIN).post(holidays, json={"day": day.isoformat(), "name": name}).status_code == 201
    assert unit_price(api, site, day_product, wednesday) == 45000

    everything = api.as_(Role.CASHIER).get(holidays).json()
    assert everything == [{"day": wednesday.isoformat(), "name": "元旦"}, {"day": "2098-10-01", "name": "国庆节"}]
    assert api.as_(Role.FINANCE).get(holidays, params={"year": 2098}).json() == [
        {"day": "2098-10-01", "name": "国庆节"}
    ]

    before = catalog_version(app, site["id"])
    r = api.as_(Role.ADMIN).delete(f"{holidays}/{wednesday.isoformat()}")
    assert r.status_code == 200 and r.json() == {"day": wednesday.isoformat(), "name": "元旦"}
    assert catalog_version(app, site["id"]) > before
    assert unit_price(api, site, day_product, wednesday) == 28000
    gone = api.as_(Role.ADMIN).delete(f"{holidays}/{wednesday.isoformat()}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "holiday_not_found"
    assert audit_actions(api, "site")[0] == "holiday.remove"
    assert api.as_(Role.CASHIER).delete(f"{holidays}/2098-10-01").status_code == 403


def test_every_catalog_change_bumps_the_site_version(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    before = catalog_version(app, site["id"])
    make_product(api, site["id"], code="night")
    api.as_(Role.ADMIN).post(f"{API}/sites/{site['id']}/holidays", json={"day": "2098-05-01", "name": "劳动节"})
    api.as_(Role.ADMIN).put(f"{API}/products/{day_product['id']}/stock", json={"day": "2098-05-01", "capacity": 5})
    assert catalog_version(app, site["id"]) == before + 3


LAYOUT = {
    "e_ticket": {
        "title": "南山滑雪场电子票",
        "notice_lines": ["请于入口处出示二维码", "当日有效，过期作废"],
        "show_price": False,
        "show_holder_name": True,
        "colour": "#0A7CFF",
        "qr_scale": 10,
    },
    "paper": {
        "paper_width_mm": 58,
        "header_lines": ["南山滑雪场"],
        "footer_lines": ["祝您滑雪愉快", "客服 010-12345678"],
        "show_price": True,
        "show_holder_name": False,
        "copies": 2,
    },
}


def test_ticket_layout_defaults_until_set_then_as_saved_and_audited(api: Api, site: dict[str, Any]) -> None:
    url = f"{API}/sites/{site['id']}/ticket-layout"
    default = api.as_(Role.CASHIER).get(url).json()
    assert (default["updated_by"], default["paper"]["paper_width_mm"], default["e_ticket"]["qr_scale"]) == (None, 80, 8)

    r = api.as_(Role.ADMIN).put(url, json=LAYOUT)
    assert r.status_code == 200, r.text
    got = api.as_(Role.CASHIER).get(url).json()
    assert (got["e_ticket"], got["paper"], got["updated_by"]) == (
        LAYOUT["e_ticket"],
        LAYOUT["paper"],
        "admin:admin-user",
    )
    assert audit_actions(api, "site")[0] == "ticket_layout.set"
    assert api.as_(Role.CASHIER).put(url, json=LAYOUT).status_code == 403
    assert api.as_(Role.FINANCE).get(url).status_code == 403
    assert api.as_(Role.ADMIN).get(f"{API}/sites/999999/ticket-layout").status_code == 404


@pytest.mark.parametrize(
    ("half", "field", "value"),
    [
        pytest.param("paper", "paper_width_mm", 70, id="paper-width-not-58-or-80"),
        pytest.param("paper", "copies", 4, id="too-many-copies"),
        pytest.param("paper", "footer_lines", ["\x1b@ reset the printer"], id="printer-control-code"),
        pytest.param("paper", "header_lines", ["1", "2", "3", "4", "5"], id="five-header-lines"),
        pytest.param("e_ticket", "title", "雪" * 41, id="title-too-long"),
        pytest.param("e_ticket", "notice_lines", ["two\nlines"], id="newline-in-a-line"),
        pytest.param("e_ticket", "colour", "blue", id="colour-not-hex"),
        pytest.param("e_ticket", "qr_scale", 40, id="qr-too-large"),
        pytest.param("e_ticket", "font", "serif", id="unknown-field"),
    ],
)
def test_an_invalid_ticket_layout_is_refused_and_the_saved_one_kept(
    api: Api, site: dict[str, Any], half: str, field: str, value: Any
) -> None:
    url = f"{API}/sites/{site['id']}/ticket-layout"
    api.as_(Role.ADMIN).put(url, json=LAYOUT)
    bad = {**LAYOUT, half: {**LAYOUT[half], field: value}}
    assert api.as_(Role.ADMIN).put(url, json=bad).status_code == 422
    assert api.as_(Role.ADMIN).get(url).json()["paper"] == LAYOUT["paper"]
