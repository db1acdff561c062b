"""Payments: start one through a provider, settle a provider's confirmation, never pay an order twice.

A confirmation for an order that can no longer be paid (expired, cancelled, or already paid another way)
does not resurrect it: the money is recorded as a `late` payment that needs a refund, and the provider is
told the notification arrived so it stops retrying. Stock of an expired order has gone back on sale, so
issuing its tickets could oversell the day.

Money that arrives on time for an order whose tickets cannot be issued (a visit date the credentials cannot
carry, a product changed after the order, ...) is not taken silently either: the order is cancelled (its
stock goes back on sale), the payment is recorded as `late` (to refund) and the audit log says why
(`payment.unfulfilled`). At the ticket window the payment is refused instead (409 `order_unfulfillable`):
the cashier hands the money back. Only a refusal made on purpose counts as "cannot be issued" (see
`_fulfil`); an unexpected error while issuing is a fault: 503 `fulfilment_failed`, nothing recorded, and
WeChat Pay retries until it is fixed.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from cloud import fulfilment, metrics
from cloud.audit.service import record
from cloud.customers.models import Customer
from cloud.deps import Principal
from cloud.errors import Conflict, DomainError, not_found
from cloud.orders.models import Order, OrderStatus
from cloud.orders.service import cancel_unfulfillable, get_order
from cloud.payments.models import Payment, PaymentStatus, SeenNotifyNonce
from cloud.payments.providers import AwaitingCustomer, Captured, Confirmation, CounterProvider, Payer, PaymentProvider
from cloud.payments.schemas import CounterPaymentIn
from cloud.payments.wechat import MAX_CLOCK_SKEW, SignedHeaders, WechatPay
from cloud.settings import Settings

log = logging.getLogger("starfish.cloud.payments")

# A nonce can only be replayed while its timestamp is fresh: at most 2 x the skew after it was first seen.
NONCE_MEMORY = 3 * MAX_CLOCK_SKEW


def _payable(order: Order, now: datetime) -> None:
    if order.status != OrderStatus.PENDING.value or now >= order.expires_at:
        state = order.status if order.status != OrderStatus.PENDING.value else OrderStatus.EXPIRED.value
        raise Conflict(
            "order_not_payable",
            f"Order {order.number} is {state}; it cannot be paid",
            f"订单 {order.number} 当前为 {state}，不能支付",
        )


def _locked_order(session: Session, order_id: int) -> Order:
    order = session.get(Order, order_id, with_for_update=True, populate_existing=True)
    if order is None:
        raise not_found("Order", "订单", order_id)
    return order


def _flush_payment(session: Session, order: Order) -> None:
    # The partial unique index allows one succeeded payment per order: a concurrent second payment lands here.
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(
            "order_not_payable", f"Order {order.number} is already paid", f"订单 {order.number} 已支付"
        ) from exc


def start_payment(
    session: Session,
    settings: Settings,
    provider: PaymentProvider,
    order: Order,
    payer: Payer,
    actor: Principal,
    *,
    now: datetime,
) -> tuple[Payment, Captured | AwaitingCustomer]:
    """Begin paying an order; money captured now pays and issues it in the same transaction."""
    _payable(order, now)
    started = provider.start(order, payer, now=now)
    if isinstance(started, Captured):
        payment = Payment(
            order_id=order.id,
            provider=provider.name,
            method=started.method,
            status=PaymentStatus.SUCCEEDED.value,
            amount_fen=started.amount_fen,
            provider_ref=started.provider_ref,
            created_at=now,
            paid_at=now,
            recorded_by=actor.actor,
        )
        session.add(payment)
        _flush_payment(session, order)
        record(session, actor, "payment.succeeded", "payment", payment.id, _detail(payment))
        problem = _fulfil(session, settings, order, actor=actor.actor, now=now)
        if problem is not None:
            number = order.number
            session.rollback()
            raise Conflict(
                "order_unfulfillable",
                f"Order {number} cannot be issued ({problem.code}); the payment was not taken",
                f"订单 {number} 无法出票（{problem.code}），未收款",
                reason=problem.code,
            )
    else:
        # Asking again (the customer closed the pay sheet) reuses the pending payment: WeChat keys on out_trade_no.
        payment = _pending(session, order, provider.name) or Payment(
            order_id=order.id, provider=provider.name, status=PaymentStatus.PENDING.value, created_at=now
        )
        payment.method, payment.amount_fen, payment.recorded_by = started.method, started.amount_fen, actor.actor
        session.add(payment)
        session.flush()
        record(session, actor, "payment.start", "payment", payment.id, _detail(payment))
    metrics.payment(session, provider.name, payment.status)
    session.commit()
    return payment, started


def pay_at_counter(
    session: Session, settings: Settings, actor: Principal, order_id: int, body: CounterPaymentIn, *, now: datetime
) -> Payment:
    """The cashier took cash or card for the exact total: the order is paid and issued."""
    order = _locked_order(session, order_id)
    payer = Payer(method=body.method, amount_fen=body.amount_fen)
    return start_payment(session, settings, CounterProvider(), order, payer, actor, now=now)[0]


def start_wechat(
    session: Session, settings: Settings, wechat: WechatPay, actor: Principal, order_id: int, *, now: datetime
) -> tuple[Payment, dict[str, str]]:
    """Create the WeChat prepay order for the customer's own order; returns the mini-program pay parameters."""
    order = get_order(session, order_id, actor)
    customer = session.get(Customer, order.customer_id) if order.customer_id is not None else None
    payer = Payer(method="jsapi", openid=customer.wechat_openid if customer else None)
    payment, started = start_payment(session, settings, wechat, order, payer, actor, now=now)
    assert isinstance(started, AwaitingCustomer)
    return payment, started.client_params


def accept_wechat_notification(
    session: Session, settings: Settings, wechat: WechatPay, headers: SignedHeaders, body: bytes, *, now: datetime
) -> Payment | None:
    """Verify, decrypt and settle a WeChat Pay notification; raises (changing nothing) unless it is genuine."""
    notification = wechat.verify_notification(headers, body, now=now)
    _remember_nonce(session, wechat.name, notification.nonce, now)
    payment = None
    if notification.confirmation is not None:
        payment = settle(session, settings, wechat.name, "jsapi", notification.confirmation, now=now)
    session.commit()
    return payment


def _remember_nonce(session: Session, provider: str, nonce: str, now: datetime) -> None:
    session.execute(delete(SeenNotifyNonce).where(SeenNotifyNonce.seen_at < now - NONCE_MEMORY))
    replayed = DomainError(
        "replayed_notification", "This notification was already received", "重复的通知（重放）", status_code=409
    )
    seen = select(SeenNotifyNonce.id).where(SeenNotifyNonce.provider == provider, SeenNotifyNonce.nonce == nonce)
    if session.scalar(seen) is not None:
        raise replayed
    session.add(SeenNotifyNonce(provider=provider, nonce=nonce, seen_at=now))
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise replayed from exc


def settle(
    session: Session, settings: Settings, provider: str, method: str, confirmation: Confirmation, *, now: datetime
) -> Payment:
    """Apply a provider's confirmation once: pay the order, or record late money to refund. The caller commits."""
    order = session.scalar(
        select(Order)
        .where(Order.number == confirmation.order_number)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if order is None:
        raise not_found("Order", "订单", confirmation.order_number)
    # Looked up under the order's lock, so a concurrent retry of the same transaction waits and finds it here.
    known = session.scalar(
        select(Payment).where(Payment.provider == provider, Payment.provider_ref == confirmation.provider_ref)
    )
    if known is not None:
        return known
    if confirmation.amount_fen != order.total_fen:
        raise DomainError(
            "amount_mismatch",
            f"Paid {confirmation.amount_fen} fen for order {order.number} of {order.total_fen} fen",
            f"支付金额 {confirmation.amount_fen} 分与订单 {order.number} 金额 {order.total_fen} 分不符",
            expected_fen=order.total_fen,
        )
    payment = _pending(session, order, provider) or Payment(order_id=order.id, provider=provider, created_at=now)
    payment.method = method
    payment.amount_fen = confirmation.amount_fen
    payment.provider_ref = confirmation.provider_ref
    payment.paid_at = confirmation.paid_at
    payment.recorded_by = provider
    # A pending order past its expiry time still holds its stock, so its money is accepted.
    on_time = order.status == OrderStatus.PENDING.value
    payment.status = (PaymentStatus.SUCCEEDED if on_time else PaymentStatus.LATE).value
    session.add(payment)
    try:
        session.flush()
    except IntegrityError as exc:  # the same transaction or another payment committed meanwhile (SQLite)
        session.rollback()
        raise Conflict(
            "notification_conflict", "Another payment for this order is being recorded", "该订单正在记录另一笔支付"
        ) from exc
    problem = _fulfil(session, settings, order, actor=provider, now=now) if on_time else None
    if on_time and problem is None:
        record(session, provider, "payment.succeeded", "payment", payment.id, _detail(payment))
    elif problem is not None:
        payment.status = PaymentStatus.LATE.value
        cancel_unfulfillable(session, order, provider, problem.code)
        detail = {**_detail(payment), "reason": problem.code, "needs_refund": True}
        record(session, provider, "payment.unfulfilled", "payment", payment.id, detail)
    else:
        detail = {**_detail(payment), "order_status": order.status, "needs_refund": True}
        record(session, provider, "payment.late", "payment", payment.id, detail)
    if payment.status == PaymentStatus.LATE.value and provider == "wechat":
        from cloud.refunds.payout import refund_late_payment  # refunds build on payments: imported late

        refund_late_payment(session, payment, order, now=now)  # sent back by the refund sweep
    metrics.payment(session, provider, payment.status)
    return payment


def _fulfil(session: Session, settings: Settings, order: Order, *, actor: str, now: datetime) -> DomainError | None:
    """Issue the paid order in a savepoint; None when done, or why it cannot be (nothing of it is kept).

    Only a refusal made on purpose makes an order unfulfillable: a DomainError below 500 (e.g. the
    tickets' `NotIssuable`, code `issue_failed`) or a value the database cannot store. Any other
    exception is a fault: it is logged and raised as 503 `fulfilment_failed`, the caller's transaction
    is rolled back (no payment recorded, the order still pending) and WeChat Pay retries.
    """
    try:
        with session.begin_nested():
            fulfilment.on_paid(session, settings, order, actor=actor, now=now)
    except DomainError as exc:
        if exc.status_code >= 500:
            raise  # busy, not impossible: the provider or cashier tries again
        return exc
    except DBAPIError as exc:
        if isinstance(exc, DataError):  # a value the database cannot store: retrying will not help
            return DomainError("issue_failed", "The tickets could not be stored", "门票无法保存")
        # A lock timeout, a lost connection, a concurrent writer: the provider or cashier tries again.
        raise DomainError("fulfilment_busy", "Issuing is busy; try again", "出票繁忙，请重试", status_code=503) from exc
    except Exception as exc:
        # A fault (a bug in a deploy, ...), not a refusal: nothing is recorded and the provider or
        # cashier tries again once it is fixed, instead of every payment turning into a refund.
        log.exception("order %s was paid but issuing its tickets failed", order.number)
        raise DomainError(
            "fulfilment_failed", "Issuing failed; try again later", "出票失败，请稍后重试", status_code=503
        ) from exc
    return None


def _pending(session: Session, order: Order, provider: str) -> Payment | None:
    return session.scalar(
        select(Payment)
        .where(
            Payment.order_id == order.id,
            Payment.provider == provider,
            Payment.status == PaymentStatus.PENDING.value,
        )
        .order_by(Payment.id)
        .limit(1)
    )


def _detail(payment: Payment) -> dict[str, object]:
    return {
        "order_id": payment.order_id,
        "provider": payment.provider,
        "method": payment.method,
        "amount_fen": payment.amount_fen,
        "provider_ref": payment.provider_ref,
    }


def list_payments(session: Session, order_id: int) -> list[Payment]:
    get_order(session, order_id)
    return list(session.scalars(select(Payment).where(Payment.order_id == order_id).order_by(Payment.id)))
