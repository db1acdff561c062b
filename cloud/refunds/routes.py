from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from cloud.db import utcnow
from cloud.deps import MAX_ID, IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, require
from cloud.errors import DomainError
from cloud.orders.search import MAX_PAGE, Instant
from cloud.payments.routes import WechatPayDep, raw_body, signed_headers, wechat_notify_route
from cloud.payments.schemas import WechatFail
from cloud.payments.wechat import SignedHeaders
from cloud.payments.wechat_refunds import WechatRefunds
from cloud.refunds import payout, review, service
from cloud.refunds.models import RefundStatus, ReviewStatus
from cloud.refunds.schemas import (
    RefundIn,
    RefundOut,
    RefundPage,
    RefundReviewIn,
    RefundReviewOut,
    RefundReviewPage,
    ReviewDecisionIn,
    RevocationFeed,
    RevocationOut,
)
from cloud.sites.service import get_site

log = logging.getLogger("starfish.cloud.refunds")
router = APIRouter(tags=["refunds"], route_class=TransactionScopedRoute)
# Customers may refund their own online orders; the service answers 404 / 403 otherwise.
Refunders = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.CUSTOMER))]
Readers = Annotated[Principal, Depends(require(Role.ADMIN, Role.FINANCE, Role.CASHIER, Role.CUSTOMER))]
FeedReaders = Annotated[Principal, Depends(require(Role.ADMIN, Role.GATE_TECH))]
Finance = Annotated[Principal, Depends(require(Role.ADMIN, Role.FINANCE))]
# Refund review: the window or an admin asks; an admin or finance (someone else) decides.
Requesters = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER))]
ReviewReaders = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.FINANCE))]
Cursor = Annotated[
    str | None, Query(min_length=1, max_length=200, description="next_cursor of the previous page; none: the first")
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
SiteFilter = Annotated[int | None, Query(ge=1, le=MAX_ID)]


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


@router.get("/refunds")
def list_all_refunds(
    session: SessionDep,
    _: Finance,
    status: RefundStatus | None = None,
    site_id: SiteFilter = None,
    created_from: Annotated[Instant | None, Query(alias="from", description="Made at or after")] = None,
    created_to: Annotated[Instant | None, Query(alias="to", description="Made before")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> RefundPage:
    """Refunds across orders, newest first, a page at a time (requests waiting for review: /refund-reviews)."""
    page = service.refunds_page(
        session,
        status=status,
        site_id=site_id,
        created_from=created_from,
        created_to=created_to,
        cursor=cursor,
        limit=limit,
    )
    return RefundPage(items=[RefundOut.model_validate(r) for r in page.items], next_cursor=page.next_cursor)


@router.post("/orders/{order_id}/refund-reviews", status_code=201)
def request_refund_review(
    order_id: IdPath, body: RefundReviewIn, session: SessionDep, actor: Requesters
) -> RefundReviewOut:
    """Ask for a refund the rules refuse (a weather closure, a used ticket, past the cutoff), with a reason.

    Nothing changes until someone else (admin, finance) approves it; see cloud/refunds/review.py.
    """
    made = review.request(
        session, actor, order_id, body.ticket_ids, body.reason, waive_fee=body.waive_fee, now=utcnow()
    )
    return RefundReviewOut.model_validate(made)


@router.get("/refund-reviews")
def list_refund_reviews(
    session: SessionDep,
    _: ReviewReaders,
    status: ReviewStatus | None = None,
    site_id: SiteFilter = None,
    order_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> RefundReviewPage:
    """Refund requests, newest first (`status=pending_review`: the ones waiting for a decision)."""
    page = review.reviews(session, status=status, site_id=site_id, order_id=order_id, cursor=cursor, limit=limit)
    return RefundReviewPage(items=[RefundReviewOut.model_validate(r) for r in page.items], next_cursor=page.next_cursor)


@router.get("/refund-reviews/{review_id}")
def get_refund_review(review_id: IdPath, session: SessionDep, _: ReviewReaders) -> RefundReviewOut:
    return RefundReviewOut.model_validate(review.get(session, review_id))


@router.post("/refund-reviews/{review_id}/approve")
def approve_refund_review(
    review_id: IdPath,
    body: ReviewDecisionIn,
    session: SessionDep,
    settings: SettingsDep,
    wechat: WechatPayDep,
    actor: Finance,
) -> RefundOut:
    """Approve someone else's request: the refund is made as any refund is, and the answer is that refund."""
    _, refund = review.approve(session, settings, actor, review_id, body.reason, now=utcnow())
    if refund.provider == payout.WECHAT:
        refund = payout.send(session, WechatRefunds(wechat), refund.id, now=utcnow())
    return RefundOut.model_validate(refund)


@router.post("/refund-reviews/{review_id}/deny")
def deny_refund_review(
    review_id: IdPath, body: ReviewDecisionIn, session: SessionDep, actor: Finance
) -> RefundReviewOut:
    """Deny a request with a reason (its requester may so withdraw it); nothing else changes."""
    return RefundReviewOut.model_validate(review.deny(session, actor, review_id, body.reason, now=utcnow()))


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
