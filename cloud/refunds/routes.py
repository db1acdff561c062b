from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cloud.db import utcnow
from cloud.deps import IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, require
from cloud.refunds import service
from cloud.refunds.schemas import RefundIn, RefundOut, RevocationFeed, RevocationOut
from cloud.sites.service import get_site

router = APIRouter(tags=["refunds"], route_class=TransactionScopedRoute)
# Customers may refund their own online orders; the service answers 404 / 403 otherwise.
Refunders = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.CUSTOMER))]
Readers = Annotated[Principal, Depends(require(Role.ADMIN, Role.FINANCE, Role.CASHIER, Role.CUSTOMER))]
FeedReaders = Annotated[Principal, Depends(require(Role.ADMIN, Role.GATE_TECH))]


@router.post("/orders/{order_id}/refunds", status_code=201)
def create_refund(
    order_id: IdPath, body: RefundIn, session: SessionDep, settings: SettingsDep, actor: Refunders
) -> RefundOut:
    """Refund unused tickets of an order, before their product's cutoff, less its fee; the tickets are revoked."""
    refund = service.refund(session, settings, actor, order_id, body.ticket_ids, body.reason, now=utcnow())
    return RefundOut.model_validate(refund)


@router.get("/orders/{order_id}/refunds")
def list_refunds(order_id: IdPath, session: SessionDep, actor: Readers) -> list[RefundOut]:
    return [RefundOut.model_validate(r) for r in service.refunds_of_order(session, order_id, actor)]


@router.get("/sites/{site_id}/revocations")
def revocations(
    site_id: IdPath,
    session: SessionDep,
    _: FeedReaders,
    after: Annotated[int, Query(ge=0, le=2**31 - 1, description="Last sequence already seen; 0 for all")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> RevocationFeed:
    """The site's revoked tickets after sequence `after`, in order: what sync carries to the gates."""
    get_site(session, site_id)
    items = [RevocationOut.model_validate(r) for r in service.revocations_since(session, site_id, after, limit=limit)]
    return RevocationFeed(site_id=site_id, after=after, items=items, last_seq=items[-1].seq if items else after)
