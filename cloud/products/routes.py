from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends

from cloud.deps import IdPath, Principal, Role, SessionDep, TransactionScopedRoute, public, require
from cloud.products import service
from cloud.products.schemas import HolidayIn, PriceOut, ProductIn, ProductOut, StockIn

router = APIRouter(tags=["products"], route_class=TransactionScopedRoute)
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


@router.post("/sites/{site_id}/products", status_code=201)
def create_product(site_id: IdPath, body: ProductIn, session: SessionDep, actor: Admin) -> ProductOut:
    return ProductOut.model_validate(service.create_product(session, actor, site_id, body))


@router.get("/sites/{site_id}/products", dependencies=[Depends(public)])
def list_products(site_id: IdPath, session: SessionDep) -> list[ProductOut]:
    """The catalogue is public: the mini-program shows it before sign-in."""
    return [ProductOut.model_validate(p) for p in service.list_products(session, site_id) if p.active]


@router.post("/products/{product_id}/deactivate")
def deactivate(product_id: IdPath, session: SessionDep, actor: Admin) -> ProductOut:
    return ProductOut.model_validate(service.set_active(session, actor, product_id, False))


@router.post("/sites/{site_id}/holidays", status_code=201)
def add_holiday(site_id: IdPath, body: HolidayIn, session: SessionDep, actor: Admin) -> HolidayIn:
    h = service.add_holiday(session, actor, site_id, body.day, body.name)
    return HolidayIn(day=h.day, name=h.name)


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
