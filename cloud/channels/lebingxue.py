"""乐冰雪: OUR documented contract, not the platform's. 乐冰雪 publishes no API document, SDK or sample (see
docs/ota/ctrip-lebingxue-wechat-refund.md §2): every name below is ours and waits for their document; when it
comes, this module is rewritten to it and nothing else changes.

Inbound (乐冰雪 -> us): `POST /api/v1/channels/lebingxue/notify/{order|pay|cancel|refund|query}`, a JSON body,
signed in headers:
- `X-Lbx-Timestamp`: unix seconds, within ± the channel's `freshness_s` of our clock (else 401, stale);
- `X-Lbx-Nonce`: 1-64 printable characters, never reused with another message (else 401, replay);
- `X-Lbx-Signature`: hex HMAC-SHA256(secret, f"{timestamp}\\n{nonce}\\n{path}\\n" + raw body), `path` the
  request's path as sent (else 401, bad signature). The same message sent again gets the same answer.
Bodies: order `{"order_id", "paid" (default true), "items": [{"sku", "quantity", "unit_price_fen"?,
"visit_date"? (YYYY-MM-DD; none: today at the resort), "item_id"?}], "phone"?, "name"?}`; pay / cancel / query
`{"order_id"}`; refund `{"order_id", "refund_id", "codes"? | "quantity"?, "decided"? (the platform refunded
already), "reason"?}`.
Answers: HTTP 200 `{"code": 0, "message": "ok", "data": {...}}` (the order and its vouchers: our plain codes,
or the refund decision), or `{"code": <nonzero>, "message": ...}` (see `CODES`); 401 for a refused signature,
timestamp or nonce. A denied refund is code 3001 with `data.reason` (ticket_used, past_cutoff ...).

Outbound (us -> 乐冰雪), one call per entry used: `POST {base_url}/v1/redemptions` with `Idempotency-Key` (the
same on every attempt) and the same three signature headers over that path; body `{"order_id", "order_number",
"redemptions": [{"code", "item_id", "used_at"}], "used_total", "quantity_total"}`. 2xx: done; 409: they had it
already, done; 5xx, 408, 429 or no answer: retry; any other 4xx: refused for good.
Secret: `STARFISH_CHANNEL_SECRETS_*` `{"lebingxue": {"secret": ...}}`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import date, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

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
    OrderOutcome,
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

TS, NONCE, SIGNATURE = "x-lbx-timestamp", "x-lbx-nonce", "x-lbx-signature"
CODES = {
    "bad_signature": 1001,
    "stale": 1002,
    "replay": 1003,
    "unknown_account": 1004,
    "disabled": 1004,
    "malformed": 1005,
    "invalid": 1005,
    "unknown_sku": 2001,
    "sold_out": 2002,
    "not_on_sale": 2003,
    "bad_date": 2004,
    "price_mismatch": 2005,
    "unknown_order": 2006,
    "not_paid": 2007,
    "refund_denied": 3001,
}
UNAUTHORIZED = ("bad_signature", "stale", "replay")


def sign(secret: str, timestamp: str, nonce: str, path: str, body: bytes) -> str:
    """The signature of one message either way (hex HMAC-SHA256)."""
    text = f"{timestamp}\n{nonce}\n{path}\n".encode() + body
    return hmac.new(secret.encode(), text, hashlib.sha256).hexdigest()


def signed_headers(secret: str, path: str, body: bytes, now: datetime, nonce: str | None = None) -> dict[str, str]:
    ts, nonce = str(int(now.timestamp())), nonce or uuid.uuid4().hex
    return {"X-Lbx-Timestamp": ts, "X-Lbx-Nonce": nonce, "X-Lbx-Signature": sign(secret, ts, nonce, path, body)}


class LebingxueAdapter:
    code: ClassVar[str] = "lebingxue"

    def authenticate(self, request: InboundRequest, account: ChannelAccount, now: datetime) -> Authentic | Rejected:
        ts, nonce, given = (request.headers.get(h, "") for h in (TS, NONCE, SIGNATURE))
        if not (ts.isascii() and ts.isdigit() and len(ts) <= 12) or not (0 < len(nonce) <= 64 and nonce.isprintable()):
            return Rejected("bad_signature", "Missing or malformed X-Lbx-Timestamp / X-Lbx-Nonce")
        expected = sign(account.secrets["secret"], ts, nonce, request.path, request.body)
        if not hmac.compare_digest(expected.encode(), given.lower().encode()):
            return Rejected("bad_signature", "The signature does not match")
        if abs(now.timestamp() - int(ts)) > account.freshness_s:
            return Rejected("stale", "The timestamp is too far from ours")
        try:
            payload = json.loads(request.body)
        except ValueError:
            payload = None
        fingerprint = hashlib.sha256(f"{ts}\n{nonce}\n{request.path}\n".encode() + request.body).hexdigest()
        return Authentic(fingerprint=fingerprint, nonce=nonce, payload=payload)

    def parse(self, message: Authentic, request: InboundRequest) -> Intent:
        p = message.payload
        if not isinstance(p, dict):
            raise Malformed("the body is not a JSON object")
        ref = _text(p, "order_id")
        if request.action == "order":
            items = p.get("items")
            if not isinstance(items, list) or not items:
                raise Malformed("items: a non-empty list is required")
            return PlaceOrder(
                order_ref=ref,
                lines=tuple(_line(x) for x in items),
                paid=_flag(p, "paid", True),
                phone=_optional(p, "phone"),
                name=_optional(p, "name"),
            )
        if request.action == "pay":
            return PayOrder(order_ref=ref)
        if request.action == "cancel":
            return CancelOrder(order_ref=ref)
        if request.action == "query":
            return QueryOrder(order_ref=ref)
        if request.action == "refund":
            codes = p.get("codes")
            if codes is not None and not (isinstance(codes, list) and all(isinstance(c, str) for c in codes)):
                raise Malformed("codes: a list of texts")
            quantity = p.get("quantity")
            if quantity is not None and (not isinstance(quantity, int) or isinstance(quantity, bool)):
                raise Malformed("quantity: an integer")
            return RefundRequest(
                order_ref=ref,
                refund_ref=_text(p, "refund_id"),
                codes=tuple(codes) if codes is not None else None,
                quantity=quantity,
                decided=_flag(p, "decided", False),
                reason=(_optional(p, "reason") or "")[:200],
            )
        raise Malformed(f"unknown action {request.action!r}: order, pay, cancel, refund or query")

    def answer(self, message: Authentic | None, outcome: Outcome | Rejected, account: ChannelAccount) -> HttpAnswer:
        if isinstance(outcome, Rejected):
            status = 401 if outcome.kind in UNAUTHORIZED else 200
            return _json(status, {"code": CODES[outcome.kind], "message": outcome.message})
        if isinstance(outcome, Failure):
            return _json(200, {"code": CODES[outcome.code], "message": outcome.message})
        if isinstance(outcome, RefundOutcome):
            data = {
                "order_id": outcome.order_ref,
                "refund_id": outcome.refund_ref,
                "approved": outcome.approved,
                "reason": outcome.code,
                "vouchers": [_voucher(v) for v in outcome.vouchers],
            }
            code = 0 if outcome.approved else CODES["refund_denied"]
            return _json(200, {"code": code, "message": "ok" if outcome.approved else outcome.message, "data": data})
        return _json(200, {"code": 0, "message": "ok", "data": _order(outcome)})

    def send(self, call: VerifyCall, account: ChannelAccount, http: httpx.Client, now: datetime) -> CallResult:
        url = account.base_url.rstrip("/") + "/v1/redemptions"
        body = json.dumps(
            {
                "order_id": call.order_ref,
                "order_number": call.order_number,
                "redemptions": [
                    {"code": e.code, "item_id": e.line_ref, "used_at": e.used_at.isoformat()} for e in call.entries
                ],
                "used_total": call.used_total,
                "quantity_total": call.quantity_total,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        headers = {
            "content-type": "application/json",
            "Idempotency-Key": call.idempotency_key,
            **signed_headers(account.secrets["secret"], urlsplit(url).path, body, now),
        }
        try:
            r = http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return CallResult("retry", f"no answer: {type(exc).__name__}")
        detail = f"HTTP {r.status_code}: {r.text[:200]}"
        if r.is_success or r.status_code == 409:
            return CallResult("done", detail, _reply(r))
        if r.status_code >= 500 or r.status_code in (408, 429):
            return CallResult("retry", detail)
        return CallResult("give_up", detail)


def _json(status: int, body: dict[str, Any]) -> HttpAnswer:
    return HttpAnswer(status=status, body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


def _voucher(v: Voucher) -> dict[str, Any]:
    return {
        "code": v.code,
        "sku": v.sku,
        "item_id": v.line_ref,
        "visit_date": v.visit_date.isoformat(),
        "state": v.state,
        "entries_used": v.entries_used,
    }


def _order(o: OrderOutcome) -> dict[str, Any]:
    return {
        "order_id": o.order_ref,
        "order_number": o.order_number,
        "status": o.status,
        "vouchers": [_voucher(v) for v in o.vouchers],
    }


def _reply(r: httpx.Response) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        return {}
    inner = data.get("data") if isinstance(data, dict) else None
    return inner if isinstance(inner, dict) else {}


def _text(p: dict[str, Any], name: str) -> str:
    value = p.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable():
        raise Malformed(f"{name}: a text of 1-64 characters is required")
    return value


def _optional(p: dict[str, Any], name: str) -> str | None:
    value = p.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise Malformed(f"{name}: a text of at most 200 characters")
    return value


def _flag(p: dict[str, Any], name: str, default: bool) -> bool:
    value = p.get(name, default)
    if not isinstance(value, bool):
        raise Malformed(f"{name}: true or false")
    return value


def _line(x: Any) -> OrderLine:
    if not isinstance(x, dict):
        raise Malformed("items[]: objects")
    quantity, price, day = x.get("quantity"), x.get("unit_price_fen"), x.get("visit_date")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 100:
        raise Malformed("items[].quantity: an integer 1-100")
    if price is not None and (not isinstance(price, int) or isinstance(price, bool) or price < 0):
        raise Malformed("items[].unit_price_fen: a non-negative integer")
    try:
        visit = date.fromisoformat(day) if day is not None else None
    except (TypeError, ValueError) as exc:
        raise Malformed("items[].visit_date: YYYY-MM-DD") from exc
    item_id = x.get("item_id", "")
    if not isinstance(item_id, str) or len(item_id) > 64:
        raise Malformed("items[].item_id: a text of at most 64 characters")
    return OrderLine(sku=_text(x, "sku"), quantity=quantity, unit_price_fen=price, visit_date=visit, ref=item_id)
