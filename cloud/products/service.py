"""Products, the price calendar (weekday / weekend / 节假日) and per-day stock (库存)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import add_unique, dialect_insert, utcnow
from cloud.deps import Principal
from cloud.errors import Conflict, DomainError, not_found
from cloud.products import catalog
from cloud.products.models import Holiday, Product, Stock
from cloud.products.schemas import ProductIn
from cloud.sites.service import get_site


def create_product(session: Session, actor: Principal, site_id: int, body: ProductIn) -> Product:
    get_site(session, site_id)
    taken = Conflict("product_exists", f"Product {body.code} exists", f"产品 {body.code} 已存在")
    if session.scalar(select(Product.id).where(Product.site_id == site_id, Product.code == body.code)):
        raise taken
    product = Product(site_id=site_id, **body.model_dump())
    add_unique(session, product, taken)
    record(session, actor, "product.create", "product", product.id, body.model_dump(mode="json"))
    catalog.bump(session, site_id)
    session.commit()
    return product


def get_product(session: Session, product_id: int) -> Product:
    product = session.get(Product, product_id)
    if product is None:
        raise not_found("Product", "产品", product_id)
    return product


def list_products(session: Session, site_id: int) -> list[Product]:
    return list(session.scalars(select(Product).where(Product.site_id == site_id).order_by(Product.id)))


def set_active(session: Session, actor: Principal, product_id: int, active: bool) -> Product:
    product = get_product(session, product_id)
    product.active = active
    record(session, actor, "product.activate" if active else "product.deactivate", "product", product_id, {})
    catalog.bump(session, product.site_id)
    session.commit()
    return product


def add_holiday(session: Session, actor: Principal, site_id: int, day: date, name: str) -> Holiday:
    get_site(session, site_id)
    holiday = Holiday(site_id=site_id, day=day, name=name)
    add_unique(session, holiday, Conflict("holiday_exists", f"{day} is already a holiday", f"{day} 已是节假日"))
    record(session, actor, "holiday.add", "site", site_id, {"day": day.isoformat(), "name": name})
    catalog.bump(session, site_id)
    session.commit()
    return holiday


def day_type(session: Session, site_id: int, day: date) -> str:
    """holiday, weekend or weekday at the site (holidays from the site's cached catalog)."""
    return catalog.current(session, site_id).day_type(day)


def price_fen(session: Session, product: Product, day: date, now: datetime | None = None) -> tuple[str, int]:
    """(day type, price) of one unit for a visit on `day`, sold at `now` (default: now): the prices of the
    product's latest price change in effect then (`cloud.products.prices`), else its own columns. Price
    changes and holidays come from the site's catalog (`cloud.products.catalog`, checked against its version)."""
    return catalog.current(session, product.site_id).price_fen(product, day, now or utcnow())


def available(session: Session, product: Product, day: date) -> int | None:
    stock = session.scalar(select(Stock).where(Stock.product_id == product.id, Stock.day == day))
    if stock is None:
        return product.daily_stock
    return stock.capacity - stock.sold


def set_stock(session: Session, actor: Principal, product_id: int, day: date, capacity: int) -> Stock:
    product = get_product(session, product_id)
    _ensure_stock_row(session, product_id, day, capacity)
    stock = session.scalar(select(Stock).where(Stock.product_id == product_id, Stock.day == day))
    assert stock is not None
    if capacity < stock.sold:
        raise DomainError(
            "capacity_below_sold",
            f"{stock.sold} already sold for {day}; capacity cannot be {capacity}",
            f"{day} 已售 {stock.sold}，库存不能设为 {capacity}",
        )
    stock.capacity = capacity
    record(session, actor, "stock.set", "product", product_id, {"day": day.isoformat(), "capacity": capacity})
    catalog.bump(session, product.site_id)
    session.commit()
    return stock


def _ensure_stock_row(session: Session, product_id: int, day: date, capacity: int) -> None:
    if session.scalar(select(Stock.id).where(Stock.product_id == product_id, Stock.day == day)) is not None:
        return
    try:
        with session.begin_nested():
            session.add(Stock(product_id=product_id, day=day, capacity=capacity, sold=0))
    except IntegrityError:
        pass  # a concurrent order created it first


_RESERVE: dict[str, Any] = {}  # the reserve statement per dialect, built once


def reserve(session: Session, product: Product, day: date, quantity: int) -> None:
    """Hold stock for an order, atomically: never oversells, whatever runs concurrently.

    One statement: the day's row is created holding `quantity` of `daily_stock`, or its `sold` grows by
    `quantity` only while it stays within `capacity` (INSERT .. ON CONFLICT DO UPDATE .. WHERE .. RETURNING;
    no row back means sold out)."""
    if product.daily_stock is None:
        return
    if quantity > product.daily_stock:
        _ensure_stock_row(session, product.id, day, product.daily_stock)  # a new row could not hold them
    stmt = _RESERVE.get(session.get_bind().dialect.name)
    if stmt is None:
        stmt = _RESERVE[session.get_bind().dialect.name] = (
            dialect_insert(session)(Stock)
            .values(product_id=bindparam("p"), day=bindparam("d"), capacity=bindparam("c"), sold=bindparam("q"))
            .on_conflict_do_update(
                index_elements=[Stock.product_id, Stock.day],
                set_={"sold": Stock.sold + bindparam("q")},
                where=Stock.sold + bindparam("q") <= Stock.capacity,
            )
            .returning(Stock.id)
        )
    params = {"p": product.id, "d": day, "c": product.daily_stock, "q": quantity}
    if session.execute(stmt, params).first() is None:
        raise Conflict(
            "sold_out",
            f"{product.name} is sold out for {day}",
            f"{product.name} {day} 已售罄",
            product_id=product.id,
            day=day.isoformat(),
        )


def release(session: Session, product: Product, day: date, quantity: int) -> None:
    """Give held stock back (order expired, cancelled or refunded)."""
    if product.daily_stock is None:
        return
    session.execute(
        update(Stock)
        .where(Stock.product_id == product.id, Stock.day == day, Stock.sold >= quantity)
        .values(sold=Stock.sold - quantity)
    )
