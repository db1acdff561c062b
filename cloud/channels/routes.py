"""HTTP: the platforms' notifications (public: the signature is the auth) and the back office's channel API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from cloud.channels import admin, service
from cloud.channels.base import InboundRequest
from cloud.channels.schemas import SKU, CallOut, CallState, ChannelIn, ChannelOut, SkuIn, SkuOut
from cloud.db import utcnow
from cloud.deps import IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, public, require
from cloud.errors import DomainError

router = APIRouter(tags=["channels"], route_class=TransactionScopedRoute)
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Finance = Annotated[Principal, Depends(require(Role.ADMIN, Role.FINANCE))]
Code = Annotated[str, Path(max_length=16, pattern=r"^[a-z]+$")]
Sku = Annotated[str, Path(pattern=SKU)]
Action = Annotated[str, Path(max_length=32, pattern=r"^[A-Za-z0-9_.\-]+$")]
MAX_NOTIFY_BYTES = 256 * 1024


async def raw_body(request: Request) -> bytes:
    """The body exactly as signed; refused (413) once it is larger than any genuine notification."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_NOTIFY_BYTES:
            raise DomainError("body_too_large", "The request body is too large", "请求体过大", status_code=413)
    return body


Body = Annotated[bytes, Depends(raw_body)]
_NOTIFY = {
    "dependencies": [Depends(public)],
    "response_class": Response,
    "responses": {200: {"description": "The platform's own answer form (JSON), success or refusal"}},
    "openapi_extra": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    },
}


def _inbound(request: Request, action: str, body: bytes) -> InboundRequest:
    return InboundRequest(
        action=action,
        method=request.method,
        path=request.url.path,
        query=dict(request.query_params),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
    )


def _reply(session: SessionDep, settings: SettingsDep, code: str, inbound: InboundRequest) -> Response:
    answer = service.handle(session, settings, code, inbound, utcnow())
    return Response(content=answer.body, status_code=answer.status, headers=dict(answer.headers))


@router.post("/channels/{code}/notify", **_NOTIFY)  # type: ignore[arg-type]
def notify(code: Code, request: Request, body: Body, session: SessionDep, settings: SettingsDep) -> Response:
    """A platform's signed notification (order, payment, cancellation, refund, query), answered in its form."""
    return _reply(session, settings, code, _inbound(request, "", body))


@router.post("/channels/{code}/notify/{action}", **_NOTIFY)  # type: ignore[arg-type]
def notify_action(
    code: Code, action: Action, request: Request, body: Body, session: SessionDep, settings: SettingsDep
) -> Response:
    """As `/notify`, for platforms that post each kind of message to its own path."""
    return _reply(session, settings, code, _inbound(request, action, body))


@router.get("/channels")
def list_channels(session: SessionDep, settings: SettingsDep, _: Admin) -> list[ChannelOut]:
    """Every channel, configured or not: its configuration, whether its secrets are present, its SKUs."""
    return admin.channels(session, settings)


@router.put("/channels/{code}")
def configure_channel(
    code: Code, body: ChannelIn, session: SessionDep, settings: SettingsDep, actor: Admin
) -> ChannelOut:
    """Configure a channel (its secrets come from the cloud's settings, never from here)."""
    return admin.configure(session, settings, actor, code, body, utcnow())


@router.get("/channels/calls")
def list_calls(
    session: SessionDep,
    _: Finance,
    state: CallState | None = None,
    channel: Annotated[str | None, Query(max_length=16, pattern=r"^[a-z]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[CallOut]:
    """Verify calls to the platforms, newest first; `state=failing` lists those that need a person."""
    return [CallOut.model_validate(c) for c in admin.list_calls(session, state, channel, limit)]


@router.post("/channels/calls/{call_id}/retry")
def retry_call(call_id: IdPath, session: SessionDep, actor: Finance) -> CallOut:
    """Send a failing verify call again (same idempotency key: the platform sees a resend)."""
    return CallOut.model_validate(admin.retry_call(session, actor, call_id, utcnow()))


@router.get("/channels/{code}/skus/{sku}")
def get_sku(code: Code, sku: Sku, session: SessionDep, _: Admin) -> SkuOut:
    return admin.get_sku(session, code, sku)


@router.put("/channels/{code}/skus/{sku}")
def put_sku(code: Code, sku: Sku, body: SkuIn, session: SessionDep, actor: Admin) -> SkuOut:
    """Sell a platform SKU as one of our products, at the channel's price (null: the product's)."""
    return admin.put_sku(session, actor, code, sku, body)


@router.delete("/channels/{code}/skus/{sku}", status_code=204)
def delete_sku(code: Code, sku: Sku, session: SessionDep, actor: Admin) -> Response:
    admin.delete_sku(session, actor, code, sku)
    return Response(status_code=204)
