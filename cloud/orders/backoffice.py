"""The back office's order routes: search every order, and one customer's orders, a page at a time (staff only).

Registered before the orders router, so `/orders/search` is this search and never taken for an order id.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from cloud.customers.models import Customer
from cloud.deps import MAX_ID, IdPath, Principal, Role, SessionDep, TransactionScopedRoute, require
from cloud.errors import not_found
from cloud.orders.models import Order, OrderStatus
from cloud.orders.schemas import OrderOut
from cloud.orders.search import MAX_PAGE, Instant, OrderFilter, Page, SearchChannel, search

router = APIRouter(tags=["orders"], route_class=TransactionScopedRoute)
Staff = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.FINANCE))]
Cursor = Annotated[
    str | None, Query(min_length=1, max_length=200, description="next_cursor of the previous page; none: the first")
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Orders per page")]


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")

    @classmethod
    def of(cls, page: Page[Order]) -> OrderPage:
        return cls(items=[OrderOut.model_validate(o) for o in page.items], next_cursor=page.next_cursor)


@router.get("/orders/search")
def search_orders(
    session: SessionDep,
    _: Staff,
    number: Annotated[str | None, Query(min_length=1, max_length=32, description="Order number")] = None,
    ticket: Annotated[
        str | None, Query(min_length=1, max_length=64, description="Ticket number, or a ticket's plain code")
    ] = None,
    phone: Annotated[str | None, Query(min_length=1, max_length=20, description="The customer's phone")] = None,
    created_from: Annotated[Instant | None, Query(alias="from", description="Created at or after")] = None,
    created_to: Annotated[Instant | None, Query(alias="to", description="Created before")] = None,
    visit_date: Annotated[date | None, Query(description="Orders with an item for this visit day")] = None,
    channel: Annotated[SearchChannel | None, Query(description="counter, online, ota, or one OTA")] = None,
    status: OrderStatus | None = None,
    site_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> OrderPage:
    """Orders matching every filter given, newest first, a page at a time: follow `next_cursor` to the end."""
    f = OrderFilter(
        site_id=site_id,
        number=number,
        ticket=ticket,
        phone=phone,
        created_from=created_from,
        created_to=created_to,
        visit_date=visit_date,
        channel=channel,
        status=status,
    )
    return OrderPage.of(search(session, f, cursor=cursor, limit=limit))


@router.get("/customers/{customer_id}/orders")
def customer_orders(
    customer_id: IdPath,
    session: SessionDep,
    _: Staff,
    status: OrderStatus | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> OrderPage:
    """A customer's orders, newest first, for the ticket window and the back office (404: no such customer)."""
    if session.get(Customer, customer_id) is None:
        raise not_found("Customer", "顾客", customer_id)
    return OrderPage.of(
        search(session, OrderFilter(customer_id=customer_id, status=status), cursor=cursor, limit=limit)
    )
