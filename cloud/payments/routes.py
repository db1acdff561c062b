from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse

from cloud.db import utcnow
from cloud.deps import IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, public, require
from cloud.errors import DomainError
from cloud.payments import service
from cloud.payments.schemas import CounterPaymentIn, MiniProgramPayParams, PaymentOut, WechatFail, WechatPrepayOut
from cloud.payments.wechat import MAX_NOTIFY_BYTES, SignedHeaders, WechatPay

log = logging.getLogger("starfish.cloud.payments")
router = APIRouter(tags=["payments"], route_class=TransactionScopedRoute)
Cashier = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER))]
Customer = Annotated[Principal, Depends(require(Role.CUSTOMER))]
Reader = Annotated[Principal, Depends(require(Role.ADMIN, Role.FINANCE, Role.CASHIER))]


def wechat_pay(settings: SettingsDep) -> WechatPay:
    """The WeChat Pay provider; override this dependency to pass another configuration or an httpx transport."""
    return WechatPay(settings)


WechatPayDep = Annotated[WechatPay, Depends(wechat_pay)]


def signed_headers(
    timestamp: Annotated[str | None, Header(alias="Wechatpay-Timestamp")] = None,
    nonce: Annotated[str | None, Header(alias="Wechatpay-Nonce")] = None,
    signature: Annotated[str | None, Header(alias="Wechatpay-Signature")] = None,
    serial: Annotated[str | None, Header(alias="Wechatpay-Serial")] = None,
) -> SignedHeaders:
    return SignedHeaders(timestamp=timestamp, nonce=nonce, signature=signature, serial=serial)


async def raw_body(request: Request) -> bytes:
    """The body exactly as signed, read no further than one byte past the size limit."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_NOTIFY_BYTES:
            break
    return body


@router.post("/orders/{order_id}/payments/counter", status_code=201)
def pay_at_counter(
    order_id: IdPath, body: CounterPaymentIn, session: SessionDep, settings: SettingsDep, actor: Cashier
) -> PaymentOut:
    """Cash or card at the ticket window, for exactly the order total: the order is paid and issued."""
    return PaymentOut.model_validate(service.pay_at_counter(session, settings, actor, order_id, body, now=utcnow()))


@router.post("/orders/{order_id}/payments/wechat", status_code=201)
def start_wechat(
    order_id: IdPath, session: SessionDep, settings: SettingsDep, wechat: WechatPayDep, actor: Customer
) -> WechatPrepayOut:
    """Create the WeChat Pay prepay order for your own order; pass `params` to `wx.requestPayment`."""
    payment, params = service.start_wechat(session, settings, wechat, actor, order_id, now=utcnow())
    return WechatPrepayOut(payment=PaymentOut.model_validate(payment), params=MiniProgramPayParams(**params))


def wechat_notify_route(what: str) -> dict[str, Any]:
    """The route options of a WeChat Pay notification endpoint (payments, refunds): public, its answers, and
    its body described as `what`'s envelope, verified as the exact bytes signed."""
    return {
        "dependencies": [Depends(public)],
        "response_class": Response,
        "responses": {
            200: {"description": "Received; WeChat stops retrying"},
            **{code: {"model": WechatFail, "description": "Refused: nothing changed"} for code in (400, 401, 404, 409)},
            413: {"model": WechatFail, "description": "Refused: larger than any genuine notification"},
            503: {"model": WechatFail, "description": "WeChat Pay is not configured here"},
        },
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "description": f"WeChat Pay's {what} envelope, verified as the exact bytes signed",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }


@router.post("/payments/wechat/notify", **wechat_notify_route("notification"))
def wechat_notify(
    session: SessionDep,
    settings: SettingsDep,
    wechat: WechatPayDep,
    headers: Annotated[SignedHeaders, Depends(signed_headers)],
    body: Annotated[bytes, Depends(raw_body)],
) -> Response:
    """WeChat Pay's payment notification: acted on only when signed by the platform, fresh, new and ours."""
    try:
        service.accept_wechat_notification(session, settings, wechat, headers, body, now=utcnow())
    except DomainError as exc:
        log.warning("refused a WeChat Pay notification: %s %s", exc.code, exc.en)
        fail = WechatFail(message=f"{exc.code}: {exc.en}")
        return JSONResponse(fail.model_dump(), status_code=exc.status_code)
    return Response(status_code=200)


@router.get("/orders/{order_id}/payments")
def list_payments(order_id: IdPath, session: SessionDep, _: Reader) -> list[PaymentOut]:
    return [PaymentOut.model_validate(p) for p in service.list_payments(session, order_id)]
