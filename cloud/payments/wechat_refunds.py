"""WeChat Pay APIv3 domestic refunds: the signed refund request, the query, and the refund notification.

Signing, the platform's signature check and the AES-256-GCM decryption are the payment module's
(`cloud.payments.wechat`); this module only knows the refund API's paths, fields and error codes.
A refund is keyed by our `out_refund_no`: WeChat refunds a number once however often it is requested,
so every retry sends the same number and the same amount.

How an error is handled (WeChat's error-code page; `again` = send the same request later):
SYSTEM_ERROR / 5xx / 202 / no answer -> again; FREQUENCY_LIMITED / RATELIMIT (429) -> query first (the
refund may have been accepted); anything else (NOT_ENOUGH, USER_ACCOUNT_ABNORMAL, PARAM_ERROR, SIGN_ERROR,
an answer that fails verification ...) -> a failure a person must look at.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from cloud.errors import DomainError
from cloud.payments.wechat import (
    MAX_NOTIFY_BYTES,
    SignedHeaders,
    WechatPay,
    _aware,
    _decrypt,
    _Envelope,
    _rejected,
)
from models.api import API_PREFIX

REFUNDS_PATH = "/v3/refund/domestic/refunds"
REFUND_NOTIFY_PATH = f"{API_PREFIX}/refunds/wechat/notify"
REFUND_EVENTS = ("REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED")

Next = Literal["again", "query", "never"]


class WechatRefundStatus(StrEnum):
    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    CLOSED = "CLOSED"  # failed, final
    ABNORMAL = "ABNORMAL"  # the payer's card or account cannot receive it: handled by hand on the merchant platform


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """What one refund asks WeChat for; the same values on every retry."""

    out_refund_no: str
    transaction_id: str
    refund_fen: int
    total_fen: int
    reason: str


@dataclass(frozen=True, slots=True)
class RefundState:
    """WeChat's word on one refund: from the request's answer, the query or a notification."""

    out_refund_no: str
    refund_id: str
    status: WechatRefundStatus
    refund_fen: int
    success_time: datetime | None = None


class RefundCallFailed(Exception):
    """A refund request or query that did not give a state; `next` says what to do about it."""

    def __init__(self, code: str, message: str, next: Next) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.next = code, message, next


class _RefundAmount(BaseModel):
    refund: int
    total: int | None = None


class _Refund(BaseModel):
    """The `Refund` of the request's and the query's answers."""

    refund_id: str
    out_refund_no: str
    status: WechatRefundStatus
    success_time: datetime | None = None
    amount: _RefundAmount


class _RefundResource(BaseModel):
    """The decrypted resource of a refund notification."""

    mchid: str
    out_refund_no: str
    refund_id: str
    refund_status: WechatRefundStatus
    success_time: datetime | None = None
    amount: _RefundAmount


@dataclass(frozen=True, slots=True)
class RefundNotice:
    nonce: str
    state: RefundState


class WechatRefunds:
    """The refund half of WeChat Pay, on the same merchant keys and platform certificates as payments."""

    def __init__(
        self, wechat: WechatPay, *, transport: httpx.BaseTransport | None = None, timeout_s: float = 10.0
    ) -> None:
        self.wechat = wechat
        self._transport = transport
        self._timeout_s = timeout_s

    def notify_url(self) -> str:
        """Refund notifications go to this service at the host of the payment notification URL."""
        return str(httpx.URL(self.wechat.config.notify_url).join(REFUND_NOTIFY_PATH))

    def request(self, refund: RefundRequest, *, now: datetime) -> RefundState:
        """Apply for the refund (idempotent by `out_refund_no`); raises RefundCallFailed."""
        body = {
            "transaction_id": refund.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "reason": refund.reason[:80],
            "notify_url": self.notify_url(),
            "amount": {"refund": refund.refund_fen, "total": refund.total_fen, "currency": "CNY"},
        }
        return self._call("POST", REFUNDS_PATH, body, now=now)

    def query(self, out_refund_no: str, *, now: datetime) -> RefundState:
        """The refund's current state; RefundCallFailed with code RESOURCE_NOT_EXISTS if WeChat has none."""
        return self._call("GET", f"{REFUNDS_PATH}/{quote(out_refund_no, safe='')}", None, now=now)

    def _call(self, method: str, path: str, payload: Mapping[str, object] | None, *, now: datetime) -> RefundState:
        try:
            cfg = self.wechat.config
        except DomainError as exc:  # not configured (yet): nothing was sent
            raise RefundCallFailed(exc.code, exc.en, "again") from exc
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Accept": "application/json", "User-Agent": "starfish-gate/1"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        with httpx.Client(base_url=cfg.base_url, transport=self._transport, timeout=self._timeout_s) as http:
            request = http.build_request(method, path, content=body or None, headers=headers)
            request.headers["Authorization"] = self.wechat.authorization(
                method, request.url.raw_path.decode(), body, timestamp=int(now.timestamp()), nonce=secrets.token_hex(16)
            )
            try:
                response = http.send(request)
            except httpx.HTTPError as exc:
                raise RefundCallFailed("unreachable", f"WeChat Pay did not answer: {exc!r}", "again") from exc
        if response.status_code != 200:
            raise _failure(response)
        try:
            self.wechat.verify_signed(SignedHeaders.of(response.headers), response.content, now=now)
            refund = _Refund.model_validate_json(response.content)
        except DomainError as exc:
            raise RefundCallFailed("bad_response", f"the answer failed verification: {exc.en}", "never") from exc
        except ValidationError as exc:
            raise RefundCallFailed("bad_response", "the answer is not a refund", "never") from exc
        return RefundState(
            out_refund_no=refund.out_refund_no,
            refund_id=refund.refund_id,
            status=refund.status,
            refund_fen=refund.amount.refund,
            success_time=_aware(refund.success_time, cfg.timezone),
        )

    def verify_notification(self, headers: SignedHeaders, body: bytes, *, now: datetime) -> RefundNotice:
        """Verify and decrypt a refund notification exactly as a payment one; raises a DomainError otherwise."""
        cfg = self.wechat.config
        if len(body) > MAX_NOTIFY_BYTES:
            raise _rejected("bad_notification", "The notification is too large", "通知报文过大", 413)
        nonce = self.wechat.verify_signed(headers, body, now=now)
        try:
            envelope = _Envelope.model_validate_json(body)
            resource = _RefundResource.model_validate_json(_decrypt(cfg.api_v3_key, envelope.resource))
        except ValidationError as exc:
            raise _rejected(
                "bad_notification", "The refund notification is malformed", "退款通知格式错误", 400
            ) from exc
        if resource.mchid != cfg.mchid:
            raise _rejected("wrong_merchant", "The notification is for another merchant", "通知不属于本商户", 400)
        if envelope.event_type not in REFUND_EVENTS or envelope.event_type != f"REFUND.{resource.refund_status}":
            raise _rejected("bad_notification", f"Unexpected event {envelope.event_type}", "未知的退款通知类型", 400)
        state = RefundState(
            out_refund_no=resource.out_refund_no,
            refund_id=resource.refund_id,
            status=resource.refund_status,
            refund_fen=resource.amount.refund,
            success_time=_aware(resource.success_time, cfg.timezone),
        )
        return RefundNotice(nonce=nonce, state=state)


def _failure(response: httpx.Response) -> RefundCallFailed:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    code = str(answer.get("code", "")) if isinstance(answer, dict) else ""
    message = str(answer.get("message", "")) if isinstance(answer, dict) else ""
    status = response.status_code
    code = code or f"HTTP_{status}"
    message = message or response.reason_phrase
    if status == 202 or status >= 500 or code == "SYSTEM_ERROR":
        return RefundCallFailed(code, message, "again")  # keep the number and the parameters, send again
    if status == 429 or code in ("FREQUENCY_LIMITED", "RATELIMIT"):
        return RefundCallFailed(code, message, "query")  # not clearly refused: ask before sending again
    return RefundCallFailed(code, message, "never")
