"""The rental desk's API (租赁): items and stock (admin), orders (desk and online), payment at the desk,
hand-out and return (desk and handheld), look-ups.

The handheld (role verifier) scans pairs out and in through the same hand-out and return endpoints as the desk
and reads an asset by its tag; it does not sell, take money or close orders: it scans units in as `ok` only
(damage, loss and their fees are the clerk's, 403 `clerk_only`) and, when it brings the last unit back, leaves the
deposit refund to the clerk's `close` (see `cloud.rentals.desk`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response

from cloud.db import utcnow
from cloud.deps import IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, public, require
from cloud.payments.schemas import CounterPaymentIn, PaymentOut
from cloud.rentals import desk, items, lookup, orders
from cloud.rentals.models import RentalStatus
from cloud.rentals.schemas import (
    PRINTABLE,
    AssetOut,
    AssetPatch,
    AssetsIn,
    HandOutIn,
    ItemIn,
    ItemOut,
    ItemPatch,
    RentalOrderIn,
    RentalOrderOut,
    ReturnIn,
    StockIn,
)

router = APIRouter(prefix="/rentals", tags=["rentals"], route_class=TransactionScopedRoute)
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Clerk = Annotated[Principal, Depends(require(Role.ADMIN, Role.RENTAL_CLERK))]
StockReader = Annotated[Principal, Depends(require(Role.ADMIN, Role.RENTAL_CLERK))]
Seller = Annotated[Principal, Depends(require(Role.ADMIN, Role.RENTAL_CLERK, Role.CUSTOMER))]
Scanner = Annotated[Principal, Depends(require(Role.ADMIN, Role.RENTAL_CLERK, Role.VERIFIER))]
Finder = Annotated[Principal, Depends(require(Role.ADMIN, Role.RENTAL_CLERK, Role.CASHIER))]
TagReader = Annotated[Principal, Depends(require(Role.ADMIN, Role.RENTAL_CLERK, Role.CASHIER, Role.VERIFIER))]
OrderReader = Annotated[Principal, Depends(require(Role.ADMIN, Role.RENTAL_CLERK, Role.CASHIER, Role.CUSTOMER))]
TagQuery = Annotated[str, Query(min_length=1, max_length=64, pattern=PRINTABLE)]


@router.post("/sites/{site_id}/items", status_code=201)
def create_item(site_id: IdPath, body: ItemIn, session: SessionDep, actor: Admin) -> ItemOut:
    """A rental item (category, size, counted or tagged, hour and day prices by day type, deposit, fees)."""
    return ItemOut.model_validate(items.create_item(session, actor, site_id, body))


@router.get("/sites/{site_id}/items", dependencies=[Depends(public)])
def list_items(site_id: IdPath, session: SessionDep, inactive: bool = False) -> list[ItemOut]:
    """The site's rental catalog with what is free now (`inactive`: switched-off items too)."""
    return [ItemOut.model_validate(i) for i in items.list_items(session, site_id, active_only=not inactive)]


@router.patch("/items/{item_id}")
def patch_item(item_id: IdPath, body: ItemPatch, session: SessionDep, actor: Admin) -> ItemOut:
    """Prices, fees, name or on/off; orders already placed keep their prices."""
    return ItemOut.model_validate(items.patch_item(session, actor, item_id, body))


@router.put("/items/{item_id}/stock")
def set_stock(item_id: IdPath, body: StockIn, session: SessionDep, actor: Admin) -> ItemOut:
    """A counted item's units owned."""
    return ItemOut.model_validate(items.set_stock(session, actor, item_id, body.stock))


@router.post("/items/{item_id}/assets", status_code=201)
def add_assets(item_id: IdPath, body: AssetsIn, session: SessionDep, actor: Admin) -> list[AssetOut]:
    """Tagged pairs (QR or RFID text per pair) into service."""
    return [AssetOut.model_validate(a) for a in items.add_assets(session, actor, item_id, body.tags, utcnow())]


@router.get("/items/{item_id}/assets")
def list_assets(item_id: IdPath, session: SessionDep, _: StockReader) -> list[AssetOut]:
    return [AssetOut.model_validate(a) for a in items.list_assets(session, item_id)]


@router.patch("/assets/{asset_id}")
def patch_asset(asset_id: IdPath, body: AssetPatch, session: SessionDep, actor: Clerk) -> AssetOut:
    """A pair on the shelf damaged, repaired or retired (not one out on rental)."""
    return AssetOut.model_validate(items.patch_asset(session, actor, asset_id, body, utcnow()))


@router.get("/assets/by-tag")
def asset_by_tag(tag: TagQuery, session: SessionDep, _: TagReader) -> AssetOut:
    """A scanned pair: its status and, when out, the order it is out on."""
    return items.asset_out(session, items.asset_by_tag(session, tag))


@router.post("/orders", status_code=201)
def create_order(
    body: RentalOrderIn,
    session: SessionDep,
    settings: SettingsDep,
    actor: Seller,
    response: Response,
    idempotency_key: Annotated[str | None, Header(min_length=8, max_length=100)] = None,
) -> RentalOrderOut:
    """A pending rental order (rent + deposit) holding its units: at the desk, or online by a customer (picked
    up at the desk within 2 days). A retry with the same Idempotency-Key answers the same order (200)."""
    order, created = orders.create_rental_order(
        session, settings, actor, body, idempotency_key=idempotency_key, now=utcnow()
    )
    if not created:
        response.status_code = 200
    return lookup.rental_out(session, order)


@router.get("/orders")
def find_orders(
    session: SessionDep,
    _: Finder,
    site_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    customer_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    phone: Annotated[str | None, Query(max_length=20, pattern=r"^\d+$")] = None,
    number: Annotated[str | None, Query(max_length=32, pattern=r"^[A-Za-z0-9]+$")] = None,
    tag: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
    status: RentalStatus | None = None,
) -> list[RentalOrderOut]:
    """Rental orders by customer, phone, order number or asset tag (the order a pair is out on), newest first."""
    found = lookup.find(
        session, site_id=site_id, customer_id=customer_id, phone=phone, number=number, tag=tag, status=status
    )
    return found


@router.get("/orders/{order_id}")
def get_order(order_id: IdPath, session: SessionDep, actor: OrderReader) -> RentalOrderOut:
    """A rental order with its lines and the pairs still out; a customer sees their own only."""
    return lookup.rental_out(session, orders.get_rental_order(session, order_id, actor))


@router.post("/orders/{order_id}/payments/counter", status_code=201)
def pay_at_desk(
    order_id: IdPath, body: CounterPaymentIn, session: SessionDep, settings: SettingsDep, actor: Clerk
) -> PaymentOut:
    """Cash or card at the rental desk for a rental order (rent and deposit): paid, ready for pick-up."""
    return PaymentOut.model_validate(orders.pay_at_desk(session, settings, actor, order_id, body, now=utcnow()))


@router.post("/orders/{order_id}/hand-out")
def hand_out(order_id: IdPath, body: HandOutIn, session: SessionDep, actor: Scanner) -> RentalOrderOut:
    """Scanned pairs and counted units go out to the customer (a pair out elsewhere is refused)."""
    return lookup.rental_out(session, desk.hand_out(session, actor, order_id, body, now=utcnow()))


@router.post("/orders/{order_id}/return")
def return_items(
    order_id: IdPath, body: ReturnIn, session: SessionDep, settings: SettingsDep, actor: Scanner
) -> RentalOrderOut:
    """Pairs and units back (ok, damaged or lost) with overtime and fees; at the desk the last one refunds the
    deposit less the charges automatically. The handheld scans units in as `ok` only and leaves the refund to
    the clerk's `close`."""
    return lookup.rental_out(session, desk.return_items(session, settings, actor, order_id, body, now=utcnow()))


@router.post("/orders/{order_id}/close")
def close(order_id: IdPath, session: SessionDep, settings: SettingsDep, actor: Clerk) -> RentalOrderOut:
    """End a paid rental with nothing out (units never picked up are freed; the rent is kept): deposit back."""
    return lookup.rental_out(session, desk.close(session, settings, actor, order_id, now=utcnow()))
