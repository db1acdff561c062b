"""Money back on an order that has no tickets: a rental's deposit less its charges, a cancelled lesson.

The same refund as a ticket's, without the tickets: a `Refund` row with no items, settled the way the order's
money was taken (cash back at the window or desk when the counter took it — an online order paid at the desk too;
WeChat Pay through `cloud/refunds/payout.py` when WeChat took it, sent by the refund sweep after this commit), the
refunded share of the order's points taken back, one audit row. Never more than what was paid: every refund of the
order together stays within its total (a late payment's own refund apart: that is other money).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal
from cloud.errors import Conflict
from cloud.orders.models import Order
from cloud.payments.models import Payment, PaymentStatus
from cloud.points.service import reverse_for_refund
from cloud.refunds.models import Refund, RefundStatus
from cloud.refunds.payout import WECHAT, attach_wechat
from cloud.refunds.service import check_paid
from cloud.settings import Settings


def refund_money(
    session: Session,
    settings: Settings,
    actor: Principal | str,
    order: Order,
    amount_fen: int,
    *,
    points_fen: int,
    reason: str,
    now: datetime,
) -> Refund:
    """Refund `amount_fen` of `order` (0 is allowed: recorded, nothing paid). `points_fen` is the part of it that
    earned points (a deposit earned none): that share of the points goes back. The caller commits.

    Locks the order's row, so two refunds of one order take turns and together never exceed its total.
    """
    check_paid(order)
    session.execute(select(Order.id).where(Order.id == order.id).with_for_update())
    # A late payment's own refund gives back other money than the order's: it does not count against its total.
    late = select(Payment.id).where(Payment.order_id == order.id, Payment.status == PaymentStatus.LATE.value)
    refunded = session.scalar(
        select(func.coalesce(func.sum(Refund.amount_fen), 0)).where(
            Refund.order_id == order.id, or_(Refund.payment_id.is_(None), Refund.payment_id.not_in(late))
        )
    )
    if amount_fen < 0 or int(refunded or 0) + amount_fen > order.total_fen:
        raise Conflict(
            "refund_exceeds_paid",
            f"Order {order.number} was paid {order.total_fen} fen; {refunded} fen of it is refunded already",
            f"订单 {order.number} 实付 {order.total_fen} 分，已退 {refunded} 分，不能再退 {amount_fen} 分",
            paid_fen=order.total_fen,
            refunded_fen=int(refunded or 0),
        )
    # Paid back the way the money came: WeChat Pay's through it, the counter's (an online order paid at the desk
    # too) in cash there and then.
    taken_by = session.scalar(
        select(Payment.provider).where(Payment.order_id == order.id, Payment.status == PaymentStatus.SUCCEEDED.value)
    )
    counter = taken_by == "counter"
    refund = Refund(
        order_id=order.id,
        amount_fen=amount_fen,
        fee_fen=0,
        status=(RefundStatus.SUCCEEDED if counter or amount_fen == 0 else RefundStatus.PENDING_PROVIDER).value,
        reason=reason,
        created_by=actor if isinstance(actor, str) else actor.actor,
        created_at=now,
        settled_at=now if counter or amount_fen == 0 else None,
        items=[],
    )
    session.add(refund)
    if taken_by == WECHAT and amount_fen > 0:
        attach_wechat(session, refund, order, now=now)
    session.flush()
    if order.customer_id is not None and points_fen > 0:
        reverse_for_refund(session, settings, order, refund_amount_fen=points_fen, refund_id=refund.id, now=now)
    detail = {"refund_id": refund.id, "amount_fen": amount_fen, "status": refund.status, "reason": reason}
    record(session, actor, "refund.create", "order", order.id, detail)
    return refund
