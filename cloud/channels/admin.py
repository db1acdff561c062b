"""The back office's side of the channels: configure a channel and its SKUs, watch and retry the verify calls.

Decisions: a channel is enabled only once the cloud holds its secrets (409 `channel_secrets_missing`
otherwise: enabling it would only refuse every notification); a SKU is mapped only on a channel already
configured (409 `channel_not_configured`), to one of our products; removing a mapping does not touch the
orders already made through it. A retried call starts its attempts afresh.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.channels import calls, registry
from cloud.channels.base import CHANNEL_CODES
from cloud.channels.models import Channel, ChannelCall, ChannelSku
from cloud.channels.schemas import CallState, ChannelIn, ChannelOut, SkuIn, SkuOut
from cloud.deps import Principal
from cloud.errors import Conflict, DomainError, not_found
from cloud.products.service import get_product
from cloud.settings import Settings


def _known(code: str) -> str:
    if code not in CHANNEL_CODES:
        raise not_found("Channel", "渠道", code)
    return code


def channels(session: Session, settings: Settings) -> list[ChannelOut]:
    """Every channel the cloud speaks, configured or not, with its SKU mapping."""
    rows = {c.code: c for c in session.scalars(select(Channel))}
    skus: dict[str, list[SkuOut]] = {}
    for sku in session.scalars(select(ChannelSku).order_by(ChannelSku.channel, ChannelSku.sku)):
        skus.setdefault(sku.channel, []).append(SkuOut.model_validate(sku))
    return [_out(settings, code, rows.get(code), skus.get(code, [])) for code in CHANNEL_CODES]


def _out(settings: Settings, code: str, row: Channel | None, skus: list[SkuOut]) -> ChannelOut:
    return ChannelOut(
        code=code,
        configured=row is not None,
        enabled=bool(row and row.enabled),
        base_url=row.base_url if row else "",
        freshness_s=row.freshness_s if row else 600,
        config={str(k): str(v) for k, v in (row.config if row else {}).items()},
        secrets_present=registry.secrets_of(settings, code) is not None,
        updated_by=row.updated_by if row else None,
        updated_at=row.updated_at if row else None,
        skus=skus,
    )


def configure(
    session: Session, settings: Settings, actor: Principal, code: str, body: ChannelIn, now: datetime
) -> ChannelOut:
    _known(code)
    if body.enabled and registry.secrets_of(settings, code) is None:
        names = ", ".join(registry.REQUIRED_SECRETS.get(code, ()))
        raise Conflict(
            "channel_secrets_missing",
            f"The cloud has no secrets for {code} ({names}): set STARFISH_CHANNEL_SECRETS_FILE first",
            f"云端未配置 {code} 的密钥（{names}），请先设置 STARFISH_CHANNEL_SECRETS_FILE",
        )
    if (problem := registry.base_url_problem(settings, code, body.base_url)) is not None:
        raise DomainError("base_url_not_allowed", problem, f"{code} 的接口地址不被允许：{problem}", status_code=422)
    row = session.get(Channel, code) or Channel(code=code)
    row.enabled, row.base_url, row.freshness_s, row.config = body.enabled, body.base_url, body.freshness_s, body.config
    row.updated_by, row.updated_at = actor.actor, now
    session.add(row)
    record(session, actor, "channel.configure", "channel", code, body.model_dump())  # never a secret: none here
    session.commit()
    return next(c for c in channels(session, settings) if c.code == code)


def _sku(session: Session, code: str, sku: str) -> ChannelSku | None:
    return session.scalar(select(ChannelSku).where(ChannelSku.channel == _known(code), ChannelSku.sku == sku))


def get_sku(session: Session, code: str, sku: str) -> SkuOut:
    row = _sku(session, code, sku)
    if row is None:
        raise not_found("SKU", "渠道产品", f"{code}/{sku}")
    return SkuOut.model_validate(row)


def put_sku(session: Session, actor: Principal, code: str, sku: str, body: SkuIn) -> SkuOut:
    if session.get(Channel, _known(code)) is None:
        raise Conflict(
            "channel_not_configured",
            f"Configure channel {code} before mapping its SKUs",
            f"请先配置渠道 {code}，再映射其产品",
        )
    get_product(session, body.product_id)
    row = _sku(session, code, sku) or ChannelSku(channel=code, sku=sku)
    row.product_id, row.price_fen, row.active = body.product_id, body.price_fen, body.active
    session.add(row)
    session.flush()
    record(session, actor, "channel.sku", "channel_sku", row.id, {"channel": code, "sku": sku, **body.model_dump()})
    session.commit()
    return SkuOut.model_validate(row)


def delete_sku(session: Session, actor: Principal, code: str, sku: str) -> None:
    row = _sku(session, code, sku)
    if row is None:
        raise not_found("SKU", "渠道产品", f"{code}/{sku}")
    record(session, actor, "channel.sku_delete", "channel_sku", row.id, {"channel": code, "sku": sku})
    session.delete(row)
    session.commit()


def list_calls(session: Session, state: CallState | None, channel: str | None, limit: int) -> list[ChannelCall]:
    q = select(ChannelCall).order_by(ChannelCall.id.desc()).limit(limit)
    if state:
        q = q.where(ChannelCall.state == state)
    if channel:
        q = q.where(ChannelCall.channel == channel)
    return list(session.scalars(q))


def retry_call(session: Session, actor: Principal, call_id: int, now: datetime) -> ChannelCall:
    call = session.get(ChannelCall, call_id, with_for_update=True)
    if call is None:
        raise not_found("Call", "回调", call_id)
    if call.state != "failing":
        raise Conflict(
            "call_not_failing",
            f"Call {call_id} is {call.state}; only a failing call is retried",
            f"回调 {call_id} 状态为 {call.state}，只有失败的回调可以重试",
        )
    detail = {"channel": call.channel, "attempts": call.attempts, "last_error": call.last_error}
    calls.retry(session, call, now)
    record(session, actor, "channel.call_retry", "channel_call", call.id, detail)
    session.commit()
    return call
