"""Order search for the back office: filters, newest first, paged by an opaque keyset cursor.

Decisions (the issue leaves them open):
- Results run newest first by (created_at, id). The cursor is that pair of the page's last row, base64url
  encoded: the next page starts strictly after it, so paging reaches every row (no 500-row ceiling) and an
  order created while someone pages shows up on a fresh first page, never shifting or repeating rows.
- A ticket is searched by its ticket number (the number in the QR) or by its plain code (an OTA voucher),
  whichever matches; a phone by the customer's full number; `from`/`to` are instants, `to` excluded.
- Channel: "counter" (the ticket window), "online" (the mini-program), "ota" (every OTA), or one OTA by name.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime
from sqlalchemy import Select, and_, or_, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from cloud.customers.models import Customer
from cloud.errors import DomainError
from cloud.orders.models import Order, OrderItem, OrderStatus
from cloud.sites.models import Site
from cloud.tickets.models import Ticket

MAX_PAGE = 200
SearchChannel = Literal["counter", "online", "ota", "douyin", "meituan", "ctrip", "lebingxue"]
_BASE_CHANNELS = ("counter", "online", "ota")
T = TypeVar("T")


def _in_utc(at: datetime) -> datetime:
    try:
        return at.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:00-14:00 is past the last instant Python knows
        raise ValueError("the instant is out of range") from exc


Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]  # a `from`/`to` query: with a time zone, in range


def bad_cursor() -> DomainError:
    return DomainError("bad_cursor", "The cursor is not one this list gave out", "分页游标无效", status_code=422)


def encode_cursor(at: datetime, row_id: int) -> str:
    """The opaque cursor after the row (at, row_id)."""
    raw = f"{at.astimezone(UTC).isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """(at, id) of a cursor from `encode_cursor`; anything else is a 422 `bad_cursor`."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, id_text = text.split("|")
        at, row_id = datetime.fromisoformat(at_text), int(id_text)
        if at.tzinfo is None or not 0 < row_id < 2**31:
            raise ValueError(cursor)
        return _in_utc(at), row_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise bad_cursor() from exc


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def keyset_page(
    session: Session,
    query: Select[T],
    at: InstrumentedAttribute[datetime],
    ident: InstrumentedAttribute[int],
    *,
    cursor: str | None,
    limit: int,
) -> Page[T]:
    """One page of `query` newest first by (at, ident), starting after `cursor`; rows must have those attributes."""
    if cursor is not None:
        c_at, c_id = decode_cursor(cursor)
        query = query.where(tuple_(at, ident) < tuple_(c_at, c_id))
    rows = list(session.scalars(query.order_by(at.desc(), ident.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return Page(rows, None)
    last: Any = rows[limit - 1]
    return Page(rows[:limit], encode_cursor(getattr(last, at.key), getattr(last, ident.key)))


@dataclass(frozen=True, slots=True)
class OrderFilter:
    site_id: int | None = None
    customer_id: int | None = None
    number: str | None = None
    ticket: str | None = None
    phone: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    visit_date: date | None = None
    channel: SearchChannel | None = None
    status: OrderStatus | None = None


def _ticket_orders(session: Session, ticket: str) -> Select[int]:
    """Orders holding a ticket with this number or plain code (a code names one ticket of its site)."""
    # Codes are unique per site: asking per site uses that index, where a bare `code = ?` scans every ticket.
    by_code = tuple_(Ticket.site_id, Ticket.code).in_([(s, ticket) for s in session.scalars(select(Site.id))])
    number = ticket.isascii() and ticket.isdigit() and int(ticket) < 2**31
    match = or_(Ticket.id == int(ticket), by_code) if number else by_code
    return select(Ticket.order_id).where(match)


def order_query(session: Session, f: OrderFilter) -> Select[Order]:
    """The orders matching every given filter (unordered)."""
    q = select(Order)
    if f.site_id is not None:
        q = q.where(Order.site_id == f.site_id)
    if f.customer_id is not None:
        q = q.where(Order.customer_id == f.customer_id)
    if f.number:
        q = q.where(Order.number == f.number.strip().upper())
    if f.ticket:
        q = q.where(Order.id.in_(_ticket_orders(session, f.ticket.strip())))
    if f.phone:
        q = q.where(Order.customer_id == select(Customer.id).where(Customer.phone == f.phone.strip()).scalar_subquery())
    if f.created_from is not None:
        q = q.where(Order.created_at >= f.created_from)
    if f.created_to is not None:
        q = q.where(Order.created_at < f.created_to)
    if f.visit_date is not None:
        q = q.where(Order.id.in_(select(OrderItem.order_id).where(OrderItem.visit_date == f.visit_date)))
        # No order is made after its visit day (check_visit_date refuses past days in any site's time zone):
        # saying so lets the newest-first scan start at that day, not at today (~390 -> ~30 ms on 300k orders).
        day_after = datetime.combine(f.visit_date + timedelta(days=2), time.min, UTC)
        q = q.where(Order.created_at < day_after)
    if f.channel in _BASE_CHANNELS:
        q = q.where(Order.channel == f.channel)
    elif f.channel is not None:
        q = q.where(and_(Order.channel == "ota", Order.ota_channel == f.channel))
    if f.status is not None:
        q = q.where(Order.status == f.status.value)
    return q


def search(session: Session, f: OrderFilter, *, cursor: str | None = None, limit: int = 50) -> Page[Order]:
    """One page of the orders matching `f`, newest first, and the cursor of the next page (None: the last)."""
    return keyset_page(session, order_query(session, f), Order.created_at, Order.id, cursor=cursor, limit=limit)
