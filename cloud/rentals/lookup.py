"""Look-ups at the desk (by customer, phone, order number or asset tag) and the rental order's answer."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.errors import DomainError
from cloud.orders.models import Order
from cloud.rentals.models import RentalAsset, RentalLine, RentalOrder
from cloud.rentals.schemas import LineOut, RentalOrderOut

LIMIT = 50


def rental_out(session: Session, order: Order) -> RentalOrderOut:
    rental = session.get(RentalOrder, order.id)
    assert rental is not None
    lines = list(session.scalars(select(RentalLine).where(RentalLine.order_id == order.id).order_by(RentalLine.id)))
    tags = session.scalars(
        select(RentalAsset.tag).where(RentalAsset.line_id.in_([x.id for x in lines])).order_by(RentalAsset.tag)
    ).all()
    return RentalOrderOut(
        order_id=order.id,
        number=order.number,
        site_id=order.site_id,
        channel=order.channel,
        order_status=order.status,
        status=rental.status,
        customer_id=rental.customer_id,
        phone=rental.phone,
        name=rental.name,
        total_fen=order.total_fen,
        rent_fen=rental.rent_fen,
        deposit_fen=rental.deposit_fen,
        charges_fen=rental.charges_fen,
        deposit_refund_fen=rental.deposit_refund_fen,
        owed_fen=rental.owed_fen,
        refund_id=rental.refund_id,
        expires_at=order.expires_at,
        created_at=order.created_at,
        closed_at=rental.closed_at,
        lines=[LineOut.model_validate(x) for x in lines],
        assets_out=list(tags),
    )


def find(
    session: Session,
    *,
    site_id: int | None,
    customer_id: int | None,
    phone: str | None,
    number: str | None,
    tag: str | None,
    status: str | None,
) -> list[RentalOrderOut]:
    """Rental orders matching every criterion given (at least one of customer, phone, number, tag), newest first.
    A tag finds the order the pair is out on now."""
    if not any((customer_id, phone, number, tag)):
        raise DomainError(
            "lookup_needs_key", "Give a customer, phone, order number or tag", "请提供顾客、手机号、订单号或标签"
        )
    q = select(Order).join(RentalOrder, RentalOrder.order_id == Order.id).order_by(Order.id.desc()).limit(LIMIT)
    if site_id is not None:
        q = q.where(RentalOrder.site_id == site_id)
    if customer_id is not None:
        q = q.where(RentalOrder.customer_id == customer_id)
    if phone:
        q = q.where(RentalOrder.phone == phone)
    if number:
        q = q.where(Order.number == number)
    if status:
        q = q.where(RentalOrder.status == status)
    if tag:
        on_line = select(RentalLine.order_id).join(RentalAsset, RentalAsset.line_id == RentalLine.id)
        q = q.where(Order.id.in_(on_line.where(RentalAsset.tag == tag)))
    return [rental_out(session, o) for o in session.scalars(q)]
