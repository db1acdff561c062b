from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cloud.customers import service
from cloud.customers.schemas import (
    PHONE,
    CustomerIn,
    CustomerOut,
    HolderIn,
    HolderOut,
    LoginOut,
    WeChatLoginIn,
)
from cloud.customers.wechat import HttpWeChatLogin, WeChatLogin
from cloud.deps import Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, public, require

router = APIRouter(tags=["customers"], route_class=TransactionScopedRoute)
Me = Annotated[Principal, Depends(require(Role.CUSTOMER))]
Window = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER))]


def get_wechat_login(settings: SettingsDep) -> WeChatLogin:
    """WeChat's real code2Session API; replace with `app.dependency_overrides[get_wechat_login]` for a fake."""
    return HttpWeChatLogin(
        base_url=settings.wechat_login_url,
        appid=settings.wechat_appid,
        secret=settings.wechat_app_secret.get_secret_value(),
    )


WeChatLoginDep = Annotated[WeChatLogin, Depends(get_wechat_login)]


@router.post("/customers/login/wechat", dependencies=[Depends(public)])
def login_wechat(body: WeChatLoginIn, session: SessionDep, settings: SettingsDep, wechat: WeChatLoginDep) -> LoginOut:
    """Mini-program login: a wx.login() code in, a customer JWT out (the account is created on first login)."""
    customer, created = service.login_with_wechat(session, wechat, body.code)
    return LoginOut(
        access_token=service.token_for(settings, customer), created=created, customer=CustomerOut.of(customer)
    )


@router.get("/customers/me")
def me(session: SessionDep, who: Me) -> CustomerOut:
    return CustomerOut.of(service.get_customer(session, who.subject_id))


@router.get("/customers")
def find_customers(session: SessionDep, _: Window, phone: Annotated[str, Query(pattern=PHONE)]) -> list[CustomerOut]:
    """Staff lookup by phone: the one matching customer, or an empty list."""
    return [CustomerOut.of(c) for c in service.find_by_phone(session, phone)]


@router.post("/customers", status_code=201)
def create_customer(body: CustomerIn, session: SessionDep, actor: Window) -> CustomerOut:
    """Create an account by phone for a window sale; 409 `phone_taken` names the existing one."""
    return CustomerOut.of(service.create_by_phone(session, actor, body.phone, body.nickname))


@router.post("/customers/me/holders", status_code=201)
def add_holder(body: HolderIn, session: SessionDep, who: Me) -> HolderOut:
    """Register a named season-pass holder; only the last 4 characters of the ID number are stored."""
    return HolderOut.model_validate(service.add_holder(session, who.subject_id, body.name, body.id_number))


@router.get("/customers/me/holders")
def list_holders(session: SessionDep, who: Me) -> list[HolderOut]:
    return [HolderOut.model_validate(h) for h in service.list_holders(session, who.subject_id)]
