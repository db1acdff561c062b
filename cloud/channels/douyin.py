"""抖音 生活服务 (Douyin life services), the 三方码 model: Douyin sells, WE issue the codes.

Research and sources: `docs/ota/douyin-meituan.md` §1. Doc prefix below:
``D = https://developer.open-douyin.com/docs/resource/zh-CN/local-life``.

Inbound SPI (Douyin -> us, ``POST /api/v1/channels/douyin/notify/{action}``), one URL per SPI scene as the console
configures them (``D/connect/spi``):
- ``issue``: 发券 (``D/develop/OpenAPI/general-capabilities/tripartite.code/create``) -> `PlaceOrder(paid=True)`,
  answered ``result=1`` with ``certificates[{certificate_id, code}]``, one per ticket. [DOC] fields ``order_id``,
  ``count``, ``sku{sku_id, third_sku_id}``, ``amount{pay_amount}`` (fen), ``start_time``/``expire_time``,
  ``certificate_info_list[{certificate_id}]`` (scenic V2). Douyin's certificate ids are kept in the order's extra
  (``certificate_ids``), one per ticket in ticket order; when Douyin sends none, the certificate id is ours: the
  ticket's id [GUESS]. SKU mapping: ``sku.third_sku_id`` (the id the merchant gave the SKU on our side) when set,
  else Douyin's ``sku.sku_id`` [GUESS]. 团购 vouchers are undated, valid ``start_time`` .. ``expire_time`` (kept in
  extra); dated tickets are Douyin's 日历票 API, not this one. So the line's visit date is the voucher's first valid
  day (China time) when that is after the day Douyin sent the order (a voucher sold ahead of the season), else
  None (the machinery's "today"); the mapped product's ``valid_days`` should match the voucher's validity [GUESS].
  A failure we cannot undo (unknown SKU, sold out, ...) is answered ``result=2`` (failed: Douyin refunds at once,
  [DOC]); an order not yet issued is answered ``error_code=100`` so Douyin resends [GUESS from a notify SPI's doc].
- ``refund_apply``: 退款申请 (``.../tripartite.code/refund.apply``) -> `RefundRequest(decided=False)`, answered
  synchronously ``error_code=0, result`` = 1 allow / 2 reject (+ ``reason``). [DOC] the three outcomes pending /
  allow / reject and "anything else counts as pending"; [GUESS] the numbers (0 pending, 1 allow, 2 reject: the
  audit callback's published 1 = allow, 2 = reject, ``.../tripartite.code/refund.audit``) and the request's list
  name (``certificates``, also read as ``certificate_list``) holding ``{certificate_id, code}``; idempotency key
  ``after_sale_id`` [DOC: refunds are idempotent per certificate; one after-sale id covers them]. A refund of an
  order we never made is answered pending (``error_code=0`` without ``result``: [DOC] "any other answer counts as
  pending"; the doc asks for 待审核 then), so Douyin approves it itself after 24 h: the buyer gets the money.
- ``refund_notice``: 退款信息同步 (``.../tripartite.code/refund.notice``) -> `RefundRequest(decided=True)`:
  ``order_id, after_sale_id, notice_list[{certificate_id, code}]`` [DOC]; acknowledged ``error_code=0`` whatever
  we made of it (Douyin already refunded; a resend would not change that).
- ``status_query``: 订单状态查询 -> `QueryOrder`; the answer's fields are not in our copy of the doc [GUESS]:
  ``order_id, third_order_id, status, certificates[{certificate_id, code, status}]``.

Signature [DOC ``D/connect/spi-signature-rules``]: ``x-life-sign = hex(sha256(client_secret & sorted k=v of the URL
query except sign & http_body=<raw body>))``, lower-case hex [SDK]; the raw bytes are signed, so a re-serialised
body fails. The old URL ``sign`` (md5 of the same text) is not checked. ``client_key`` in the query must be ours
when the account's config names one. Freshness [GUESS, our policy]: Douyin says not to use ``timestamp`` for
anything but the signature and publishes no window; we refuse |now - timestamp (ms)| > ``account.freshness_s``
(600 s by default), each Douyin retry carries a fresh timestamp. Fingerprint of a message = its ``x-life-sign``.
Errors [DOC envelope ``{"data": {"error_code", "description"}}``, HTTP 200]: malformed -> 2100005 参数不合法 [DOC
example]; bad signature / unknown account / replay -> 2100001 验签失败 [GUESS: no code is published]; stale or a
disabled channel -> 100 (the code a Douyin notify SPI documents as "retry") [GUESS].

Verify call (us -> Douyin) [DOC ``.../life.capacity.fulfilment/certificate.verify``]: a ``client_token``
(``POST /oauth/client_token/``, cached until ``expires_in`` minus a minute), then
``POST /goodlife/v1/fulfilment/certificate/verify/`` with header ``access-token`` and ``verify_token`` = the
call's idempotency key (the same on every attempt), ``poi_id`` (``account.config["poi_id"]``), ``order_id``,
``codes`` and ``code_with_time_list[{code, verify_time (s)}]`` (an offline gate's passage is back-dated).
Done: ``extra.error_code == 0`` and every ``verify_results[].result == 0``, or 1208 / 2 ("already verified": [DOC]
says that after a failed first call they mean success; in the 三方码 model only we verify our codes, so we take
them as our own earlier attempt whenever they come). Retry: transport errors, HTTP 5xx, and the documented
retryable messages (服务器错误, 请稍后重试, 访问过于频繁); an expired/invalid access token (2190002, 2190008
[GUESS]) drops the cached token and retries. Anything else Douyin refuses is `give_up`. ``verify_id`` and
``certificate_id`` per code are kept in the reply (撤销核销 needs them, within 1 h).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import httpx

from cloud.channels.base import (
    Authentic,
    CallResult,
    CallVerdict,
    ChannelAccount,
    Failure,
    HttpAnswer,
    InboundRequest,
    Intent,
    Malformed,
    OrderLine,
    OrderOutcome,
    Outcome,
    PlaceOrder,
    QueryOrder,
    RefundOutcome,
    RefundRequest,
    Rejected,
    VerifyCall,
    Voucher,
)

TOKEN_PATH = "/oauth/client_token/"
VERIFY_PATH = "/goodlife/v1/fulfilment/certificate/verify/"
ACTIONS = ("issue", "refund_apply", "refund_notice", "status_query")
ISSUED, ISSUE_FAILED = 1, 2  # 发券 result [DOC]
REFUND_ALLOW, REFUND_REJECT = 1, 2  # 退款申请 result [GUESS, as the audit callback's enum]
ALREADY_VERIFIED = frozenset({1208, 2})  # [DOC] after a retry: success
RETRYABLE_TEXT = ("服务器错误", "稍后重试", "访问过于频繁")  # [DOC]
TOKEN_ERRORS = frozenset({2190002, 2190008})  # access_token invalid / expired [GUESS]
ERR_RETRY, ERR_SIGNATURE, ERR_PARAMS = 100, 2100001, 2100005
_REJECT_ERRORS = {
    "bad_signature": (ERR_SIGNATURE, "验签失败"),
    "unknown_account": (ERR_SIGNATURE, "client_key 不匹配"),
    "replay": (ERR_SIGNATURE, "重复请求"),
    "malformed": (ERR_PARAMS, "参数不合法"),
    "stale": (ERR_RETRY, "timestamp 超出时间窗口，请重试"),
    "disabled": (ERR_RETRY, "渠道未启用，请稍后重试"),
}
_STATUS = {"pending": 0, "issued": 1, "used": 2, "refunded": 3, "cancelled": 4, "expired": 5}  # [GUESS]
CHINA = ZoneInfo("Asia/Shanghai")  # Douyin's times are China's
_TOKEN_MARGIN = timedelta(seconds=60)
_tokens: dict[tuple[str, str], tuple[str, datetime]] = {}  # (base url, client key) -> (token, good until)
_tokens_lock = threading.Lock()


def sign_text(secret: str, query: Mapping[str, str], body: bytes) -> bytes:
    """The text Douyin signs: secret, the URL's parameters but ``sign`` sorted as k=v, then the raw body."""
    params = "&".join(f"{k}={v}" for k, v in sorted(query.items()) if k != "sign")
    return secret.encode() + b"&" + (params.encode() + b"&" if params else b"") + b"http_body=" + body


def life_sign(secret: str, query: Mapping[str, str], body: bytes) -> str:
    """``x-life-sign``: lower-case hex sha256 of `sign_text`."""
    return hashlib.sha256(sign_text(secret, query, body)).hexdigest()


def old_sign(secret: str, query: Mapping[str, str], body: bytes) -> str:
    """The URL's old ``sign`` (md5 of the same text), which the stand-in sends as Douyin does; we do not check it."""
    return hashlib.md5(sign_text(secret, query, body)).hexdigest()


def _envelope(error_code: int, description: str, **fields: Any) -> HttpAnswer:
    data = {"error_code": error_code, "description": description, **fields}
    return HttpAnswer(200, json.dumps({"data": data}, ensure_ascii=False).encode())


def _text(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise Malformed(f"{name} is missing or not a string")
    return str(value)


def _certificates(items: Any, name: str) -> list[tuple[str, str]]:
    if not isinstance(items, list) or not all(isinstance(c, dict) for c in items):
        raise Malformed(f"{name} is not a list of certificates")
    return [(str(c.get("certificate_id") or ""), str(c.get("code") or "")) for c in items]


class DouyinAdapter:
    code: ClassVar[str] = "douyin"

    def authenticate(self, request: InboundRequest, account: ChannelAccount, now: datetime) -> Authentic | Rejected:
        secret = account.secrets.get("client_secret", "")
        client_key = account.config.get("client_key", "")
        if not secret:
            return Rejected("unknown_account", "no client_secret configured for douyin")
        if client_key and request.query.get("client_key") != client_key:
            return Rejected("unknown_account", "client_key is not ours")
        got = request.headers.get("x-life-sign", "").lower()
        if request.method.upper() != "POST" or not hmac.compare_digest(
            life_sign(secret, request.query, request.body).encode(), got.encode()
        ):
            return Rejected("bad_signature", "x-life-sign does not match")
        stamp = request.query.get("timestamp", "")
        if not stamp.isdigit() or len(stamp) > 15:
            return Rejected("malformed", "timestamp (ms) is missing")
        if abs(now.timestamp() * 1000 - int(stamp)) > account.freshness_s * 1000:
            return Rejected("stale", f"timestamp {stamp} is more than {account.freshness_s} s off")
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return Rejected("malformed", "the body is not JSON")
        if not isinstance(body, dict):
            return Rejected("malformed", "the body is not a JSON object")
        return Authentic(
            fingerprint=got, nonce=None, payload={"action": request.action, "body": body, "sent_ms": int(stamp)}
        )

    def parse(self, message: Authentic, request: InboundRequest) -> Intent:
        action, body = message.payload["action"], message.payload["body"]
        order_ref = _text(body.get("order_id"), "order_id")
        if action == "issue":
            return self._issue(order_ref, body, message.payload.get("sent_ms"))
        if action in ("refund_apply", "refund_notice"):
            key = (
                "notice_list"
                if action == "refund_notice"
                else next((k for k in ("certificates", "certificate_list") if k in body), "certificates")
            )
            certs = _certificates(body.get(key, []), key)
            if not certs:  # the action is not signed (only the body is): a refund names its certificates
                raise Malformed(f"{key} is missing or empty: a refund names the certificates it is about")
            codes = tuple(code for _, code in certs if code)
            complete = bool(certs) and len(codes) == len(certs)
            return RefundRequest(
                order_ref=order_ref,
                refund_ref=_text(body.get("after_sale_id"), "after_sale_id"),
                codes=codes if complete else None,
                quantity=None if complete or not certs else len(certs),
                decided=action == "refund_notice",
                reason=str(body.get("reason") or body.get("refund_reason") or "")[:200],
            )
        if action == "status_query":
            return QueryOrder(order_ref)
        raise Malformed(f"unknown douyin SPI action {action!r} (expected one of {', '.join(ACTIONS)})")

    def _issue(self, order_ref: str, body: Mapping[str, Any], sent_ms: int | None) -> PlaceOrder:
        sku = body.get("sku")
        if not isinstance(sku, dict):
            raise Malformed("sku is missing")
        sku_ref = str(sku.get("third_sku_id") or "") or _text(sku.get("sku_id"), "sku.sku_id")
        count = body.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= 100:
            raise Malformed("count is not a number of copies (1..100)")
        amount = body.get("amount") if isinstance(body.get("amount"), dict) else {}
        paid = amount.get("pay_amount") if isinstance(amount, dict) else None
        unit = paid // count if isinstance(paid, int) and not isinstance(paid, bool) and paid % count == 0 else None
        certs = _certificates(body.get("certificate_info_list", []), "certificate_info_list")
        tourists = body.get("tourists") if isinstance(body.get("tourists"), list) else []
        first = tourists[0] if tourists and isinstance(tourists[0], dict) else {}
        extra: dict[str, Any] = {
            "sku_id": str(sku.get("sku_id") or ""),
            "start_time": body.get("start_time"),
            "expire_time": body.get("expire_time"),
        }
        if certs and all(cid for cid, _ in certs):
            extra["certificate_ids"] = [cid for cid, _ in certs]
        return PlaceOrder(
            order_ref=order_ref,
            lines=(
                OrderLine(
                    sku=sku_ref,
                    quantity=count,
                    unit_price_fen=unit,
                    visit_date=_first_day(body, sent_ms),
                    last_day=_last_day(body),
                ),
            ),
            paid=True,
            phone=str(first["phone"]) if first.get("phone") else None,
            name=str(first["name"]) if first.get("name") else None,
            extra=extra,
        )

    def answer(self, message: Authentic | None, outcome: Outcome | Rejected, account: ChannelAccount) -> HttpAnswer:
        if isinstance(outcome, Rejected):
            error, text = _REJECT_ERRORS.get(outcome.kind, (ERR_PARAMS, "参数不合法"))
            return _envelope(error, text)
        action = message.payload["action"] if message is not None else ""
        if isinstance(outcome, Failure):
            if action == "issue" and outcome.code not in ("unknown_order", "not_paid"):
                return _envelope(0, outcome.message[:200], result=ISSUE_FAILED, certificates=[])
            if action == "refund_notice":
                return _envelope(0, "success")
            return _envelope(ERR_PARAMS, outcome.message[:200])
        if isinstance(outcome, RefundOutcome):
            if action == "refund_notice":
                return _envelope(0, "success")
            if outcome.approved:
                return _envelope(0, "success", result=REFUND_ALLOW)
            if outcome.code == "unknown_order":  # [DOC] an order we never made: 待审核 (auto-approved after 24 h)
                return _envelope(0, "pending: " + outcome.message[:180])
            return _envelope(0, "success", result=REFUND_REJECT, reason=outcome.message[:200] or outcome.code)
        certificates = _certificate_list(outcome)
        if action == "status_query":
            states = {v.code: v.state for v in outcome.vouchers}
            return _envelope(
                0,
                "success",
                order_id=outcome.order_ref,
                third_order_id=outcome.order_number,
                status=_STATUS.get(outcome.status, 0),
                certificates=[{**c, "status": states[c["code"]]} for c in certificates],
            )
        if not certificates:
            return _envelope(ERR_RETRY, "券码生成中，请重试")
        return _envelope(0, "success", result=ISSUED, certificates=certificates)

    def send(self, call: VerifyCall, account: ChannelAccount, http: httpx.Client, now: datetime) -> CallResult:
        secret = account.secrets.get("client_secret", "")
        client_key, poi_id = account.config.get("client_key", ""), account.config.get("poi_id", "")
        if not (secret and client_key and poi_id):
            return CallResult("give_up", "douyin is not configured: client_secret, client_key and poi_id are needed")
        base = account.base_url.rstrip("/")
        token = _client_token(http, base, client_key, secret, now)
        if isinstance(token, CallResult):
            return token
        body = {
            "verify_token": call.idempotency_key,
            "poi_id": poi_id,
            "order_id": call.order_ref,
            "codes": [e.code for e in call.entries],
            "code_with_time_list": [{"code": e.code, "verify_time": int(e.used_at.timestamp())} for e in call.entries],
        }
        try:
            r = http.post(base + VERIFY_PATH, json=body, headers={"access-token": token}, timeout=10)
        except httpx.HTTPError as exc:
            return CallResult("retry", f"verify: {type(exc).__name__}: {exc}"[:300])
        return _judge(r, (base, client_key), len(call.entries))


def _first_day(body: Mapping[str, Any], sent_ms: int | None) -> date | None:
    """The voucher's first valid day (``start_time``, China time) when it is after the day Douyin sent it."""
    start = body.get("start_time")
    if isinstance(start, bool) or not isinstance(start, int) or sent_ms is None or not 0 < start < 10**11:
        return None
    first = datetime.fromtimestamp(start, CHINA).date()
    return first if first > datetime.fromtimestamp(sent_ms / 1000, CHINA).date() else None


def _last_day(body: Mapping[str, Any]) -> date | None:
    """The voucher's last valid day (``expire_time``, seconds, China time): the ticket is open-dated through it."""
    end = body.get("expire_time")
    if isinstance(end, bool) or not isinstance(end, int) or not 0 < end < 10**11:
        return None
    return datetime.fromtimestamp(end - 1, CHINA).date()  # an expiry at midnight ends the day before


def _certificate_list(outcome: OrderOutcome) -> list[dict[str, str]]:
    ids = outcome.extra.get("certificate_ids")
    ids = ids if isinstance(ids, list) else []
    vouchers: Sequence[Voucher] = sorted(outcome.vouchers, key=lambda v: v.ticket_id)
    return [
        {"certificate_id": str(ids[i]) if i < len(ids) else str(v.ticket_id), "code": v.code}
        for i, v in enumerate(vouchers)
    ]


def _client_token(http: httpx.Client, base: str, client_key: str, secret: str, now: datetime) -> str | CallResult:
    with _tokens_lock:
        cached = _tokens.get((base, client_key))
    if cached is not None and cached[1] > now:
        return cached[0]
    body = {"client_key": client_key, "client_secret": secret, "grant_type": "client_credential"}
    try:
        r = http.post(base + TOKEN_PATH, json=body, timeout=10)
        data = r.json().get("data") if r.status_code < 500 else None
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return CallResult("retry", f"client_token: {type(exc).__name__}"[:300])
    if r.status_code >= 500 or not isinstance(data, dict):
        return CallResult("retry", f"client_token: HTTP {r.status_code}")
    token, expires = data.get("access_token"), data.get("expires_in")
    if data.get("error_code", 0) != 0 or not isinstance(token, str) or not token:
        return CallResult(
            "give_up", f"client_token refused: {data.get('error_code')} {data.get('description', '')}"[:300]
        )
    seconds = expires if isinstance(expires, int) and not isinstance(expires, bool) else 7200
    with _tokens_lock:
        _tokens[(base, client_key)] = (token, now + timedelta(seconds=seconds) - _TOKEN_MARGIN)
    return token


def _retryable(text: str) -> bool:
    return any(t in text for t in RETRYABLE_TEXT)


def _judge(r: httpx.Response, token_key: tuple[str, str], expected: int) -> CallResult:
    if r.status_code >= 500 or r.status_code == 429:
        return CallResult("retry", f"verify: HTTP {r.status_code}")
    try:
        reply = r.json()
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        return CallResult("retry" if r.status_code >= 400 else "give_up", f"verify: HTTP {r.status_code}, not JSON")
    extra = reply["extra"] if isinstance(reply.get("extra"), dict) else {}
    data = reply["data"] if isinstance(reply.get("data"), dict) else {}
    error = extra.get("error_code", data.get("error_code", 0))
    said = f"{extra.get('description', '')} {extra.get('sub_description', '')}".strip()
    if error in TOKEN_ERRORS or r.status_code == 401:
        with _tokens_lock:
            _tokens.pop(token_key, None)
        return CallResult("retry", f"verify: access token refused ({error} {said})"[:300])
    if error != 0:
        return CallResult("retry" if _retryable(said) else "give_up", f"verify: error_code {error} {said}"[:300])
    results = data.get("verify_results")
    if not isinstance(results, list) or not results:
        return CallResult("retry", "verify: error_code 0 but no verify_results")
    kept: dict[str, Any] = {"verify_ids": {}, "certificate_ids": {}}
    verdicts: list[CallVerdict] = []
    details: list[str] = []
    for item in results:
        item = item if isinstance(item, dict) else {}
        result = item.get("result") if isinstance(item.get("result"), int) else None
        code = str(item.get("code") or item.get("origin_code") or "")
        if result == 0 or result in ALREADY_VERIFIED:
            verdicts.append("done")
            details.append(f"{code}: {'verified' if result == 0 else f'already verified ({result})'}")
            kept["verify_ids"][code] = str(item.get("verify_id") or "")
            kept["certificate_ids"][code] = str(item.get("certificate_id") or "")
        else:
            msg = str(item.get("msg") or "")
            verdicts.append("retry" if _retryable(msg) else "give_up")
            details.append(f"{code}: result {result} {msg}")
    if len(results) < expected:
        verdicts.append("retry")
        details.append(f"{len(results)} results for {expected} codes")
    final: CallVerdict = "retry" if "retry" in verdicts else "give_up" if "give_up" in verdicts else "done"
    return CallResult(final, "; ".join(details)[:300], kept if final == "done" else {})
