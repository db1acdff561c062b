"""Money back through WeChat Pay: send a refund, take its result from the notification or the query, retry.

A refund of an order paid with WeChat Pay, and the refund of a late payment (money that arrived for an
order that could no longer be paid), is sent as one WeChat refund numbered `out_refund_no`; every retry
sends that number again, so WeChat refunds it once.

Decisions (the issue leaves them open):
- No transaction is held while WeChat is asked: the refund is read, the transaction ends, WeChat answers,
  and the answer is applied under the refund's row lock only if nobody changed the refund meanwhile. A
  notification is WeChat's final word and is applied whatever the refund's state, except onto `succeeded`.
- Sending fails for a moment (no answer, SYSTEM_ERROR): the sweep sends again after 30 s, 1, 2, 4 ... min
  (at most 1 h apart); after 8 attempts the refund is `failed`. A refusal (NOT_ENOUGH, the payer's account
  closed, ...) is `failed` at once. A failed refund keeps its last error and waits for a person: retry
  (admin, finance) sends the same number again.
- Accepted (`processing`): the sweep asks WeChat 1 min after the request, then 2, 4 ... min (at most 1 h);
  a refund WeChat does not know (the request never arrived) is sent again.
- `abnormal` (the payer's card was closed): shown with the reason, asked again hourly (someone may settle it
  on the merchant platform), and retryable.
- A refund of 0 fen (the fee took the whole price) is `succeeded` without asking WeChat.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal
from cloud.errors import Conflict, DomainError, not_found
from cloud.orders.models import Order
from cloud.payments.models import Payment, PaymentStatus
from cloud.payments.service import _remember_nonce
from cloud.payments.wechat import SignedHeaders, WechatPay
from cloud.payments.wechat_refunds import (
    RefundCallFailed,
    RefundRequest,
    RefundState,
    WechatRefunds,
    WechatRefundStatus,
)
from cloud.refunds.models import Refund, RefundStatus
from cloud.settings import Settings

log = logging.getLogger("starfish.cloud.refunds")

WECHAT = "wechat"
MAX_SEND_ATTEMPTS = 8
FIRST_QUERY_AFTER = timedelta(minutes=1)  # WeChat: query no sooner than 1 min after applying
LONGEST_WAIT = timedelta(hours=1)
SWEEP_BATCH = 20
_RESULT = {
    WechatRefundStatus.PROCESSING: RefundStatus.PROCESSING,
    WechatRefundStatus.SUCCESS: RefundStatus.SUCCEEDED,
    WechatRefundStatus.CLOSED: RefundStatus.FAILED,
    WechatRefundStatus.ABNORMAL: RefundStatus.ABNORMAL,
}
_WAITING = (RefundStatus.PENDING_PROVIDER.value, RefundStatus.PROCESSING.value, RefundStatus.ABNORMAL.value)


def attach_wechat(session: Session, refund: Refund, order: Order, *, now: datetime) -> None:
    """Send this refund of `order` through WeChat Pay if WeChat took the order's money; the caller commits."""
    payment = session.scalar(
        select(Payment).where(
            Payment.order_id == order.id,
            Payment.provider == WECHAT,
            Payment.status == PaymentStatus.SUCCEEDED.value,
        )
    )
    if payment is not None:
        _through_wechat(session, refund, payment, order, now=now)


def refund_late_payment(session: Session, payment: Payment, order: Order, *, now: datetime) -> Refund:
    """A refund of all of a late WeChat payment (no tickets), sent by the sweep; the caller commits."""
    refund = Refund(
        order_id=order.id,
        amount_fen=payment.amount_fen,
        fee_fen=0,
        status=RefundStatus.PENDING_PROVIDER.value,
        reason="late payment",
        created_by=WECHAT,
        created_at=now,
        items=[],
    )
    session.add(refund)
    _through_wechat(session, refund, payment, order, now=now)
    return refund


def _through_wechat(session: Session, refund: Refund, payment: Payment, order: Order, *, now: datetime) -> None:
    session.flush()  # the refund's id makes its number
    refund.provider, refund.payment_id = WECHAT, payment.id
    refund.out_refund_no = f"{order.number}R{refund.id}"
    if refund.amount_fen == 0:
        refund.status, refund.settled_at = RefundStatus.SUCCEEDED.value, now
    else:
        refund.status, refund.next_attempt_at = RefundStatus.PENDING_PROVIDER.value, now


def send(session: Session, refunds: WechatRefunds, refund_id: int, *, now: datetime) -> Refund:
    """Ask WeChat for a refund waiting to be sent; the answer (or why there is none) is stored and committed."""
    refund = _get(session, refund_id)
    if refund.provider != WECHAT or refund.status != RefundStatus.PENDING_PROVIDER.value:
        return refund
    payment = session.get(Payment, refund.payment_id)
    assert payment is not None and payment.provider_ref is not None and refund.out_refund_no is not None
    order = session.get(Order, refund.order_id)
    request = RefundRequest(
        out_refund_no=refund.out_refund_no,
        transaction_id=payment.provider_ref,
        refund_fen=refund.amount_fen,
        total_fen=payment.amount_fen,
        reason=refund.reason or f"退款 {order.number if order else ''}",
    )
    seen = (refund.status, refund.attempts)
    session.rollback()  # no transaction (on SQLite: no write lock) while WeChat answers
    try:
        answer: RefundState | RefundCallFailed = refunds.request(request, now=now)
    except RefundCallFailed as exc:
        answer = exc
    return _apply_answer(session, refund_id, seen, answer, now=now, sent=True)


def check(session: Session, refunds: WechatRefunds, refund_id: int, *, now: datetime) -> Refund:
    """Ask WeChat how an accepted refund stands (its notification never came); store and commit the answer."""
    refund = _get(session, refund_id)
    if refund.provider != WECHAT or refund.status not in _WAITING[1:] or refund.out_refund_no is None:
        return refund
    seen, number = (refund.status, refund.attempts), refund.out_refund_no
    session.rollback()
    try:
        answer: RefundState | RefundCallFailed = refunds.query(number, now=now)
    except RefundCallFailed as exc:
        answer = exc
    return _apply_answer(session, refund_id, seen, answer, now=now, sent=False)


def _apply_answer(
    session: Session,
    refund_id: int,
    seen: tuple[str, int],
    answer: RefundState | RefundCallFailed,
    *,
    now: datetime,
    sent: bool,
) -> Refund:
    refund = _get(session, refund_id, lock=True)
    if (refund.status, refund.attempts) != seen:  # a notification or a retry came first: theirs stands
        session.commit()
        return refund
    if sent:
        refund.attempts += 1
    if isinstance(answer, RefundState):
        _settle(session, refund, answer, now=now, source="request" if sent else "query")
    elif not sent and answer.code == "RESOURCE_NOT_EXISTS":  # the request never reached WeChat: send it again
        refund.status, refund.next_attempt_at = RefundStatus.PENDING_PROVIDER.value, now
        refund.last_error = "WeChat Pay has no such refund; sending it again"
    else:
        _failed_call(session, refund, answer, now=now, sent=sent)
    session.commit()
    return refund


def _failed_call(session: Session, refund: Refund, failure: RefundCallFailed, *, now: datetime, sent: bool) -> None:
    refund.last_error = str(failure)[:300]
    if failure.next == "never" and sent:
        _fail(session, refund, now=now)
    elif failure.next == "query" and sent:  # maybe accepted: the query decides whether to send again
        refund.status = RefundStatus.PROCESSING.value
        refund.next_attempt_at = now + FIRST_QUERY_AFTER
    elif sent and refund.attempts >= MAX_SEND_ATTEMPTS:
        refund.last_error = f"gave up after {refund.attempts} attempts: {failure}"[:300]
        _fail(session, refund, now=now)
    elif sent:  # send again later
        refund.next_attempt_at = now + _backoff(refund.attempts)
    else:  # a failed query leaves the refund as it was: ask again later
        refund.next_attempt_at = now + _next_check(refund, now)
    log.warning("WeChat refund %s: %s", refund.out_refund_no, failure)


def _fail(session: Session, refund: Refund, *, now: datetime) -> None:
    refund.status, refund.next_attempt_at = RefundStatus.FAILED.value, None
    record(session, WECHAT, "refund.failed", "refund", refund.id, _detail(refund))


def _backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=30) * 2 ** max(attempts - 1, 0), LONGEST_WAIT)


def _next_check(refund: Refund, now: datetime) -> timedelta:
    """Ask again after as long as the refund has existed (1, 2, 4 ... min), at most an hour later."""
    return min(max(now - refund.created_at, FIRST_QUERY_AFTER), LONGEST_WAIT)


def _settle(session: Session, refund: Refund, state: RefundState, *, now: datetime, source: str) -> None:
    """Take WeChat's word on the refund (its answer, the query or a notification) under the row lock."""
    if state.refund_fen != refund.amount_fen:
        refund.last_error = f"WeChat Pay reports {state.refund_fen} fen refunded, not {refund.amount_fen}"
        log.error("refund %s: %s", refund.out_refund_no, refund.last_error)
    status = _RESULT[state.status]
    before = refund.status
    refund.provider_refund_id = state.refund_id
    refund.status = status.value
    if status is RefundStatus.PROCESSING:
        refund.next_attempt_at = now + (_next_check(refund, now) if source == "query" else FIRST_QUERY_AFTER)
        return
    if status is RefundStatus.ABNORMAL:
        refund.last_error = "ABNORMAL: the payer's account cannot receive it; refund by hand on the merchant platform"
        refund.next_attempt_at = now + LONGEST_WAIT
    elif status is RefundStatus.FAILED:
        refund.last_error = "CLOSED: WeChat Pay closed the refund"
        refund.next_attempt_at = None
    else:
        refund.settled_at, refund.next_attempt_at = state.success_time or now, None
        if state.refund_fen == refund.amount_fen:
            refund.last_error = None
    if before != refund.status:
        record(session, WECHAT, f"refund.{refund.status}", "refund", refund.id, {**_detail(refund), "via": source})


def accept_notification(
    session: Session, wechat: WechatPay, headers: SignedHeaders, body: bytes, *, now: datetime
) -> Refund | None:
    """Verify, decrypt and apply a refund notification; raises (changing nothing) unless it is genuine.

    A genuine notification of a refund we never asked for (made by hand on the merchant platform) is
    acknowledged and logged, not refused: WeChat would only send it again for a day, and no retry makes
    it ours. Our refund rows are committed before WeChat hears of them, so no notification outruns one.
    """
    notice = WechatRefunds(wechat).verify_notification(headers, body, now=now)
    _remember_nonce(session, "wechat_refund", notice.nonce, now)
    refund = session.scalar(
        select(Refund)
        .where(Refund.out_refund_no == notice.state.out_refund_no, Refund.provider == WECHAT)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if refund is None:
        log.warning("WeChat refund %s is not one of ours: acknowledged", notice.state.out_refund_no)
        session.commit()
        return None
    if notice.state.refund_fen != refund.amount_fen:
        raise DomainError(
            "amount_mismatch",
            f"The notification refunds {notice.state.refund_fen} fen, refund {refund.id} is {refund.amount_fen}",
            f"通知退款金额 {notice.state.refund_fen} 分与退款 {refund.id} 金额 {refund.amount_fen} 分不符",
        )
    if refund.status != RefundStatus.SUCCEEDED.value:  # the same notification twice changes nothing more
        _settle(session, refund, notice.state, now=now, source="notification")
    session.commit()
    return refund


def retry(session: Session, refunds: WechatRefunds, actor: Principal, refund_id: int, *, now: datetime) -> Refund:
    """Send a failed (or abnormal) WeChat refund again under its own number; 409 for any other refund."""
    refund = _get(session, refund_id, lock=True)
    if refund.provider != WECHAT or refund.status not in (RefundStatus.FAILED.value, RefundStatus.ABNORMAL.value):
        raise Conflict(
            "refund_not_retryable",
            f"Refund {refund.id} is {refund.status}; only a failed WeChat Pay refund can be sent again",
            f"退款 {refund.id} 状态为 {refund.status}，只有失败的微信退款可以重试",
            status=refund.status,
        )
    record(session, actor, "refund.retry", "refund", refund.id, {**_detail(refund), "last_error": refund.last_error})
    refund.status, refund.attempts, refund.next_attempt_at = RefundStatus.PENDING_PROVIDER.value, 0, now
    session.commit()
    return send(session, refunds, refund_id, now=now)


def sweep(session: Session, refunds: WechatRefunds, *, now: datetime, limit: int = SWEEP_BATCH) -> int:
    """Send the refunds due to be sent and ask after those due to be checked; how many were handled."""
    due = session.execute(
        select(Refund.id, Refund.status)
        .where(
            Refund.provider == WECHAT,
            Refund.status.in_(_WAITING),
            or_(Refund.next_attempt_at.is_(None), Refund.next_attempt_at <= now),
        )
        .order_by(Refund.next_attempt_at, Refund.id)
        .limit(limit)
    ).all()
    session.rollback()
    for refund_id, status in due:
        if status == RefundStatus.PENDING_PROVIDER.value:
            send(session, refunds, refund_id, now=now)
        else:
            check(session, refunds, refund_id, now=now)
    return len(due)


def sweep_with(session: Session, settings: Settings, *, now: datetime) -> int:
    """The background loop's entry: the sweep on this service's WeChat Pay configuration."""
    return sweep(session, WechatRefunds(WechatPay(settings)), now=now)


def failing(session: Session, *, limit: int = 200) -> list[Refund]:
    """Refunds that need a person: failed or abnormal, oldest first."""
    return list(
        session.scalars(
            select(Refund)
            .where(Refund.status.in_((RefundStatus.FAILED.value, RefundStatus.ABNORMAL.value)))
            .order_by(Refund.id)
            .limit(limit)
        )
    )


def _get(session: Session, refund_id: int, *, lock: bool = False) -> Refund:
    refund = session.get(Refund, refund_id, with_for_update=lock, populate_existing=True)
    if refund is None:
        raise not_found("Refund", "退款", refund_id)
    return refund


def _detail(refund: Refund) -> dict[str, object]:
    return {
        "order_id": refund.order_id,
        "amount_fen": refund.amount_fen,
        "out_refund_no": refund.out_refund_no,
        "refund_id": refund.provider_refund_id,
        "status": refund.status,
        "last_error": refund.last_error,
    }
