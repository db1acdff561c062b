"""Tickets: issued on payment with signed credentials the gates verify; QR images and the paper ticket."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest
from fastapi import FastAPI

import models
from cloud.audit.service import entries
from cloud.db import utcnow
from cloud.deps import Role
from cloud.orders.models import Order
from cloud.products.models import Product
from cloud.tickets.models import Ticket
from cloud.tickets.render import PaperTicket, paper_pdf
from cloud.tickets.service import issue_for_order, validity, wire_ticket
from drivers.qr import make_decoder
from harness.api import Api
from models import ProductKind
from models.credential import SignedCredential, parse
from tests.cloud.api import make_product, next_weekday
from tests.cloud.paid_orders import add_holder, another_customer, sell, sell_paid

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 12, 20)
# 00:00 in Beijing is 16:00 UTC the day before.
BEIJING_MIDNIGHT = datetime(2026, 12, 19, 16, 0, tzinfo=UTC)


def beijing_midnight_utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=8)


def verify(app: FastAPI, token: str) -> SignedCredential:
    settings = app.state.settings
    credential = parse(token, {settings.signing_key_id: settings.signing_key.public_key()})
    assert isinstance(credential, SignedCredential), credential
    return credential


@pytest.mark.parametrize(
    ("product", "valid_from", "valid_until"),
    [
        pytest.param(
            Product(kind="day", valid_days=1), BEIJING_MIDNIGHT, BEIJING_MIDNIGHT + timedelta(days=1), id="day"
        ),
        pytest.param(
            Product(kind="day", valid_days=3), BEIJING_MIDNIGHT, BEIJING_MIDNIGHT + timedelta(days=3), id="3-day"
        ),
        pytest.param(
            Product(kind="time_window", valid_days=1, window_minutes=240),
            BEIJING_MIDNIGHT,
            BEIJING_MIDNIGHT + timedelta(days=1),
            id="time_window-same-day",
        ),
        pytest.param(
            Product(kind="punch", valid_days=1, entries=10),
            BEIJING_MIDNIGHT,
            BEIJING_MIDNIGHT + timedelta(days=365),
            id="punch-365-days",
        ),
        pytest.param(
            Product(
                kind="punch", valid_days=1, entries=10, season_start=date(2026, 12, 1), season_end=date(2027, 3, 15)
            ),
            datetime(2026, 11, 30, 16, tzinfo=UTC),
            datetime(2027, 3, 15, 16, tzinfo=UTC),
            id="punch-in-season",
        ),
        pytest.param(
            Product(kind="season", valid_days=1, season_start=date(2026, 12, 1), season_end=date(2027, 3, 15)),
            datetime(2026, 11, 30, 16, tzinfo=UTC),
            datetime(2027, 3, 15, 16, tzinfo=UTC),
            id="season-through-its-last-day",
        ),
    ],
)
def test_validity_window_follows_the_kind_on_the_beijing_clock(
    product: Product, valid_from: datetime, valid_until: datetime
) -> None:
    assert validity(product, DAY, SHANGHAI) == (valid_from, valid_until)


def test_paid_order_gets_one_signed_ticket_per_unit_valid_on_the_visit_day(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    day = next_weekday()
    order = sell_paid(app, api, site["id"], day_product["id"], day, quantity=3)

    r = api.as_(Role.CASHIER).get(f"/api/v1/orders/{order['id']}/tickets")
    assert r.status_code == 200, r.text
    tickets = r.json()
    assert len(tickets) == 3
    assert len({t["token"] for t in tickets}) == 3
    for t in tickets:
        assert (t["status"], t["kind"], t["price_fen"], t["order_id"]) == ("valid", "day", 28000, order["id"])
        credential = verify(app, t["token"])
        assert credential.ticket_no == t["id"] == t["ticket_no"]
        assert credential.kind is ProductKind.DAY
        assert credential.valid_from == beijing_midnight_utc(day)
        assert credential.valid_until == beijing_midnight_utc(day) + timedelta(days=1)
        assert datetime.fromisoformat(t["valid_from"]) == credential.valid_from
    assert api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}").json()["status"] == "issued"


def test_issuing_again_for_the_same_order_never_doubles_the_tickets(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), quantity=2)
    with app.state.sessionmaker() as session:
        again = issue_for_order(session, app.state.settings, session.get(Order, order["id"]), now=utcnow())
        session.commit()
        assert len(again) == 2
        issued = [e for e in entries(session, entity="order") if e.action == "tickets.issue"]
        assert [e.entity_id for e in issued] == [str(order["id"])]
    assert len(api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}/tickets").json()) == 2


def test_unpaid_order_has_no_tickets(api: Api, site: dict[str, Any], day_product: dict[str, Any]) -> None:
    order = sell(api, site["id"], day_product["id"], next_weekday())
    assert api.as_(Role.CASHIER).get(f"/api/v1/orders/{order['id']}/tickets").json() == []


def test_time_window_and_punch_tickets_carry_their_window_and_entries_in_the_token(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    four_hours = make_product(api, site["id"], code="4h", kind="time_window", window_minutes=240)
    ten_rides = make_product(api, site["id"], code="10x", kind="punch", entries=10, daily_stock=None)
    day = next_weekday()
    window_order = sell_paid(app, api, site["id"], four_hours["id"], day)
    punch_order = sell_paid(app, api, site["id"], ten_rides["id"], day)

    window = api.as_(Role.CASHIER).get(f"/api/v1/orders/{window_order['id']}/tickets").json()[0]
    credential = verify(app, window["token"])
    assert (credential.kind, credential.window_minutes, credential.entries) == (ProductKind.TIME_WINDOW, 240, None)
    assert credential.valid_until - credential.valid_from == timedelta(days=1)

    punch = api.as_(Role.CASHIER).get(f"/api/v1/orders/{punch_order['id']}/tickets").json()[0]
    credential = verify(app, punch["token"])
    assert (credential.kind, credential.entries, credential.window_minutes) == (ProductKind.PUNCH, 10, None)
    assert credential.valid_from == beijing_midnight_utc(day)
    assert credential.valid_until == beijing_midnight_utc(day) + timedelta(days=365)


def test_season_pass_runs_from_season_start_to_the_end_of_its_last_day_and_names_its_holder(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    day = next_weekday()
    start, end = day - timedelta(days=30), day + timedelta(days=90)
    season = make_product(
        api, site["id"], code="season", kind="season", season_start=start.isoformat(), season_end=end.isoformat()
    )
    customer = api.as_(Role.CUSTOMER)
    assert api.customer_id is not None
    holder_id = add_holder(app, api.customer_id, "李雪")
    order = sell_paid(app, api, site["id"], season["id"], day, role=Role.CUSTOMER, holder_id=holder_id)

    ticket = customer.get(f"/api/v1/orders/{order['id']}/tickets").json()[0]
    assert ticket["holder_id"] == holder_id
    credential = verify(app, ticket["token"])
    assert credential.valid_from == beijing_midnight_utc(start)
    assert credential.valid_until == beijing_midnight_utc(end + timedelta(days=1))
    with app.state.sessionmaker() as session:
        wire = wire_ticket(session.get(Ticket, ticket["id"]))
    assert wire.holder == models.Holder(holder_id=str(holder_id), name="李雪")
    assert (wire.ticket_id, wire.kind) == (str(ticket["id"]), ProductKind.SEASON)
    assert wire.status is models.TicketStatus.VALID
    assert wire.valid_from == credential.valid_from


def test_qr_png_decodes_back_to_the_signed_token(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    ticket = api.as_(Role.CASHIER).get(f"/api/v1/orders/{order['id']}/tickets").json()[0]

    r = api.as_(Role.CASHIER).get(f"/api/v1/tickets/{ticket['id']}/qr.png")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    image = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    decoded = make_decoder("zxing").decode(image)
    assert [code.text for code in decoded] == [ticket["token"]]
    assert verify(app, decoded[0].text).ticket_no == ticket["id"]


def test_qr_svg_and_paper_ticket_have_their_media_types(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday())
    ticket_id = api.as_(Role.CASHIER).get(f"/api/v1/orders/{order['id']}/tickets").json()[0]["id"]
    cashier = api.as_(Role.CASHIER)

    svg = cashier.get(f"/api/v1/tickets/{ticket_id}/qr.svg")
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in svg.content and svg.content.rstrip().endswith(b"</svg>")

    pdf = cashier.get(f"/api/v1/tickets/{ticket_id}/paper.pdf")
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")


def test_paper_ticket_without_a_cjk_font_falls_back_to_ascii_fields() -> None:
    ticket = PaperTicket(
        ticket_no=42,
        token="SF" + "A" * 141,
        order_number="SF20261220ABCDEF1234",
        site_name="南山滑雪场",
        site_ascii="nanshan",
        product_name="全天票",
        product_ascii="day",
        kind=ProductKind.TIME_WINDOW,
        visit_date=DAY,
        valid_from=BEIJING_MIDNIGHT,
        valid_until=BEIJING_MIDNIGHT + timedelta(days=1),
        timezone="Asia/Shanghai",
        price_fen=28050,
        window_minutes=240,
        holder_name="张三",
    )
    assert paper_pdf(ticket, font=None).startswith(b"%PDF")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/api/v1/tickets/{id}", id="ticket"),
        pytest.param("/api/v1/tickets/{id}/qr.png", id="png"),
        pytest.param("/api/v1/tickets/{id}/qr.svg", id="svg"),
        pytest.param("/api/v1/tickets/{id}/paper.pdf", id="pdf"),
    ],
)
def test_customers_reach_only_their_own_tickets(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any], path: str
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), role=Role.CUSTOMER)
    owner = api.as_(Role.CUSTOMER)
    ticket_id = owner.get(f"/api/v1/orders/{order['id']}/tickets").json()[0]["id"]
    _, stranger = another_customer(api, app)
    url = path.format(id=ticket_id)

    assert owner.get(url).status_code == 200
    assert api.as_(Role.FINANCE).get(url).status_code == 200
    assert stranger.get(url).status_code == 404
    assert api.as_(Role.GATE_TECH).get(url).status_code == 403
    assert api.as_(None).get(url).status_code == 401


def test_order_tickets_are_listed_for_the_owner_and_staff_only(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_paid(app, api, site["id"], day_product["id"], next_weekday(), role=Role.CUSTOMER)
    url = f"/api/v1/orders/{order['id']}/tickets"
    _, stranger = another_customer(api, app)

    for role in (Role.CUSTOMER, Role.CASHIER, Role.ADMIN, Role.FINANCE):
        assert len(api.as_(role).get(url).json()) == 1, role
    r = stranger.get(url)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "order_not_found"
    assert api.as_(Role.GATE_TECH).get(url).status_code == 403
    assert api.as_(Role.CASHIER).get("/api/v1/tickets/999999").json()["error"]["code"] == "ticket_not_found"
