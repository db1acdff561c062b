"""Money reports: sales by day, channel and payment method; sales by product; refunds; the finance settlement.

What counts as a sale: an order of the site whose payment succeeded (the one per order), on the local day of
`orders.paid_at`. Money taken (`amount_fen`) includes a rental's refundable deposit, shown again as
`deposit_fen`; sales by product count revenue without deposits. A refunded order stays a sale of its day:
its refund is a refund of the refund's day (`refunds.created_at`), never a negative sale.

Channels: 窗口 (`counter`), 小程序 (`online`), and each OTA platform by its code (douyin, meituan, ctrip,
lebingxue). Rentals and lessons have no order items: in sales by product they are one line each, 租赁 and 课程.

The settlement (对账结算) is per local day and per provider and method (counter cash, counter card, WeChat
Pay, each OTA platform): `gross_fen` money received, `refunds_fen` money paid back or owed back (every refund
decided that day, whatever its state: a WeChat refund still processing is owed), `fees_kept_fen` the refund
fees the resort kept (already left out of `refunds_fen`), `net_fen` = gross - refunds. A refund is set against
the payment it pays back (`refunds.payment_id`, a WeChat refund), else the payment that paid the order. A late
payment (WeChat money that arrived for an order that could no longer be paid, `payments.status` late) is not a
sale, but it is money received: it counts in the settlement's gross on the local day of its `paid_at`, under its
own provider and method, and its refund (`refund_late_payment`) nets it to zero there. In the refunds report such
refunds are their own rows, channel `late` (迟到支付退回), never a refund of the order's channel's sales, so the
refunds report's total and the settlement's refunds agree. Providers' own charges (WeChat Pay's rate, an OTA's
commission) are on their statements, not in our data, and are not deducted here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, Select, and_, case, func, literal, literal_column, null, or_, select, union_all
from sqlalchemy.orm import Session

from cloud.orders.models import Order, OrderItem, OrderKind
from cloud.payments.models import Payment, PaymentStatus
from cloud.products.models import Product
from cloud.refunds.models import Refund
from cloud.reports.formats import Column, Report
from cloud.reports.period import Period

CHANNELS = {
    "counter": "窗口",
    "online": "小程序",
    "douyin": "抖音",
    "meituan": "美团",
    "ctrip": "携程",
    "lebingxue": "乐冰雪",
    "ota": "其他OTA",
    "late": "迟到支付退回",
}
METHODS = {"cash": "现金", "card": "银行卡", "jsapi": "微信支付", "ota": "平台代收"}
KINDS = {OrderKind.RENTAL.value: "租赁", OrderKind.LESSON.value: "课程"}
PROVIDERS = {"counter": "窗口", "wechat": "微信支付"}


def channel_key(channel: str, ota: str | None) -> str:
    return (ota or "ota") if channel == "ota" else channel


def _paid(p: Period) -> Select[Any]:
    succeeded = and_(Payment.order_id == Order.id, Payment.status == PaymentStatus.SUCCEEDED.value)
    return (
        select()
        .select_from(Order)
        .join(Payment, succeeded)
        .where(Order.site_id == p.site_id, p.contains(Order.paid_at))
    )


def sales(session: Session, p: Period) -> Report:
    day = p.day(Order.paid_at)
    q = (
        _paid(p)
        .add_columns(
            day,
            Order.channel,
            Order.ota_channel,
            Payment.method,
            func.count(),
            func.sum(Payment.amount_fen),
            func.sum(Order.deposit_fen),
        )
        .group_by(day, Order.channel, Order.ota_channel, Payment.method)
    )
    rows = []
    for d, channel, ota, method, n, amount, deposit in session.execute(q):
        key = channel_key(channel, ota)
        rows.append(
            {
                "day": p.day_of(d),
                "channel": key,
                "channel_name": CHANNELS.get(key, key),
                "method": method,
                "method_name": METHODS.get(method, method),
                "orders": n,
                "amount_fen": int(amount),
                "deposit_fen": int(deposit),
            }
        )
    rows.sort(key=lambda r: (r["day"], r["channel"], r["method"]))
    cols = [
        Column("day", "日期"),
        Column("channel", "渠道代码"),
        Column("channel_name", "渠道"),
        Column("method", "支付方式代码"),
        Column("method_name", "支付方式"),
        Column("orders", "订单数"),
        Column("amount_fen", "收款"),
        Column("deposit_fen", "其中押金"),
    ]
    return Report("sales", "销售报表", p.site_id, p.first, p.last, cols, rows)


def sales_products(session: Session, p: Period) -> Report:
    day = p.day(Order.paid_at)
    tickets = (
        _paid(p)
        .join(OrderItem, OrderItem.order_id == Order.id)
        .join(Product, Product.id == OrderItem.product_id)
        .where(Order.kind == OrderKind.TICKET.value)
        .add_columns(
            day,
            Order.channel,
            Order.ota_channel,
            Order.kind,
            Product.id,
            Product.name,
            func.sum(OrderItem.quantity),
            func.sum(OrderItem.quantity * OrderItem.unit_price_fen),
        )
        .group_by(day, Order.channel, Order.ota_channel, Order.kind, Product.id, Product.name)
    )
    others = (
        _paid(p)
        .where(Order.kind != OrderKind.TICKET.value)
        .add_columns(
            day,
            Order.channel,
            Order.ota_channel,
            Order.kind,
            null(),
            null(),
            func.count(),
            func.sum(Order.total_fen - Order.deposit_fen),
        )
        .group_by(day, Order.channel, Order.ota_channel, Order.kind)
    )
    rows = []
    for q in (tickets, others):
        for d, channel, ota, kind, pid, name, qty, amount in session.execute(q):
            key = channel_key(channel, ota)
            rows.append(
                {
                    "day": p.day_of(d),
                    "product_id": pid,
                    "product": name or KINDS.get(kind, kind),
                    "channel": key,
                    "channel_name": CHANNELS.get(key, key),
                    "quantity": int(qty),
                    "amount_fen": int(amount),
                }
            )
    rows.sort(key=lambda r: (r["day"], r["product_id"] or 0, r["product"], r["channel"]))
    cols = [
        Column("day", "日期"),
        Column("product_id", "产品编号"),
        Column("product", "产品"),
        Column("channel", "渠道代码"),
        Column("channel_name", "渠道"),
        Column("quantity", "数量"),
        Column("amount_fen", "销售额"),
    ]
    note = "租赁、课程按订单计数，金额不含押金 / rentals and lessons count orders, amounts exclude deposits"
    return Report("sales-products", "产品销售报表", p.site_id, p.first, p.last, cols, rows, note)


def refunds(session: Session, p: Period) -> Report:
    day = p.day(Refund.created_at)
    late = Payment.status == PaymentStatus.LATE.value
    channel = case((late, literal("late")), else_=Order.channel)
    ota = case((late, null()), else_=Order.ota_channel)
    q = (
        select(
            day,
            channel,
            ota,
            Refund.status,
            func.count(),
            func.sum(Refund.amount_fen),
            func.sum(Refund.fee_fen),
        )
        .select_from(Refund)
        .join(Order, Order.id == Refund.order_id)
        .outerjoin(Payment, Payment.id == Refund.payment_id)
        .where(Order.site_id == p.site_id, p.contains(Refund.created_at))
        .group_by(day, channel, ota, Refund.status)
    )
    rows = []
    for d, channel, ota, status, n, amount, fee in session.execute(q):
        key = channel_key(channel, ota)
        rows.append(
            {
                "day": p.day_of(d),
                "channel": key,
                "channel_name": CHANNELS.get(key, key),
                "status": status,
                "refunds": n,
                "amount_fen": int(amount),
                "fee_fen": int(fee),
            }
        )
    rows.sort(key=lambda r: (r["day"], r["channel"], r["status"]))
    cols = [
        Column("day", "日期"),
        Column("channel", "渠道代码"),
        Column("channel_name", "渠道"),
        Column("status", "状态"),
        Column("refunds", "退款笔数"),
        Column("amount_fen", "退款金额"),
        Column("fee_fen", "手续费"),
    ]
    return Report("refunds", "退款报表", p.site_id, p.first, p.last, cols, rows)


def settlement(session: Session, p: Period) -> Report:
    zero = literal_column("0", Integer)
    gross = _paid(p).add_columns(
        p.day(Order.paid_at).label("d"),
        Payment.provider.label("provider"),
        Payment.method.label("method"),
        Payment.amount_fen.label("gross"),
        zero.label("back"),
        zero.label("fee"),
    )
    late = (
        select(
            p.day(Payment.paid_at).label("d"),
            Payment.provider,
            Payment.method,
            Payment.amount_fen,
            zero,
            zero,
        )
        .select_from(Payment)
        .join(Order, Order.id == Payment.order_id)
        .where(Order.site_id == p.site_id, Payment.status == PaymentStatus.LATE.value, p.contains(Payment.paid_at))
    )
    paid_with = or_(
        Payment.id == Refund.payment_id,
        and_(
            Refund.payment_id.is_(None),
            Payment.order_id == Order.id,
            Payment.status == PaymentStatus.SUCCEEDED.value,
        ),
    )
    back = (
        select(
            p.day(Refund.created_at).label("d"),
            Payment.provider,
            Payment.method,
            zero,
            Refund.amount_fen,
            Refund.fee_fen,
        )
        .select_from(Refund)
        .join(Order, Order.id == Refund.order_id)
        .join(Payment, paid_with)
        .where(Order.site_id == p.site_id, p.contains(Refund.created_at))
    )
    u = union_all(gross, late, back).subquery()
    q = select(u.c.d, u.c.provider, u.c.method, func.sum(u.c.gross), func.sum(u.c.back), func.sum(u.c.fee)).group_by(
        u.c.d, u.c.provider, u.c.method
    )
    rows = []
    for d, provider, method, g, b, fee in session.execute(q):
        name = PROVIDERS.get(provider) or CHANNELS.get(provider, provider)
        rows.append(
            {
                "day": p.day_of(d),
                "provider": provider,
                "method": method,
                "provider_name": f"{name}·{METHODS.get(method, method)}",
                "gross_fen": int(g),
                "refunds_fen": int(b),
                "fees_kept_fen": int(fee),
                "net_fen": int(g) - int(b),
            }
        )
    rows.sort(key=lambda r: (r["day"], r["provider"], r["method"]))
    cols = [
        Column("day", "日期"),
        Column("provider", "收款方代码"),
        Column("method", "方式代码"),
        Column("provider_name", "收款方"),
        Column("gross_fen", "收款"),
        Column("refunds_fen", "退款"),
        Column("fees_kept_fen", "留存手续费"),
        Column("net_fen", "净额"),
    ]
    note = "净额 = 收款 - 退款；第三方手续费/佣金不在此扣除 / net = gross - refunds; provider charges not deducted"
    return Report("settlement", "财务结算", p.site_id, p.first, p.last, cols, rows, note)


def sales_by_channel(session: Session, p: Period) -> list[tuple[str, int]]:
    """(channel key, money taken) over the period, largest first: the sales chart."""
    q = _paid(p).add_columns(Order.channel, Order.ota_channel, func.sum(Payment.amount_fen))
    q = q.group_by(Order.channel, Order.ota_channel)
    out = [(channel_key(c, o), int(a)) for c, o, a in session.execute(q)]
    return sorted(out, key=lambda x: -x[1])
