from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from cloud.db import utcnow
from cloud.deps import IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, require
from cloud.errors import DomainError
from cloud.payments.routes import WechatPayDep, raw_body, signed_headers, wechat_notify_route
from cloud.payments.schemas import WechatFail
from cloud.payments.wechat import SignedHeaders
from cloud.payments.wechat_refunds import WechatRefunds
from cloud.refunds import payout, service
from cloud.refunds.schemas import RefundIn, RefundOut, RevocationFeed, RevocationOut
from cloud.sites.service import get_site

log = logging.getLogger("starfish.cloud.refunds")
router = APIRouter(tags=["refunds"], route_class=TransactionScopedRoute)
# Customers may refund their own online orders; the service answers 404 / 403 otherwise.
Refunders = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.CUSTOMER))]
Readers = Annotated[Principal, Depends(require(Role.ADMIN, Role.FINANCE, Role.CASHIER, Role.CUSTOMER))]
FeedReaders = Annotated[Principal, Depends(require(Role.ADMIN, Role.GATE_TECH))]
Finance = Annotated[Principal, Depends(require(Role.ADMIN, Role.FINANCE))]


@router.post("/orders/{order_id}/refunds", status_code=201)
def create_refund(
    order_id: IdPath, body: RefundIn, session: SessionDep, settings: SettingsDep, wechat: WechatPayDep, actor: Refunders
) -> RefundOut:
    """Refund unused tickets of an order, before their product's cutoff, less its fee; the tickets are revoked.

    Money paid with WeChat Pay is sent back at once; if WeChat cannot be reached the refund says so
    (`last_error`) and is sent again in the background.
    """
    refund = service.refund(session, settings, actor, order_id, body.ticket_ids, body.reason, now=utcnow())
    if refund.provider == payout.WECHAT:
        refund = payout.send(session, WechatRefunds(wechat), refund.id, now=utcnow())
    return RefundOut.model_validate(refund)


@router.get("/orders/{order_id}/refunds")
def list_refunds(order_id: IdPath, session: SessionDep, actor: Readers) -> list[RefundOut]:
    return [RefundOut.model_validate(r) for r in service.refunds_of_order(session, order_id, actor)]


@router.get("/refunds/failing")
def failing_refunds(session: SessionDep, _: Finance) -> list[RefundOut]:
    """Refunds WeChat Pay refused or closed, or that need a hand on the merchant platform (abnormal)."""
    return [RefundOut.model_validate(r) for r in payout.failing(session)]


@router.post("/refunds/{refund_id}/retry")
def retry_refund(refund_id: IdPath, session: SessionDep, wechat: WechatPayDep, actor: Finance) -> RefundOut:
    """Send a failed WeChat Pay refund again, under the same refund number (WeChat pays it once)."""
    return RefundOut.model_validate(payout.retry(session, WechatRefunds(wechat), actor, refund_id, now=utcnow()))


@router.post("/refunds/wechat/notify", **wechat_notify_route("refund notification"))
def wechat_refund_notify(
    session: SessionDep,
    wechat: WechatPayDep,
    headers: Annotated[SignedHeaders, Depends(signed_headers)],
    body: Annotated[bytes, Depends(raw_body)],
) -> Response:
    """WeChat Pay's refund notification (REFUND.SUCCESS / ABNORMAL / CLOSED): acted on only when genuine."""
    try:
        payout.accept_notification(session, wechat, headers, body, now=utcnow())
    except DomainError as exc:
        log.warning("refused a WeChat refund notification: %s %s", exc.code, exc.en)
        return JSONResponse(WechatFail(message=f"{exc.code}: {exc.en}").model_dump(), status_code=exc.status_code)
    return Response(status_code=200)


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
