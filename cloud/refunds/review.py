"""Refund review: a refund the automatic rules refuse, asked for with a reason, decided by a second person.

Decisions (the issue leaves them open):
- Who: the ticket window or an admin asks (`pending_review`: nothing revoked, no stock, points or money moved);
  an admin or finance approves or denies, each with a reason. Approving makes the refund exactly as a refund
  within the rules does (`service.refund`: tickets revoked down the feed, stock and points given back, money
  back at the window, through WeChat Pay or the OTA), only past the rules' refusals: a used ticket, past the
  cutoff, a product sold as non-refundable. A ticket already refunded or revoked is never refunded again.
- Four eyes: the person who asked may not approve (the same staff account, whatever its role; a resort with
  one admin has finance approve). They may deny their own request, which withdraws it and changes nothing.
- What it pays: the price less the product's refund fee, or all of it when the request waives the fee (the
  resort's doing, such as a weather closure). A request the rules would grant as it stands (no refusal, no fee
  waived) is refused with `no_review_needed`: refund it directly. A ticket waits in one open request at a time.
- Races: a decision locks the request's row, so of two approvals at once one refunds and the other is told
  `review_decided`; a ticket refunded meanwhile makes the approval fail with `already_refunded`, one used
  since the request (its entries_used, stored when asked, grew) with `review_stale`: the reviewer approved
  what they were shown, not a later passage. Either way nothing is refunded and the request stays open, to
  be denied (and asked again, if the refund is still wanted).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal
from cloud.errors import Conflict, Forbidden, not_found
from cloud.orders.models import Order
from cloud.orders.search import Page, keyset_page
from cloud.orders.service import get_order
from cloud.products import service as products
from cloud.refunds import service
from cloud.refunds.models import Refund, RefundReview, ReviewStatus
from cloud.refunds.rules import Override, assess_reviewed
from cloud.settings import Settings
from cloud.tickets.models import Ticket


def request(
    session: Session,
    actor: Principal,
    order_id: int,
    ticket_ids: list[int],
    reason: str,
    *,
    waive_fee: bool,
    now: datetime,
) -> RefundReview:
    """Ask for a refund outside the rules; nothing changes until a second person approves it. Commits."""
    order = get_order(session, order_id, actor)
    service.check_paid(order)
    # Requests for one order take turns, so a ticket is never in two open requests.
    session.execute(select(Order.id).where(Order.id == order.id).with_for_update())
    tickets = service.order_tickets(session, order, ticket_ids)
    keep_fee = Override(waive_fee=False)  # refuses refunded and revoked tickets; the fees the rules would keep
    fees = [assess_reviewed(t, products.get_product(session, t.product_id), keep_fee).fee_fen for t in tickets.values()]
    waiting = session.scalars(
        select(RefundReview).where(
            RefundReview.order_id == order.id, RefundReview.status == ReviewStatus.PENDING_REVIEW.value
        )
    )
    for other in waiting:
        both = sorted(set(other.ticket_ids) & set(ticket_ids))
        if both:
            raise Conflict(
                "review_pending",
                f"Tickets {both} already wait in refund request {other.id}",
                f"门票 {both} 已在退款申请 {other.id} 中等待审核",
                review_id=other.id,
                ticket_ids=both,
            )
    codes = _refusals(session, order, tickets, now)
    if not codes and not (waive_fee and any(fees)):
        raise Conflict(
            "no_review_needed",
            "The refund rules allow this refund as it stands: refund the tickets directly",
            "退款规则允许直接退款，无需审核，请直接办理退款",
        )
    review = RefundReview(
        order_id=order.id,
        ticket_ids=sorted(ticket_ids),
        entries_used=[tickets[i].entries_used for i in sorted(ticket_ids)],
        waive_fee=waive_fee,
        reason=reason,
        rule_codes=",".join(codes),
        status=ReviewStatus.PENDING_REVIEW.value,
        requested_by=actor.actor,
        requested_by_staff_id=actor.subject_id,
        requested_at=now,
    )
    session.add(review)
    session.flush()
    detail = {"order_id": order.id, "ticket_ids": review.ticket_ids, "waive_fee": waive_fee, "rule_codes": codes}
    record(session, actor, "refund_review.request", "refund_review", review.id, {**detail, "reason": reason})
    session.commit()
    return review


def _refusals(session: Session, order: Order, tickets: dict[int, Ticket], now: datetime) -> list[str]:
    """The codes the rules refuse these tickets with, one ticket at a time (none: the rules allow them all)."""
    codes: list[str] = []
    for ticket_id in sorted(tickets):
        try:
            service.rule_lines(session, order, {ticket_id: tickets[ticket_id]}, now)
        except Conflict as refused:
            if refused.code not in codes:
                codes.append(refused.code)
    return codes


def approve(
    session: Session, settings: Settings, actor: Principal, review_id: int, reason: str, *, now: datetime
) -> tuple[RefundReview, Refund]:
    """Approve a waiting request: the refund is made as `service.refund` makes one, past the rules. Commits."""
    review = _waiting(session, review_id)
    if review.requested_by_staff_id == actor.subject_id:
        raise Forbidden(
            "own_request",
            "You asked for this refund; someone else must approve it",
            "这是您提交的退款申请，须由他人审批",
            review_id=review.id,
        )
    refund = service.refund(
        session,
        settings,
        actor,
        review.order_id,
        list(review.ticket_ids),
        review.reason,
        now=now,
        commit=False,
        override=Override(review.waive_fee),
    )
    # Checked after the refund's UPDATE: the tickets' rows are locked by it now, so a passage either committed
    # before (seen here) or waits for this transaction (and then finds the ticket refunded).
    rows = session.execute(select(Ticket.id, Ticket.entries_used).where(Ticket.id.in_(review.ticket_ids)))
    now_used = {ticket_id: entries_used for ticket_id, entries_used in rows}
    used_since = [i for i, was in zip(review.ticket_ids, review.entries_used, strict=True) if now_used[i] != was]
    if used_since:
        session.rollback()
        raise Conflict(
            "review_stale",
            f"Tickets {used_since} were used since the request was made; deny it, and ask again if still wanted",
            f"门票 {used_since} 在申请提交后已被使用，请驳回后重新申请",
            review_id=review_id,
            ticket_ids=used_since,
        )
    _decide(review, ReviewStatus.APPROVED, actor, reason, now)
    review.refund_id = refund.id
    detail = {"order_id": review.order_id, "refund_id": refund.id, "amount_fen": refund.amount_fen, "reason": reason}
    record(session, actor, "refund_review.approve", "refund_review", review.id, detail)
    session.commit()
    return review, refund


def deny(session: Session, actor: Principal, review_id: int, reason: str, *, now: datetime) -> RefundReview:
    """Deny (or, by its requester, withdraw) a waiting request; nothing else changes. Commits."""
    review = _waiting(session, review_id)
    _decide(review, ReviewStatus.DENIED, actor, reason, now)
    record(
        session,
        actor,
        "refund_review.deny",
        "refund_review",
        review.id,
        {"order_id": review.order_id, "reason": reason},
    )
    session.commit()
    return review


def _waiting(session: Session, review_id: int) -> RefundReview:
    """The request, its row locked until the decision commits; a 409 unless it still waits."""
    review = session.scalar(
        select(RefundReview)
        .where(RefundReview.id == review_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if review is None:
        raise not_found("Refund review", "退款申请", review_id)
    if review.status != ReviewStatus.PENDING_REVIEW.value:
        raise Conflict(
            "review_decided",
            f"Refund request {review.id} was already {review.status} by {review.decided_by}",
            f"退款申请 {review.id} 已由 {review.decided_by} 处理（{review.status}）",
            status=review.status,
        )
    return review


def _decide(review: RefundReview, status: ReviewStatus, actor: Principal, reason: str, now: datetime) -> None:
    review.status, review.decided_by, review.decided_at, review.decision_reason = status.value, actor.actor, now, reason


def get(session: Session, review_id: int) -> RefundReview:
    review = session.get(RefundReview, review_id)
    if review is None:
        raise not_found("Refund review", "退款申请", review_id)
    return review


def reviews(
    session: Session,
    *,
    status: ReviewStatus | None,
    site_id: int | None,
    order_id: int | None,
    cursor: str | None,
    limit: int,
) -> Page[RefundReview]:
    """Refund requests, newest first, a page at a time."""
    q: Select[RefundReview] = select(RefundReview)
    if status is not None:
        q = q.where(RefundReview.status == status.value)
    if order_id is not None:
        q = q.where(RefundReview.order_id == order_id)
    if site_id is not None:
        q = q.join(Order, Order.id == RefundReview.order_id).where(Order.site_id == site_id)
    return keyset_page(session, q, RefundReview.requested_at, RefundReview.id, cursor=cursor, limit=limit)
