"""美团门票 供应商直连 (rhone/mtp): Meituan calls our order endpoints, we issue the voucher codes.

Which parts follow a published document and which are a reasoned guess (research: `docs/ota/douyin-meituan.md` §2):

- Headers `PartnerId`, `Date` (RFC 1123, GMT) and `Authorization` on every call, both directions: published,
  http://open.trip.meituan.com/wiki/notice.html (our copy of the page is cut off before the formula).
- The signature `Authorization: MWS <clientId>:base64(hmac_sha1(client_secret, METHOD + " " + path + "\\n" + Date))`:
  from integrations (SDK), not from the official page. Our test vector (the research's): `POST
  /rhone/mtp/api/order/consume/notice` + `Fri, 17 Feb 2012 23:34:53 GMT` under `secret` gives
  `NfYGN1fwVHewM7s525lAOMHPyvQ=`.
- The plain JSON body `{"partnerId": <int>, "body": {...}}` and the answer envelope `{"code": 200, "describe":
  "success", "partnerId": ..., "body": {...}}`: from integrations (SDK). The newer AES-128-CBC encrypted `body`
  (header `X-Encryption-Status: encrypted`) is left out: such a message is refused as malformed.
- `orderId` (Meituan's order id) and `partnerDealId` (our SKU) in the order body: seen in integrations (SDK).
- GUESS, every other field name (the official schemas need a login): create `quantity`, `unitPriceFen` (fen),
  `visitDate` (YYYY-MM-DD; absent for an undated voucher, which the machinery dates today), `contactName`,
  `contactPhone`; refund `refundId`, `quantity` or `voucherCodes`, `reason`; pay `payTime`. Answer bodies:
  `orderId`, `partnerOrderId`, `orderStatus`, `vouchers[{voucherCode, partnerDealId, visitDate, status,
  usedQuantity}]`; a refund answer `refundId`, `refundResult` APPROVE | REJECT (the value names one integration
  uses), `rejectCode`, `rejectReason`, `vouchers`.
- GUESS, the error codes (none public for 门票直连): the envelope's `code` is HTTP-like, see `_REJECT_CODES` and
  `_FAILURE_CODES`; HTTP status is always 200 (the platform reads the envelope).
- GUESS, the actions: our URLs are free (the wiki says so), so Meituan is configured with
  `{cloud}/api/v1/channels/meituan/notify/{create|pay|refund|query|cancel}` (an `order/` prefix is accepted too).
  create holds the stock (unpaid), pay issues the codes, cancel gives back an unpaid order's stock.
- GUESS, freshness: `Date` is the only timestamp, accepted within the channel's `freshness_s` either way.
- GUESS, resends: the signature covers the method, path and Date but not the body. So the Authorization value
  is the message's nonce: one body per signature. A second, different body under a signature we have seen (a
  body re-serialised or altered by someone who captured the headers, or a second genuine order in the same
  second) is refused with code 503 "resend": nothing changes, and Meituan's resend carries a new Date, so a
  morning rush costs a resend, never an order. The exact same message again (same Authorization, Date and body:
  the fingerprint) gets our first answer.
- Refunds are answered synchronously (APPROVE / REJECT in the answer); the asynchronous
  `order/refund/notice` push (SDK) is not sent.
- The verify (核销) call: `POST {base_url}/rhone/mtp/api/order/consume/notice` MWS-signed, success `code 200`
  (path and envelope from integrations, SDK). GUESS, its body: `orderId`, `partnerOrderId`, `requestId` (our
  idempotency key, the same on every attempt), `usedQuantity` (the order's cumulative used entries), `quantity`,
  `consumeTime` (Asia/Shanghai, "yyyy-MM-dd HH:mm:ss"), `vouchers[{voucherCode, usedTime}]`. GUESS, the retry
  rule: network errors, HTTP 5xx / 429 and envelope codes 5xx are retried (same requestId); envelope 1008 (此券码已被
  验证, the legacy list's "already verified") is done, since the quantity is cumulative a repeat changes nothing;
  any other answer is a permanent refusal (give_up).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, ClassVar

import httpx

from cloud.channels.base import (
    Authentic,
    CallResult,
    CancelOrder,
    ChannelAccount,
    Failure,
    HttpAnswer,
    InboundRequest,
    Intent,
    Malformed,
    OrderLine,
    Outcome,
    PayOrder,
    PlaceOrder,
    QueryOrder,
    RefundOutcome,
    RefundRequest,
    Rejected,
    VerifyCall,
    Voucher,
)

CONSUME_PATH = "/rhone/mtp/api/order/consume/notice"
ALREADY_VERIFIED = 1008  # 此券码已被验证 (legacy error list, SDK)
CHINA = timezone(timedelta(hours=8))
ACTIONS = ("create", "pay", "refund", "query", "cancel")

_REJECT_CODES: dict[str, tuple[int, str]] = {
    "malformed": (400, "请求格式错误"),
    "bad_signature": (401, "签名校验失败"),
    "stale": (401, "请求已过期"),
    "unknown_account": (403, "未知的合作方"),
    "disabled": (403, "渠道未开通"),
    "replay": (503, "请求签名已使用，请更换 Date 后重发"),  # a resend with a new Date gets through
}
_FAILURE_CODES: dict[str, tuple[int, str]] = {
    "invalid": (400, "参数错误"),
    "unknown_sku": (404, "产品不存在"),
    "unknown_order": (404, "订单不存在"),
    "not_on_sale": (410, "产品已下架"),
    "bad_date": (422, "游玩日期不可订"),
    "price_mismatch": (422, "价格不一致"),
    "not_paid": (409, "订单未支付"),
    "sold_out": (409, "库存不足"),
}


def string_to_sign(method: str, path: str, date_header: str) -> str:
    """What MWS signs: the method, the path and the Date header (the body is not signed)."""
    return f"{method.upper()} {path}\n{date_header}"


def mws_signature(secret: str, method: str, path: str, date_header: str) -> str:
    """base64(HMAC-SHA1(client secret, string to sign))."""
    text = string_to_sign(method, path, date_header).encode()
    return base64.b64encode(hmac.new(secret.encode(), text, hashlib.sha1).digest()).decode()


def mws_headers(account: ChannelAccount, method: str, path: str, now: datetime) -> dict[str, str]:
    """The headers of a call to Meituan, signed now."""
    date_header = http_date(now)
    signature = mws_signature(account.secrets["client_secret"], method, path, date_header)
    return {
        "PartnerId": account.config["partner_id"],
        "Date": date_header,
        "Authorization": f"MWS {account.config['client_id']}:{signature}",
        "Content-Type": "application/json; charset=utf-8",
    }


def http_date(moment: datetime) -> str:
    """RFC 1123 in GMT, e.g. `Fri, 17 Feb 2012 23:34:53 GMT`."""
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def _partner_id(account: ChannelAccount) -> int | str:
    raw = account.config.get("partner_id", "")
    return int(raw) if raw.isdigit() else raw


def _ref(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise Malformed(f"body.{name} is missing or not an id")
    return str(value).strip()


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Malformed(f"body.{name} must be a positive integer")
    return value


def _visit_date(value: Any) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise Malformed("body.visitDate must be YYYY-MM-DD") from exc


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Malformed(f"body.{name} must be a string")
    return value.strip() or None


class MeituanAdapter:
    """美团门票直连: MWS-signed JSON both ways, our codes in the pay answer, 核销 by `order/consume/notice`."""

    code: ClassVar[str] = "meituan"

    def authenticate(self, request: InboundRequest, account: ChannelAccount, now: datetime) -> Authentic | Rejected:
        """Partner and client ids, the MWS signature over method + path + Date, Date within the window, JSON body."""
        headers = request.headers
        authorization = headers.get("authorization", "")
        date_header = headers.get("date", "")
        if headers.get("partnerid", "") != account.config.get("partner_id"):
            return Rejected("unknown_account", "PartnerId is not ours")
        scheme, _, credential = authorization.partition(" ")
        client_id, _, signature = credential.partition(":")
        if scheme != "MWS" or not signature or not date_header:
            return Rejected("bad_signature", "Authorization (MWS <clientId>:<signature>) and Date are required")
        if not hmac.compare_digest(client_id.encode(), account.config.get("client_id", "").encode()):
            return Rejected("bad_signature", "unknown clientId")
        expected = mws_signature(account.secrets.get("client_secret", ""), request.method, request.path, date_header)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return Rejected("bad_signature", "the MWS signature does not hold")
        try:
            sent_at = parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            return Rejected("malformed", "Date is not an RFC 1123 date")
        if sent_at.tzinfo is None:
            return Rejected("malformed", "Date has no zone (GMT expected)")
        if abs((now - sent_at).total_seconds()) > account.freshness_s:
            return Rejected("stale", f"Date {date_header} is outside ±{account.freshness_s} s")
        if headers.get("x-encryption-status", "").lower() == "encrypted":
            return Rejected("malformed", "encrypted bodies are not supported: configure plain JSON")
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return Rejected("malformed", "the body is not JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("body"), dict):
            return Rejected("malformed", "the body is not {partnerId, body: {...}}")
        if str(payload.get("partnerId", "")) != account.config.get("partner_id"):
            return Rejected("unknown_account", "body.partnerId differs from the PartnerId header")
        digest = hashlib.sha256(f"{authorization}\n{date_header}\n".encode() + request.body).hexdigest()
        nonce = hashlib.sha256(f"{request.path}\n{authorization}".encode()).hexdigest()
        return Authentic(fingerprint=digest, nonce=nonce, payload=payload)

    def parse(self, message: Authentic, request: InboundRequest) -> Intent:
        """The action from the path (create, pay, refund, query, cancel), its fields from `body`."""
        action = (request.action or request.path.rsplit("/", 1)[-1]).removeprefix("order/")
        body: Mapping[str, Any] = message.payload["body"]
        order_ref = _ref(body.get("orderId"), "orderId")
        if action == "create":
            unit_price = body.get("unitPriceFen")
            if unit_price is not None and (isinstance(unit_price, bool) or not isinstance(unit_price, int)):
                raise Malformed("body.unitPriceFen must be an integer (fen)")
            line = OrderLine(
                sku=_ref(body.get("partnerDealId"), "partnerDealId"),
                quantity=_count(body.get("quantity"), "quantity"),
                unit_price_fen=unit_price,
                visit_date=_visit_date(body.get("visitDate")),
            )
            return PlaceOrder(
                order_ref=order_ref,
                lines=(line,),
                paid=False,
                phone=_text(body.get("contactPhone"), "contactPhone"),
                name=_text(body.get("contactName"), "contactName"),
                extra={"orderId": body["orderId"]},
            )
        if action == "pay":
            pay_time = _text(body.get("payTime"), "payTime")
            return PayOrder(order_ref=order_ref, extra={"payTime": pay_time} if pay_time else {})
        if action == "refund":
            codes = body.get("voucherCodes")
            if codes is not None and (not isinstance(codes, list) or not all(isinstance(c, str) for c in codes)):
                raise Malformed("body.voucherCodes must be a list of codes")
            quantity = body.get("quantity")
            return RefundRequest(
                order_ref=order_ref,
                refund_ref=_ref(body.get("refundId"), "refundId"),
                codes=tuple(codes) if codes else None,
                quantity=None if quantity is None else _count(quantity, "quantity"),
                decided=False,
                reason=_text(body.get("reason"), "reason") or "",
            )
        if action == "query":
            return QueryOrder(order_ref=order_ref)
        if action == "cancel":
            return CancelOrder(order_ref=order_ref)
        raise Malformed(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")

    def answer(self, message: Authentic | None, outcome: Outcome | Rejected, account: ChannelAccount) -> HttpAnswer:
        """`{"code": 200, "describe": "success", "partnerId", "body"}`, or a non-200 code and what went wrong."""
        order_id: Any = None
        if message is not None:
            order_id = message.payload["body"].get("orderId")
        if isinstance(outcome, Rejected):
            code, describe = _REJECT_CODES[outcome.kind]
            return self._envelope(account, code, f"{describe}: {outcome.message}", {})
        if isinstance(outcome, Failure):
            code, describe = _FAILURE_CODES[outcome.code]
            return self._envelope(account, code, f"{describe}: {outcome.message}", {"orderId": order_id})
        vouchers = [_voucher(v) for v in outcome.vouchers]
        if isinstance(outcome, RefundOutcome):
            body: dict[str, Any] = {
                "orderId": order_id if order_id is not None else outcome.order_ref,
                "refundId": outcome.refund_ref,
                "refundResult": "APPROVE" if outcome.approved else "REJECT",
                "vouchers": vouchers,
            }
            if not outcome.approved:
                body |= {"rejectCode": outcome.code, "rejectReason": outcome.message}
            return self._envelope(account, 200, "success", body)
        return self._envelope(
            account,
            200,
            "success",
            {
                "orderId": order_id if order_id is not None else outcome.order_ref,
                "partnerOrderId": outcome.order_number,
                "orderStatus": outcome.status,
                "vouchers": vouchers,
            },
        )

    def _envelope(self, account: ChannelAccount, code: int, describe: str, body: dict[str, Any]) -> HttpAnswer:
        envelope = {"code": code, "describe": describe, "partnerId": _partner_id(account), "body": body}
        return HttpAnswer(200, json.dumps(envelope, ensure_ascii=False).encode())

    def send(self, call: VerifyCall, account: ChannelAccount, http: httpx.Client, now: datetime) -> CallResult:
        """POST order/consume/notice, MWS-signed now, with the call's requestId; judge Meituan's envelope."""
        last_used = max((e.used_at for e in call.entries), default=call.created_at)
        body = {
            "partnerId": _partner_id(account),
            "body": {
                "orderId": call.order_extra.get("orderId", call.order_ref),
                "partnerOrderId": call.order_number,
                "requestId": call.idempotency_key,
                "usedQuantity": call.used_total,
                "quantity": call.quantity_total,
                "consumeTime": _china_time(last_used),
                "vouchers": [{"voucherCode": e.code, "usedTime": _china_time(e.used_at)} for e in call.entries],
            },
        }
        url = account.base_url.rstrip("/") + CONSUME_PATH
        try:
            headers = mws_headers(account, "POST", CONSUME_PATH, now)
            content = json.dumps(body, ensure_ascii=False).encode()
            response = http.post(url, content=content, headers=headers)
        except KeyError as exc:
            return CallResult("retry", f"the channel is missing {exc.args[0]} in its config or secrets")
        except httpx.HTTPError as exc:
            return CallResult("retry", f"network: {type(exc).__name__}: {exc}"[:300])
        return _judge(response)


def _judge(response: httpx.Response) -> CallResult:
    text = response.text[:200]
    if response.status_code >= 500 or response.status_code == 429:
        return CallResult("retry", f"HTTP {response.status_code}: {text}")
    if response.status_code != 200:
        return CallResult("give_up", f"HTTP {response.status_code}: {text}")
    try:
        reply = response.json()
        code = int(reply["code"])
    except (ValueError, KeyError, TypeError):
        return CallResult("retry", f"unreadable reply: {text}")
    describe = str(reply.get("describe", ""))
    detail = f"{code} {describe}"[:300]
    if code == 200:
        body = reply.get("body")
        return CallResult("done", detail, body if isinstance(body, dict) else {})
    if code == ALREADY_VERIFIED:
        return CallResult("done", f"already verified: {detail}"[:300])
    if 500 <= code < 600:
        return CallResult("retry", detail)
    return CallResult("give_up", detail)


def _voucher(v: Voucher) -> dict[str, Any]:
    return {
        "voucherCode": v.code,
        "partnerDealId": v.sku,
        "visitDate": v.visit_date.isoformat(),
        "status": v.state,
        "usedQuantity": v.entries_used,
    }


def _china_time(moment: datetime) -> str:
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")
