"""Rental items, counted stock and tagged assets (the back office's side of the desk).

`rental_items.available` is what the desk may still promise: units on the shelf less those held by orders not
yet handed out. An order takes from it when it is placed (one conditional UPDATE, never below 0), a return puts
back what is rentable again. Counted items: `stock` is the units owned; setting it moves `available` by the
difference (refused when that would take back units already promised). Tagged items: adding an asset adds one
to both; a damaged pair leaves `available` until repaired, a retired or lost one leaves `stock` too. Units
returned damaged of a counted item leave the stock: the admin adds them back after repair.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import add_unique
from cloud.deps import Principal
from cloud.errors import Conflict, DomainError, not_found
from cloud.rentals.models import AssetStatus, RentalAsset, RentalItem, RentalLine, Tracking
from cloud.rentals.schemas import AssetOut, AssetPatch, ItemIn, ItemPatch
from cloud.sites.service import get_site


def create_item(session: Session, actor: Principal, site_id: int, body: ItemIn) -> RentalItem:
    get_site(session, site_id)
    taken = Conflict("rental_item_exists", f"Rental item {body.code} exists", f"租赁物品 {body.code} 已存在")
    if session.scalar(select(RentalItem.id).where(RentalItem.site_id == site_id, RentalItem.code == body.code)):
        raise taken
    item = RentalItem(site_id=site_id, stock=0, available=0, active=True, **body.model_dump())
    add_unique(session, item, taken)
    record(session, actor, "rental_item.create", "rental_item", item.id, body.model_dump(mode="json"))
    session.commit()
    return item


def get_item(session: Session, item_id: int) -> RentalItem:
    item = session.get(RentalItem, item_id)
    if item is None:
        raise not_found("Rental item", "租赁物品", item_id)
    return item


def list_items(session: Session, site_id: int, *, active_only: bool) -> list[RentalItem]:
    q = select(RentalItem).where(RentalItem.site_id == site_id).order_by(RentalItem.category, RentalItem.id)
    if active_only:
        q = q.where(RentalItem.active.is_(True))
    return list(session.scalars(q))


def patch_item(session: Session, actor: Principal, item_id: int, body: ItemPatch) -> RentalItem:
    """Prices, fees, name or on/off; an order already placed keeps the prices it was sold at."""
    item = get_item(session, item_id)
    changes = body.model_dump(exclude_none=True)
    for key, value in changes.items():
        setattr(item, key, value)
    record(session, actor, "rental_item.update", "rental_item", item.id, changes)
    session.commit()
    return item


def set_stock(session: Session, actor: Principal, item_id: int, stock: int) -> RentalItem:
    """A counted item's units owned; `available` moves by the difference, never below 0 (units promised)."""
    item = get_item(session, item_id)
    if item.tracking != Tracking.COUNTED.value:
        raise DomainError("item_tagged", "A tagged item's stock is its assets", "按编号管理的物品，库存即其资产")
    session.execute(select(RentalItem.id).where(RentalItem.id == item_id).with_for_update())
    session.refresh(item)
    delta = stock - item.stock
    if item.available + delta < 0:
        promised = item.stock - item.available
        raise Conflict(
            "stock_promised",
            f"{promised} units are out or promised; stock cannot be {stock}",
            f"已有 {promised} 件租出或被预订，库存不能设为 {stock}",
            promised=promised,
        )
    item.stock, item.available = stock, item.available + delta
    record(session, actor, "rental_item.stock", "rental_item", item.id, {"stock": stock, "delta": delta})
    session.commit()
    return item


def add_assets(session: Session, actor: Principal, item_id: int, tags: list[str], now: datetime) -> list[RentalAsset]:
    item = get_item(session, item_id)
    if item.tracking != Tracking.TAGGED.value:
        raise DomainError("item_counted", "A counted item has no tagged assets", "按数量管理的物品没有编号资产")
    if len(set(tags)) != len(tags):
        raise DomainError("duplicate_tags", "The same tag is given twice", "标签重复")
    taken = session.scalars(select(RentalAsset.tag).where(RentalAsset.tag.in_(tags))).all()
    if taken:
        raise Conflict("tag_exists", f"Tags already in use: {', '.join(taken)}", "标签已被使用", tags=list(taken))
    assets = [RentalAsset(item_id=item.id, tag=t, status=AssetStatus.AVAILABLE.value, updated_at=now) for t in tags]
    for asset in assets:
        add_unique(session, asset, Conflict("tag_exists", f"Tag {asset.tag} is in use", f"标签 {asset.tag} 已被使用"))
    n = len(assets)
    session.execute(
        update(RentalItem)
        .where(RentalItem.id == item.id)
        .values(stock=RentalItem.stock + n, available=RentalItem.available + n)
    )
    record(session, actor, "rental_asset.add", "rental_item", item.id, {"tags": tags})
    session.commit()
    return assets


def list_assets(session: Session, item_id: int) -> list[RentalAsset]:
    get_item(session, item_id)
    return list(session.scalars(select(RentalAsset).where(RentalAsset.item_id == item_id).order_by(RentalAsset.id)))


# (from, to) -> (stock change, available change); a pair out on rental is moved only by hand-out and return.
_MOVES: dict[tuple[str, str], tuple[int, int]] = {
    ("available", "damaged"): (0, -1),
    ("available", "retired"): (-1, -1),
    ("damaged", "available"): (0, 1),
    ("damaged", "retired"): (-1, 0),
    ("lost", "available"): (1, 1),  # found again
    ("retired", "available"): (1, 1),
}


def patch_asset(session: Session, actor: Principal, asset_id: int, body: AssetPatch, now: datetime) -> RentalAsset:
    """Repair, damage or retire a pair on the shelf; refused for a pair out on rental or a move that makes no sense.
    Taking the last free pair off the shelf while orders hold it is refused (`stock_promised`)."""
    asset = session.get(RentalAsset, asset_id, with_for_update=True, populate_existing=True)
    if asset is None:
        raise not_found("Rental asset", "租赁资产", asset_id)
    move = _MOVES.get((asset.status, body.status))
    if move is None:
        raise Conflict(
            "asset_status",
            f"Asset {asset.tag} is {asset.status}; it cannot become {body.status} here",
            f"资产 {asset.tag} 当前为 {asset.status}，不能在此改为 {body.status}",
            status=asset.status,
        )
    d_stock, d_available = move
    changed = session.execute(
        update(RentalItem)
        .where(RentalItem.id == asset.item_id, RentalItem.available + d_available >= 0)
        .values(stock=RentalItem.stock + d_stock, available=RentalItem.available + d_available)
    )
    if changed.rowcount == 0:  # type: ignore[attr-defined]
        raise Conflict("stock_promised", "Every free pair is promised to an order", "所有空闲的该物品都已被预订")
    record(session, actor, "rental_asset.status", "rental_asset", asset.id, {"from": asset.status, "to": body.status})
    asset.status, asset.note, asset.updated_at = body.status, body.note or asset.note, now
    session.commit()
    return asset


def asset_out(session: Session, asset: RentalAsset) -> AssetOut:
    """An asset and, while it is out, the order it is out on."""
    out = AssetOut.model_validate(asset)
    if asset.line_id is not None:
        line = session.get(RentalLine, asset.line_id)
        if line is not None:
            from cloud.orders.models import Order

            order = session.get(Order, line.order_id)
            out.order_id, out.order_number = line.order_id, order.number if order else None
    return out


def asset_by_tag(session: Session, tag: str) -> RentalAsset:
    asset = session.scalar(select(RentalAsset).where(RentalAsset.tag == tag))
    if asset is None:
        raise not_found("Rental asset", "租赁资产", tag)
    return asset
