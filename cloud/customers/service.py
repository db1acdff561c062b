"""Customers: mini-program login by WeChat openid, window accounts by phone, named pass holders."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.customers.models import Customer, Holder
from cloud.customers.wechat import (
    WeChatCodeInvalid,
    WeChatLogin,
    WeChatNotConfigured,
    WeChatUnavailable,
    WeChatUserBlocked,
)
from cloud.db import add_unique
from cloud.deps import Principal, Role
from cloud.errors import Conflict, DomainError, Forbidden, Unauthorized, not_found
from cloud.settings import Settings
from cloud.staff.service import issue_token

MAX_HOLDERS = 20


def token_for(settings: Settings, customer: Customer) -> str:
    # A unique name: actor strings ("customer:<name>") identify the caller in audit and idempotency scopes.
    return issue_token(settings, role=Role.CUSTOMER, subject_id=customer.id, name=f"customer-{customer.id}")


def login_with_wechat(session: Session, wechat: WeChatLogin, code: str) -> tuple[Customer, bool]:
    """Find or create the customer behind a wx.login() code; (customer, created). The session_key is not kept."""
    try:
        openid, _session_key = wechat.code2session(code)
    except WeChatNotConfigured as exc:
        raise DomainError(
            "wechat_not_configured",
            "WeChat login is not configured (STARFISH_WECHAT_APPID / STARFISH_WECHAT_APP_SECRET)",
            "未配置微信登录（STARFISH_WECHAT_APPID / STARFISH_WECHAT_APP_SECRET）",
            status_code=503,
        ) from exc
    except WeChatCodeInvalid as exc:
        raise Unauthorized(
            "wechat_code_invalid",
            "The WeChat login code is invalid or used; log in again",
            "微信登录凭证无效或已使用，请重新登录",
        ) from exc
    except WeChatUserBlocked as exc:
        raise Forbidden("wechat_user_blocked", "WeChat refused this user", "微信拒绝了该用户的登录") from exc
    except WeChatUnavailable as exc:
        raise DomainError(
            "wechat_unavailable",
            "WeChat login is unavailable; try again later",
            "微信登录暂不可用，请稍后再试",
            status_code=503,
        ) from exc
    customer = session.scalar(select(Customer).where(Customer.wechat_openid == openid))
    if customer is not None:
        return customer, False
    customer = Customer(wechat_openid=openid)
    try:
        with session.begin_nested():
            session.add(customer)
    except IntegrityError:
        # The same user logged in twice at once; the other request created the account.
        existing = session.scalar(select(Customer).where(Customer.wechat_openid == openid))
        if existing is None:
            raise
        return existing, False
    session.commit()
    return customer, True


def get_customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise not_found("Customer", "顾客", customer_id)
    return customer


def find_by_phone(session: Session, phone: str) -> list[Customer]:
    return list(session.scalars(select(Customer).where(Customer.phone == phone)))


def _phone_taken(phone: str, customer_id: int | None) -> Conflict:
    details = {"customer_id": customer_id} if customer_id is not None else {}
    return Conflict("phone_taken", f"A customer with phone {phone} exists", f"手机号 {phone} 已注册", **details)


def create_by_phone(session: Session, actor: Principal, phone: str, nickname: str) -> Customer:
    """A window-sales account keyed by phone."""
    existing = session.scalar(select(Customer.id).where(Customer.phone == phone))
    if existing is not None:
        raise _phone_taken(phone, existing)
    customer = Customer(phone=phone, nickname=nickname)
    add_unique(session, customer, _phone_taken(phone, None))
    record(session, actor, "customer.create", "customer", customer.id, {"phone": phone})
    session.commit()
    return customer


def add_holder(session: Session, customer_id: int, name: str, id_number: str) -> Holder:
    """Data minimisation: of the ID number only the last 4 characters are stored, for a visual check.

    The customer's row, locked, makes count-then-insert safe: a concurrent add for the same account
    waits for this one's commit and counts it (PostgreSQL; SQLite's transactions are serialised).
    """
    if session.get(Customer, customer_id, with_for_update=True) is None:
        raise not_found("Customer", "顾客", customer_id)
    count = session.scalar(select(func.count(Holder.id)).where(Holder.customer_id == customer_id)) or 0
    if count >= MAX_HOLDERS:
        raise Conflict(
            "too_many_holders", f"At most {MAX_HOLDERS} holders per account", f"每个账户最多 {MAX_HOLDERS} 位持卡人"
        )
    holder = Holder(customer_id=customer_id, name=name, id_number_last4=id_number[-4:])
    session.add(holder)
    session.commit()
    return holder


def list_holders(session: Session, customer_id: int) -> list[Holder]:
    return list(session.scalars(select(Holder).where(Holder.customer_id == customer_id).order_by(Holder.id)))
