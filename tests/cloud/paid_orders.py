"""Selling and paying orders in tests of what comes after payment (tickets, refunds)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from fastapi import FastAPI

from cloud.customers.models import Customer, Holder
from cloud.db import utcnow
from cloud.deps import Role
from cloud.fulfilment import on_paid
from cloud.orders.models import Order
from cloud.staff.service import issue_token
from harness.api import Api, AuthedClient
from models.api import API_PREFIX


def sell(
    api: Api,
    site_id: int,
    product_id: int,
    day: date,
    *,
    quantity: int = 1,
    role: Role = Role.CASHIER,
    holder_id: int | None = None,
    customer: AuthedClient | None = None,
) -> dict[str, Any]:
    """Create an order through the API: counter for staff, online for a customer."""
    item: dict[str, Any] = {"product_id": product_id, "visit_date": day.isoformat(), "quantity": quantity}
    if holder_id is not None:
        item["holder_id"] = holder_id
    channel = "online" if role is Role.CUSTOMER else "counter"
    client = customer if customer is not None else api.as_(role)
    r = client.post(f"{API_PREFIX}/orders", json={"site_id": site_id, "channel": channel, "items": [item]})
    assert r.status_code == 201, r.text
    return dict(r.json())


def pay(app: FastAPI, order_id: int, *, now: datetime | None = None) -> None:
    """Mark an order paid as the payments domain does: fulfilment.on_paid in one transaction."""
    with app.state.sessionmaker() as session:
        order = session.get(Order, order_id)
        assert order is not None
        on_paid(session, app.state.settings, order, actor="test:payment", now=now or utcnow())
        session.commit()


def sell_paid(app: FastAPI, api: Api, site_id: int, product_id: int, day: date, **kw: Any) -> dict[str, Any]:
    order = sell(api, site_id, product_id, day, **kw)
    pay(app, order["id"])
    return order


def another_customer(api: Api, app: FastAPI, phone: str = "13900000001") -> tuple[int, AuthedClient]:
    """A second signed-in customer, besides the one `api.as_(Role.CUSTOMER)` is."""
    with app.state.sessionmaker() as session:
        customer = Customer(phone=phone, nickname="other")
        session.add(customer)
        session.commit()
        token = issue_token(app.state.settings, role=Role.CUSTOMER, subject_id=customer.id, name="other")
        return customer.id, AuthedClient(api.client, token)


def add_holder(app: FastAPI, customer_id: int, name: str = "张三") -> int:
    with app.state.sessionmaker() as session:
        holder = Holder(customer_id=customer_id, name=name, id_number_last4="1234")
        session.add(holder)
        session.commit()
        return holder.id
