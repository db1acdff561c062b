"""The products back office: edit a product, show it at the prices in effect now, and a site's holidays.

What an edit may change, decided as a resort runs it:
- Name, sale window, default daily stock, sale horizon and refund rules change at any time.
- Code, kind, entries, time window, valid days and the season's dates are the terms a ticket is issued
  with (a ticket copies them, the gates admit on them, the code names the product in receipts and reports).
  Once the product is sold (any order item, paid or pending) they are frozen: tickets already sold keep the
  terms they were sold with, and a product that changed under them would make the same code mean two
  things. For other terms, create a new product and deactivate this one. Sending a frozen field unchanged
  is fine (a form sends every field).
- Prices never change here: a price change (调价, `cloud.products.price_changes`) keeps the history.
- A new default daily stock applies to days whose stock is not set yet (a day already sold from, or set
  through `PUT /products/{id}/stock`, keeps its own). Refund rules apply to refunds asked for from then on,
  tickets sold earlier included: they are the resort's published rules at the time of the refund.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal
from cloud.errors import Conflict, DomainError, NotFound
from cloud.orders.models import OrderItem
from cloud.products import catalog, prices
from cloud.products.models import Holiday, PriceChange, Product
from cloud.products.price_changes import as_change, next_scheduled
from cloud.products.schemas import HolidayIn, ProductAdminOut, ProductIn, ProductOut, ProductPatch, ScheduledPrices
from cloud.products.service import get_product
from cloud.sites.service import get_site

FROZEN_ONCE_SOLD = ("code", "kind", "entries", "window_minutes", "valid_days", "season_start", "season_end")


def is_sold(session: Session, product_id: int) -> bool:
    """Has any order (in any state) ever included the product? Then its ticket terms are frozen."""
    return session.scalar(select(OrderItem.id).where(OrderItem.product_id == product_id).limit(1)) is not None


def edit_product(session: Session, actor: Principal, product_id: int, patch: ProductPatch) -> Product:
    """Apply the fields given (see the module's docstring for what may change); audited, bumps the catalog."""
    product = get_product(session, product_id)
    current = {name: getattr(product, name) for name in ProductIn.model_fields}
    try:
        merged = ProductIn.model_validate(current | patch.model_dump(exclude_unset=True))
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'product'}: {e['msg']}" for e in exc.errors()]
        raise DomainError(
            "invalid_product", "; ".join(problems), "产品设置无效：" + "；".join(problems), status_code=422
        ) from exc
    new = merged.model_dump()
    changed = {name: value for name, value in new.items() if getattr(product, name) != value}
    frozen = sorted(set(changed) & set(FROZEN_ONCE_SOLD))
    if frozen:
        # Lock the product row (FOR UPDATE, which a plain UPDATE of it does not take) before asking whether it
        # was sold: every sale's order_items INSERT takes a KEY SHARE lock on it through its foreign key, so a
        # sale whose items are written but not yet committed makes this wait for its commit, and is_sold then
        # sees it. (Bumping the catalog first would not do: a sale reads the site's version without a lock.)
        session.execute(select(Product.id).where(Product.id == product_id).with_for_update())
    if frozen and is_sold(session, product_id):
        raise Conflict(
            "product_terms_frozen",
            f"{product.name} has been sold: {', '.join(frozen)} can no longer change",
            f"{product.name} 已售出，{'、'.join(frozen)} 不能再修改",
            fields=frozen,
        )
    if "code" in changed:
        taken = select(Product.id).where(Product.site_id == product.site_id, Product.code == changed["code"])
        if session.scalar(taken) is not None:
            raise Conflict("product_exists", f"Product {changed['code']} exists", f"产品 {changed['code']} 已存在")
    if not changed:
        return product
    for name, value in changed.items():
        setattr(product, name, value)
    detail = {k: v for k, v in merged.model_dump(mode="json").items() if k in changed}
    record(session, actor, "product.edit", "product", product.id, detail)
    catalog.bump(session, product.site_id)
    session.commit()
    return product


def views(session: Session, products: Sequence[Product], now: datetime) -> list[ProductOut]:
    """The products at the prices in effect at `now`, each with its next scheduled change: one query."""
    ids = [p.id for p in products]
    by_product: dict[int, list[PriceChange]] = defaultdict(list)
    if ids:
        rows = session.scalars(
            select(PriceChange).where(PriceChange.product_id.in_(ids), PriceChange.withdrawn_at.is_(None))
        )
        for row in rows:
            by_product[row.product_id].append(row)
    return [_view(p, by_product[p.id], now) for p in products]


def view(session: Session, product: Product, now: datetime) -> ProductOut:
    return views(session, [product], now)[0]


def admin_view(session: Session, product: Product, now: datetime) -> ProductAdminOut:
    base = view(session, product, now).model_dump()
    return ProductAdminOut(**base, terms_frozen=is_sold(session, product.id))


def _view(product: Product, changes: list[PriceChange], now: datetime) -> ProductOut:
    base = prices.Prices(product.weekday_price_fen, product.weekend_price_fen, product.holiday_price_fen)
    now_prices = prices.effective(base, [as_change(c) for c in changes], now)
    upcoming = next_scheduled(changes, now)
    update: dict[str, Any] = {
        "weekday_price_fen": now_prices.weekday_fen,
        "weekend_price_fen": now_prices.weekend_fen,
        "holiday_price_fen": now_prices.holiday_fen,
    }
    if upcoming is not None:
        update["next_price_change"] = ScheduledPrices(
            effective_at=upcoming.effective_at,
            weekday_price_fen=upcoming.weekday_price_fen,
            weekend_price_fen=upcoming.weekend_price_fen,
            holiday_price_fen=upcoming.holiday_price_fen,
        )
    return ProductOut.model_validate(product).model_copy(update=update)


def all_products(session: Session, site_id: int) -> list[Product]:
    """Every product of the site, inactive ones too (the back office reactivates them)."""
    get_site(session, site_id)
    return list(session.scalars(select(Product).where(Product.site_id == site_id).order_by(Product.id)))


def holidays(session: Session, site_id: int, year: int | None = None) -> list[Holiday]:
    """The site's holidays by day, of one year if given."""
    get_site(session, site_id)
    q = select(Holiday).where(Holiday.site_id == site_id).order_by(Holiday.day)
    if year is not None:
        q = q.where(Holiday.day >= date(year, 1, 1), Holiday.day <= date(year, 12, 31))
    return list(session.scalars(q))


def remove_holiday(session: Session, actor: Principal, site_id: int, day: date) -> HolidayIn:
    """The day is an ordinary weekday or weekend day again: orders from now on pay that price; orders already
    made keep theirs. Audited, bumps the catalog."""
    get_site(session, site_id)
    holiday = session.scalar(select(Holiday).where(Holiday.site_id == site_id, Holiday.day == day))
    if holiday is None:
        raise NotFound("holiday_not_found", f"{day} is not a holiday here", f"{day} 不是本场节假日")
    removed = HolidayIn(day=holiday.day, name=holiday.name)
    session.execute(delete(Holiday).where(Holiday.id == holiday.id))
    record(session, actor, "holiday.remove", "site", site_id, removed.model_dump(mode="json"))
    catalog.bump(session, site_id)
    session.commit()
    return removed
