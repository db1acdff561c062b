"""Reports through the API: a cashier's cash-up, downloads that read back the same, charts, the desk's reports.

The cash-up goes through the real sell and refund paths (counter sales, a refund at the window), so what the
system recorded for a cashier is what those paths wrote.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from openpyxl import load_workbook
from PIL import Image

from cloud.deps import Role
from cloud.lessons.models import Coach, LessonBooking, LessonProduct
from cloud.orders.models import Order
from cloud.payments.models import Payment
from cloud.refunds.models import Refund
from cloud.rentals.models import RentalItem, RentalLine, RentalMovement
from cloud.reports.charts import DPI, SIZE_IN
from cloud.reports.period import period
from cloud.reports.service import ReportName, build
from cloud.staff.models import Staff
from cloud.staff.service import issue_token
from harness.api import Api, AuthedClient
from tests.cloud.api import make_product, next_weekday

pytestmark = pytest.mark.reports

REPORTS = "/api/v1/reports"
TZ = ZoneInfo("Asia/Shanghai")
CHARTS_OUT = Path("/tmp/prompts/14")
EVIL = '=HYPERLINK("http://evil.example","点我")'


def second_cashier(api: Api, app: FastAPI) -> AuthedClient:
    with app.state.sessionmaker() as s:
        staff = Staff(username="li", password_hash="!", role="cashier", active=True)
        s.add(staff)
        s.commit()
        token = issue_token(app.state.settings, role=Role.CASHIER, subject_id=staff.id, name="li")
    return AuthedClient(api.client, token)


def sell(cashier: AuthedClient, site_id: int, product_id: int, method: str, quantity: int = 1) -> dict[str, Any]:
    item = {"product_id": product_id, "visit_date": next_weekday().isoformat(), "quantity": quantity}
    body = {"site_id": site_id, "items": [item], "payment": {"method": method, "amount_fen": 28000 * quantity}}
    r = cashier.post("/api/v1/orders/counter-sale", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_cashier_closes_the_shift_sees_the_difference_and_only_their_own(
    api: Api, app: FastAPI, site: dict[str, Any]
) -> None:
    product = make_product(api, site["id"])  # 28,000 fen on a weekday, refund fee 1,000
    wang, li = api.as_(Role.CASHIER), second_cashier(api, app)
    cash = sell(wang, site["id"], product["id"], "cash", quantity=2)
    sell(wang, site["id"], product["id"], "card")
    sell(li, site["id"], product["id"], "cash")
    ticket = cash["tickets"][0]["id"]
    r = wang.post(f"/api/v1/orders/{cash['order']['id']}/refunds", json={"ticket_ids": [ticket], "reason": "ill"})
    assert r.status_code == 201, r.text  # 27,000 back in cash at the window

    r = wang.post(f"{REPORTS}/cash-ups", json={"site_id": site["id"], "counted_fen": {"cash": 28900, "card": 28000}})
    assert r.status_code == 201, r.text
    mine = r.json()
    lines = {x["method"]: x for x in mine["lines"]}
    assert lines["cash"] == {
        "method": "cash",
        "takings_fen": 56000,
        "refunds_fen": 27000,
        "expected_fen": 29000,
        "counted_fen": 28900,
        "difference_fen": -100,
    }
    assert lines["card"]["expected_fen"] == 28000 and lines["card"]["difference_fen"] == 0

    assert wang.get(f"{REPORTS}/cash-ups/{mine['id']}").status_code == 200
    assert li.get(f"{REPORTS}/cash-ups/{mine['id']}").status_code == 404
    today = datetime.now(TZ).date().isoformat()
    listed = li.get(f"{REPORTS}/cash-ups", params={"site_id": site["id"], "from": today}).json()
    assert listed["rows"] == []
    with app.state.sessionmaker() as s:  # an online rental paid in cash at li's counter, its deposit back in cash
        paid = datetime.now(UTC)
        rental = Order(
            number="ONLINE1",
            site_id=site["id"],
            channel="online",
            kind="rental",
            status="paid",
            deposit_fen=50000,
            total_fen=60000,
            created_by="customer:1",
            created_at=paid,
            expires_at=paid,
            paid_at=paid,
        )
        s.add(rental)
        s.flush()
        s.add_all(
            [
                Payment(
                    order_id=rental.id,
                    provider="counter",
                    method="cash",
                    status="succeeded",
                    amount_fen=60000,
                    provider_ref="desk1",
                    created_at=paid,
                    paid_at=paid,
                    recorded_by="cashier:li",
                ),
                Refund(
                    order_id=rental.id,
                    amount_fen=50000,
                    fee_fen=0,
                    status="succeeded",
                    created_by="cashier:li",
                    created_at=paid,
                    settled_at=paid,
                ),
            ]
        )
        s.commit()
    r = li.post(f"{REPORTS}/cash-ups", json={"site_id": site["id"], "counted_fen": {"cash": 38000}})
    assert {x["method"]: x["difference_fen"] for x in r.json()["lines"]} == {"cash": 0}
    listed = li.get(f"{REPORTS}/cash-ups", params={"site_id": site["id"], "from": today}).json()
    assert {row["cashier"] for row in listed["rows"]} == {"cashier:li"}
    everyone = api.as_(Role.FINANCE).get(f"{REPORTS}/cash-ups", params={"site_id": site["id"], "from": today}).json()
    assert {row["cashier"] for row in everyone["rows"]} == {"cashier:li", "cashier:cashier-user"}

    # submitted again at once with nothing taken since (a retry, a double click): refused, no second shift
    r = wang.post(f"{REPORTS}/cash-ups", json={"site_id": site["id"], "counted_fen": {"cash": 28900}})
    assert r.status_code == 409 and r.json()["error"]["code"] == "cash_up_too_soon", r.text
    # the next shift starts where this one closed
    sell(wang, site["id"], product["id"], "card")
    again = wang.post(f"{REPORTS}/cash-ups", json={"site_id": site["id"], "counted_fen": {}}).json()
    assert again["opened_at"] == mine["closed_at"] and [x["takings_fen"] for x in again["lines"]] == [28000]


def test_csv_and_xlsx_read_back_to_the_json_figures(api: Api, app: FastAPI, site: dict[str, Any]) -> None:
    product = make_product(api, site["id"], name=EVIL)  # a name staff typed that a spreadsheet would run
    sell(api.as_(Role.CASHIER), site["id"], product["id"], "cash", quantity=3)
    sell(api.as_(Role.CASHIER), site["id"], product["id"], "card")
    finance = api.as_(Role.FINANCE)
    params = {"site_id": site["id"], "from": datetime.now(TZ).date().isoformat()}
    data = finance.get(f"{REPORTS}/sales", params=params).json()
    assert {(r["method"], r["orders"], r["amount_fen"]) for r in data["rows"]} == {
        ("cash", 1, 84000),
        ("card", 1, 28000),
    }
    keys = [c["key"] for c in data["columns"]]
    money = [k.endswith("_fen") for k in keys]

    def back(cells: list[Any]) -> dict[str, Any]:
        return {k: int(Decimal(str(v)) * 100) if m else v for k, v, m in zip(keys, cells, money, strict=True)}

    expected = [{k: (str(v) if isinstance(v, str) else v) for k, v in row.items()} for row in data["rows"]]
    r = finance.get(f"{REPORTS}/sales", params={**params, "format": "csv"})
    assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs for Chinese
    header, *body = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert header == [c["title"] for c in data["columns"]] and "渠道" in header
    as_read = [back(cells) for cells in body]
    for row in as_read:
        row["orders"] = int(row["orders"])
    assert as_read == expected

    r = finance.get(f"{REPORTS}/sales", params={**params, "format": "xlsx"})
    book = load_workbook(io.BytesIO(r.content), read_only=True)
    sheet = book[book.sheetnames[0]]
    assert book.sheetnames == ["销售报表"]
    title, *cells = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert title == [c["title"] for c in data["columns"]]
    assert [back(x) for x in cells] == expected

    # every report opens as a workbook (a title such as 入园人次(闸机/小时) is no valid sheet name as it is)
    for name in ReportName:
        r = finance.get(f"{REPORTS}/{name}", params={**params, "format": "xlsx"})
        assert r.status_code == 200, (name, r.text)
        book = load_workbook(io.BytesIO(r.content))
        if name == ReportName.SALES_PRODUCTS:  # the name shown as text, in CSV too, never a formula
            column = book[book.sheetnames[0]]["C"]
            assert [c.value for c in column][1:] == ["'" + EVIL]
            assert {c.data_type for c in column} == {"s"}
            r = finance.get(f"{REPORTS}/{name}", params={**params, "format": "csv"})
            assert [row[2] for row in csv.reader(io.StringIO(r.content.decode("utf-8-sig")))][1:] == ["'" + EVIL]

    assert api.as_(Role.CASHIER).get(f"{REPORTS}/sales", params=params).status_code == 403
    assert finance.get(f"{REPORTS}/sales", params={**params, "to": "2000-01-01"}).status_code == 422


def test_charts_render_with_chinese_labels(api: Api, app: FastAPI, site: dict[str, Any]) -> None:
    product = make_product(api, site["id"])
    sell(api.as_(Role.CASHIER), site["id"], product["id"], "cash")
    finance = api.as_(Role.FINANCE)
    today = datetime.now(TZ).date()
    params = {"site_id": site["id"], "from": today.isoformat()}
    size = (int(SIZE_IN[0] * DPI), int(SIZE_IN[1] * DPI))
    CHARTS_OUT.mkdir(parents=True, exist_ok=True)
    for path, query, label in (
        ("charts/sales-channels", params, "各渠道销售额"),
        ("charts/entries-hourly", {"site_id": site["id"], "day": today.isoformat()}, "入园人次"),
    ):
        png = finance.get(f"{REPORTS}/{path}", params=query)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == size
        (CHARTS_OUT / f"chart-{path.split('/')[1]}.png").write_bytes(png.content)
        svg = finance.get(f"{REPORTS}/{path}", params={**query, "format": "svg"})
        assert svg.headers["content-type"].startswith("image/svg+xml") and label in svg.text
    assert "窗口" in finance.get(f"{REPORTS}/charts/sales-channels", params={**params, "format": "svg"}).text


def test_rentals_out_and_overdue_and_lessons_sold_and_held(api: Api, app: FastAPI, site: dict[str, Any]) -> None:
    day = date(2026, 1, 7)
    noon = datetime(2026, 1, 7, 4, 0, tzinfo=UTC)  # 12:00 local
    now = noon + timedelta(hours=6)
    with app.state.sessionmaker() as s:
        skis, boots = (
            RentalItem(
                site_id=site["id"],
                code=code,
                name=name,
                category=cat,
                tracking="counted",
                stock=10,
                available=10,
                hour_weekday_fen=3000,
                hour_weekend_fen=3000,
                hour_holiday_fen=3000,
                day_weekday_fen=15000,
                day_weekend_fen=15000,
                day_holiday_fen=15000,
                deposit_fen=50000,
            )
            for code, name, cat in (("ski170", "双板 170cm", "skis"), ("boot42", "雪鞋 42", "boots"))
        )
        coach = Coach(site_id=site["id"], name="张教练")
        lesson = LessonProduct(
            site_id=site["id"],
            name="拼班",
            kind="group",
            duration_minutes=120,
            price_weekday_fen=30000,
            price_weekend_fen=30000,
            price_holiday_fen=30000,
        )
        s.add_all([skis, boots, coach, lesson])
        s.flush()
        orders = [
            Order(
                number=f"R{i}",
                site_id=site["id"],
                channel="counter",
                kind="rental",
                status="paid",
                total_fen=0,
                created_by="t",
                created_at=noon,
                expires_at=noon,
                paid_at=noon,
            )
            for i in range(7)
        ]
        orders[6].paid_at = None  # its booking was given up unpaid: never a sale, not a cancelled seat either
        s.add_all(orders)
        s.flush()
        # (item, quantity, out, returned, lost, due in hours from noon)
        for o, (item, qty, out, back, lost, due) in zip(
            orders[:4],
            [(skis, 2, 2, 0, 0, 3), (skis, 1, 1, 0, 0, 8), (boots, 3, 3, 1, 1, 2), (boots, 1, 1, 1, 0, 2)],
            strict=True,
        ):
            line = RentalLine(
                order_id=o.id,
                item_id=item.id,
                quantity=qty,
                period_unit="hour",
                periods=due,
                day_type="weekday",
                start_at=noon,
                due_at=noon + timedelta(hours=due),
                unit_price_fen=3000,
                hour_fen=3000,
                price_fen=0,
                deposit_fen=0,
                out_qty=out,
                returned_qty=back,
                lost_qty=lost,
            )
            s.add(line)
            s.flush()
            s.add(RentalMovement(order_id=o.id, line_id=line.id, kind="out", quantity=out, at=noon, by="t"))
            if back:
                s.add(
                    RentalMovement(
                        order_id=o.id,
                        line_id=line.id,
                        kind="back",
                        quantity=back,
                        overtime_fen=500,
                        at=noon + timedelta(hours=3),
                        by="t",
                    )
                )
            if lost:
                s.add(
                    RentalMovement(
                        order_id=o.id,
                        line_id=line.id,
                        kind="lost",
                        quantity=lost,
                        loss_fen=20000,
                        at=noon + timedelta(hours=3),
                        by="t",
                    )
                )
        for o, status, seats, checked in zip(
            orders[4:], ["confirmed", "cancelled", "cancelled"], [2, 1, 3], [True, False, False], strict=True
        ):
            o.kind = "lesson"
            s.add(
                LessonBooking(
                    site_id=site["id"],
                    order_id=o.id,
                    kind="group",
                    product_id=lesson.id,
                    coach_id=coach.id,
                    start_at=noon,
                    end_at=noon + timedelta(hours=2),
                    seats=seats,
                    price_fen=30000 * seats,
                    status=status,
                    created_by="t",
                    checked_in_at=noon if checked else None,
                )
            )
        s.commit()
        p = period(s, site["id"], day)
        rentals = {r["item"]: r for r in build(s, "rentals", p, now=now).rows}
        lessons = build(s, "lessons", p, now=now).rows
    # skis: 3 out, the 2 due at 15:00 overdue at 18:00; boots: 3 out - 1 back - 1 lost + 0 = 1 out, overdue
    assert {k: rentals["ski170"][k] for k in ("out_now", "overdue", "handed_out", "returned")} == {
        "out_now": 3,
        "overdue": 2,
        "handed_out": 3,
        "returned": 0,
    }
    assert {
        k: rentals["boot42"][k] for k in ("out_now", "overdue", "handed_out", "returned", "lost", "charges_fen")
    } == {"out_now": 1, "overdue": 1, "handed_out": 4, "returned": 2, "lost": 1, "charges_fen": 21000}
    assert [(r["coach"], r["sold_seats"], r["held_seats"], r["cancelled_seats"], r["amount_fen"]) for r in lessons] == [
        ("张教练", 2, 2, 1, 60000)
    ]
    r = api.as_(Role.FINANCE).get(f"{REPORTS}/rentals", params={"site_id": site["id"], "from": day.isoformat()})
    assert r.status_code == 200 and {row["item"] for row in r.json()["rows"]} == {"ski170", "boot42"}
