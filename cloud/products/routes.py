from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cloud.db import utcnow
from cloud.deps import IdPath, Principal, Role, SessionDep, TransactionScopedRoute, public, require
from cloud.products import admin, layouts, price_changes, service
from cloud.products.schemas import (
    HolidayIn,
    PriceChangeIn,
    PriceChangeOut,
    PriceOut,
    ProductAdminOut,
    ProductIn,
    ProductOut,
    ProductPatch,
    StockIn,
    TicketLayoutIn,
    TicketLayoutOut,
)

router = APIRouter(tags=["products"], route_class=TransactionScopedRoute)
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
BackOffice = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.FINANCE))]
PriceReaders = Annotated[Principal, Depends(require(Role.ADMIN, Role.FINANCE))]
LayoutReaders = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER))]


@router.post("/sites/{site_id}/products", status_code=201)
def create_product(site_id: IdPath, body: ProductIn, session: SessionDep, actor: Admin) -> ProductOut:
    return admin.view(session, service.create_product(session, actor, site_id, body), utcnow())


@router.get("/sites/{site_id}/products", dependencies=[Depends(public)])
def list_products(site_id: IdPath, session: SessionDep) -> list[ProductOut]:
    """The catalogue is public: the mini-program shows it before sign-in. Prices are those in effect now; a
    scheduled price change (调价) shows as `next_price_change` (its time and prices, never its note)."""
    return admin.views(session, [p for p in service.list_products(session, site_id) if p.active], utcnow())


@router.get("/sites/{site_id}/products/all")
def list_all_products(site_id: IdPath, session: SessionDep, _: BackOffice) -> list[ProductOut]:
    """Every product of the site, inactive ones too, at the prices in effect now."""
    return admin.views(session, admin.all_products(session, site_id), utcnow())


@router.get("/products/{product_id}")
def get_product(product_id: IdPath, session: SessionDep, _: BackOffice) -> ProductAdminOut:
    """One product, active or not, and whether its ticket terms are frozen (it has been sold)."""
    return admin.admin_view(session, service.get_product(session, product_id), utcnow())


@router.patch("/products/{product_id}")
def edit_product(product_id: IdPath, body: ProductPatch, session: SessionDep, actor: Admin) -> ProductOut:
    """Change a product's name, sale window, default stock, sale horizon or refund rules at any time; its code,
    kind, entries and validity only until it is first sold (tickets sold carry their terms: 409
    `product_terms_frozen`). Prices change through price changes (调价), never here."""
    return admin.view(session, admin.edit_product(session, actor, product_id, body), utcnow())


@router.post("/products/{product_id}/deactivate")
def deactivate(product_id: IdPath, session: SessionDep, actor: Admin) -> ProductOut:
    """Off sale from now on; tickets sold stay valid."""
    return admin.view(session, service.set_active(session, actor, product_id, False), utcnow())


@router.post("/products/{product_id}/activate")
def activate(product_id: IdPath, session: SessionDep, actor: Admin) -> ProductOut:
    """Back on sale, with its terms and the prices in effect now."""
    return admin.view(session, service.set_active(session, actor, product_id, True), utcnow())


@router.post("/products/{product_id}/price-changes", status_code=201)
def schedule_price_change(product_id: IdPath, body: PriceChangeIn, session: SessionDep, actor: Admin) -> PriceChangeOut:
    """Price change (调价): new prices from `effective_at` (now if left out, or later, up to a year ahead); an
    order pays the prices in effect when it is created."""
    now = utcnow()
    change = price_changes.schedule(session, actor, product_id, body, now=now)
    return price_changes.out(change, [change], now)


@router.get("/products/{product_id}/price-changes")
def price_change_history(
    product_id: IdPath,
    session: SessionDep,
    _: PriceReaders,
    limit: Annotated[int, Query(ge=1, le=price_changes.HISTORY_LIMIT)] = 100,
) -> list[PriceChangeOut]:
    """The product's price history, the newest change first: who made each and when, and its status now."""
    return price_changes.history(session, product_id, now=utcnow(), limit=limit)


@router.post("/price-changes/{change_id}/withdraw")
def withdraw_price_change(change_id: IdPath, session: SessionDep, actor: Admin) -> PriceChangeOut:
    """Withdraw a change not yet in effect (409 `price_change_in_effect` once it is: schedule another)."""
    now = utcnow()
    change = price_changes.withdraw(session, actor, change_id, now=now)
    return price_changes.out(change, [change], now)


@router.post("/sites/{site_id}/holidays", status_code=201)
def add_holiday(site_id: IdPath, body: HolidayIn, session: SessionDep, actor: Admin) -> HolidayIn:
    h = service.add_holiday(session, actor, site_id, body.day, body.name)
    return HolidayIn(day=h.day, name=h.name)


@router.get("/sites/{site_id}/holidays")
def list_holidays(
    site_id: IdPath,
    session: SessionDep,
    _: BackOffice,
    year: Annotated[int | None, Query(ge=2000, le=2099)] = None,
) -> list[HolidayIn]:
    """The site's holidays (节假日) by day, of one year if given."""
    return [HolidayIn(day=h.day, name=h.name) for h in admin.holidays(session, site_id, year)]


@router.delete("/sites/{site_id}/holidays/{day}")
def remove_holiday(site_id: IdPath, day: date, session: SessionDep, actor: Admin) -> HolidayIn:
    """The day sells at its weekday or weekend price again, for orders from now on; answers the removed holiday."""
    return admin.remove_holiday(session, actor, site_id, day)


@router.get("/sites/{site_id}/ticket-layout")
def get_ticket_layout(site_id: IdPath, session: SessionDep, _: LayoutReaders) -> TicketLayoutOut:
    """The site's e-ticket and paper ticket layout (电子票/纸质票设置); the defaults until one is saved."""
    return layouts.get_layout(session, site_id)


@router.put("/sites/{site_id}/ticket-layout")
def put_ticket_layout(site_id: IdPath, body: TicketLayoutIn, session: SessionDep, actor: Admin) -> TicketLayoutOut:
    """Replace the site's ticket layout; read by the mini-program's ticket page and the window's printing client."""
    return layouts.put_layout(session, actor, site_id, body, now=utcnow())


@router.get("/products/{product_id}/price", dependencies=[Depends(public)])
def price(product_id: IdPath, day: date, session: SessionDep) -> PriceOut:
    product = service.get_product(session, product_id)
    kind, fen = service.price_fen(session, product, day)
    return PriceOut(
        product_id=product.id, day=day, day_type=kind, price_fen=fen, available=service.available(session, product, day)
    )


@router.put("/products/{product_id}/stock")
def set_stock(product_id: IdPath, body: StockIn, session: SessionDep, actor: Admin) -> PriceOut:
    product = service.get_product(session, product_id)
    service.set_stock(session, actor, product_id, body.day, body.capacity)
    kind, fen = service.price_fen(session, product, body.day)
    return PriceOut(
        product_id=product.id,
        day=body.day,
        day_type=kind,
        price_fen=fen,
        available=service.available(session, product, body.day),
    )
