"""Tickets: issued on payment, one per unit, each carrying the signed credential the gates verify offline."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

import models
from cloud.audit.service import record
from cloud.deps import Principal, Role
from cloud.errors import Conflict, not_found
from cloud.faces.gallery import on_passes_issued
from cloud.orders.models import Order
from cloud.orders.service import get_order
from cloud.products.models import Product
from cloud.products.service import get_product
from cloud.settings import Settings
from cloud.sites.service import get_site
from cloud.sync.feed import append_changes
from cloud.tickets.models import Ticket, TicketState
from cloud.tickets.render import PaperTicket
from models import ProductKind
from models.credential import issue
from models.sync import TicketUpsert
from models.voucher import make_code, site_voucher_key

PUNCH_VALID_DAYS = 365


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """00:00 of `day` on the site's wall clock, as an aware UTC datetime."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def validity(
    product: Product, visit_date: date, tz: ZoneInfo, last_day: date | None = None
) -> tuple[datetime, datetime]:
    """The [valid_from, valid_until) window of a ticket for `visit_date`, by product kind; an open-dated voucher
    (`last_day`, `OrderItem.last_day`) is valid from `visit_date` through `last_day` whatever its kind."""
    if last_day is not None and last_day >= visit_date:
        return local_midnight(visit_date, tz), local_midnight(last_day + timedelta(days=1), tz)
    kind = ProductKind(product.kind)
    if kind is ProductKind.SEASON or (kind is ProductKind.PUNCH and product.season_start and product.season_end):
        assert product.season_start is not None and product.season_end is not None
        return local_midnight(product.season_start, tz), local_midnight(product.season_end + timedelta(days=1), tz)
    if kind is ProductKind.PUNCH:
        days = PUNCH_VALID_DAYS
    elif kind is ProductKind.TIME_WINDOW:
        days = 1  # the window itself (window_minutes from the first entry) travels in the token
    else:
        days = product.valid_days
    return local_midnight(visit_date, tz), local_midnight(visit_date + timedelta(days=days), tz)


def issue_for_order(session: Session, settings: Settings, order: Order, *, now: datetime) -> list[Ticket]:
    """Issue the order's tickets, one per unit; issuing again adds none. The caller commits."""
    existing = list(session.scalars(select(Ticket).where(Ticket.order_id == order.id)))
    have = {(t.order_item_id, t.unit_no) for t in existing}
    site = get_site(session, order.site_id)
    tz = ZoneInfo(site.timezone)
    fresh: list[Ticket] = []
    for item in order.items:
        product = get_product(session, item.product_id)
        valid_from, valid_until = validity(product, item.visit_date, tz, item.last_day)
        for unit_no in range(1, item.quantity + 1):
            if (item.id, unit_no) in have:
                continue
            fresh.append(
                Ticket(
                    order_id=order.id,
                    order_item_id=item.id,
                    unit_no=unit_no,
                    site_id=order.site_id,
                    product_id=product.id,
                    kind=product.kind,
                    visit_date=item.visit_date,
                    valid_from=valid_from,
                    valid_until=valid_until,
                    entries=product.entries,
                    window_minutes=product.window_minutes if product.kind == ProductKind.TIME_WINDOW else None,
                    holder_id=item.holder_id,
                    price_fen=item.unit_price_fen,
                    status=TicketState.VALID.value,
                    issued_at=now,
                )
            )
    if fresh:
        session.add_all(fresh)
        session.flush()  # the ids are the ticket numbers the tokens carry
        for ticket in fresh:
            ticket.token = sign_ticket(settings, ticket, site.code)
            ticket.code = _voucher_code(settings, order, ticket, site.code)
        session.flush()
        record(session, "system", "tickets.issue", "order", order.id, {"ticket_ids": [t.id for t in fresh]})
        # Sync hook: the new tickets go onto the site's feed in this same transaction.
        append_changes(session, order.site_id, [TicketUpsert(ticket=wire_ticket(t)) for t in fresh], now=now)
        # Face hook: an enrolled holder's new season pass carries their face to this site's gates.
        on_passes_issued(session, settings, fresh, now=now)
    return sorted(existing + fresh, key=lambda t: t.id)


class NotIssuable(Conflict):
    """A ticket whose credential cannot be made: the issuer refuses its fields (a validity the token
    cannot carry, a time-window ticket without its window, ...). Issuing again will not help, so the
    order cannot be fulfilled; payments treat this, not any error, as `issue_failed`."""

    def __init__(self, ticket: Ticket, why: str) -> None:
        super().__init__(
            "issue_failed",
            f"A ticket for {ticket.visit_date} cannot be issued: its credential cannot carry it ({why})",
            f"{ticket.visit_date} 的门票无法出票：凭证无法承载其内容（{why}）",
            product_id=ticket.product_id,
        )


def sign_ticket(settings: Settings, ticket: Ticket, site_code: str) -> str:
    """The ticket's signed credential (its id is the ticket number); `NotIssuable` if its fields cannot be carried."""
    kind = ProductKind(ticket.kind)
    try:
        return issue(
            settings.signing_key,
            key_id=settings.signing_key_id,
            kind=kind,
            ticket_no=ticket.id,
            valid_from=ticket.valid_from,
            valid_until=ticket.valid_until,
            entries=ticket.entries,
            window_minutes=ticket.window_minutes,
            site=site_code,
        )
    except ValueError as exc:  # the issuer's refusal of these fields; anything else is a fault, not a refusal
        raise NotIssuable(ticket, str(exc)) from exc


def _voucher_code(settings: Settings, order: Order, ticket: Ticket, site_code: str) -> str | None:
    """An OTA ticket's plain code, in our shape (`models.voucher`): what the platform shows the skier.

    The serial is the ticket's number, so the code is unique at its site. Other channels' tickets have
    their signed QR only; without a voucher key (`STARFISH_VOUCHER_KEY_FILE`) OTA tickets too.
    """
    if order.channel != "ota" or settings.voucher_key is None:
        return None
    key = site_voucher_key(settings.voucher_key, site_code)
    return make_code(site_code, order.ota_channel or "other", ticket.id, key)


def tickets_of_order(session: Session, order_id: int, actor: Principal) -> list[Ticket]:
    """An order's tickets; a customer sees only their own orders (404 otherwise)."""
    order = get_order(session, order_id, actor)
    return list(session.scalars(select(Ticket).where(Ticket.order_id == order.id).order_by(Ticket.id)))


def get_ticket(session: Session, ticket_id: int, actor: Principal | None = None) -> Ticket:
    """One ticket; for a customer only if it belongs to one of their orders (404 otherwise)."""
    ticket = session.get(Ticket, ticket_id)
    if ticket is not None and actor is not None and actor.role is Role.CUSTOMER:
        owner = session.scalar(select(Order.customer_id).where(Order.id == ticket.order_id))
        if owner != actor.subject_id:
            ticket = None
    if ticket is None:
        raise not_found("Ticket", "门票", ticket_id)
    return ticket


_WIRE_STATUS = {
    TicketState.VALID: models.TicketStatus.VALID,
    # "used" is the cloud's summary; the gate decides from entries / entries_used / first_entry_at itself.
    TicketState.USED: models.TicketStatus.VALID,
    TicketState.REFUNDED: models.TicketStatus.REVOKED,
    TicketState.REVOKED: models.TicketStatus.REVOKED,
    TicketState.BLOCKED: models.TicketStatus.BLOCKED,
}


def wire_ticket(ticket: Ticket) -> models.Ticket:
    """The ticket as a gate caches it (what sync sends down)."""
    holder = None
    if ticket.holder is not None:
        holder = models.Holder(holder_id=str(ticket.holder.id), name=ticket.holder.name)
    return models.Ticket(
        ticket_id=str(ticket.id),
        kind=ProductKind(ticket.kind),
        product_id=str(ticket.product_id),
        code=ticket.code,
        valid_from=ticket.valid_from,
        valid_until=ticket.valid_until,
        entries=ticket.entries,
        window_minutes=ticket.window_minutes,
        holder=holder,
        status=_WIRE_STATUS[TicketState(ticket.status)],
        first_entry_at=ticket.first_entry_at,
        entries_used=ticket.entries_used,
    )


def paper_ticket(session: Session, ticket: Ticket) -> PaperTicket:
    """The facts printed on the paper ticket."""
    order = session.get(Order, ticket.order_id)
    assert order is not None
    site = get_site(session, ticket.site_id)
    product = get_product(session, ticket.product_id)
    return PaperTicket(
        ticket_no=ticket.id,
        token=ticket.token,
        order_number=order.number,
        site_name=site.name,
        site_ascii=site.code,
        product_name=product.name,
        product_ascii=product.code,
        kind=ProductKind(ticket.kind),
        visit_date=ticket.visit_date,
        valid_from=ticket.valid_from,
        valid_until=ticket.valid_until,
        timezone=site.timezone,
        price_fen=ticket.price_fen,
        entries=ticket.entries,
        window_minutes=ticket.window_minutes,
        holder_name=ticket.holder.name if ticket.holder is not None else None,
    )
