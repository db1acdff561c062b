"""携程 景点玩乐开放平台, supplier direct connection (预下单 mode): Ctrip calls one URL of ours, we issue the codes.

Published vs reasoned guess (research: `docs/ota/ctrip-lebingxue-wechat-refund.md` §1, Ctrip's order-API Swagger,
as https://ttdstp.ctrip.com/apiplatform/document/security.do and .../api/ordercancellation.do, orderinquiry.do):

- Published, the envelope both ways: `{"header": {accountId, serviceName, requestTime, version "1.0", sign},
  "body": "<ciphertext>"}`; answers `{"header": {resultCode, resultMessage}, "body"}` (body only with `0000`).
- Published, `sign = lower(md5(accountId + serviceName + requestTime + body + version + signKey))` where `body` is
  the ciphertext as sent; AES-128-CBC/PKCS5Padding with Ctrip's 16-character key and IV, the ciphertext written in
  Ctrip's own "hex" (half-bytes as letters `a`..`p`); the tests reproduce the research's test vector. The sign
  covers the ciphertext: an envelope re-spaced is the same message; a body changed and re-encrypted is not.
- Published, the services (`header.serviceName`, one URL as every public implementation uses; Ctrip is configured
  with `{cloud}/api/v1/channels/ctrip/notify`): `CreatePreOrder` holds the stock (an unpaid order) and answers
  `{otaOrderId, supplierOrderId, items[{PLU, inventorys[{useDate, quantity}]}]}`; `PayPreOrder` issues the tickets
  and answers `supplierConfirmType 1, voucherSender 1, vouchers[{itemId, voucherId, voucherType 2, voucherCode}]`,
  `items[{itemId, isCredentialVouchers 0}]`; `CancelPreOrder` gives the stock back; `CancelOrder` asks for a
  refund; `QueryOrder` answers with Ctrip's status numbers. Idempotent by `otaOrderId` (published:
  "若存在且已预下单成功，直接返回预下单成功结果"), refunds by the CancelOrder's `sequenceId`.
- Published, the codes: `0000`, `0001` parse, `0002` sign, `0003` account, `1001` PLU, `1002` off sale, `1003`
  stock, `1009` date, `2001` no such order, `2002` used, `2003` expired, `2004` quantity, `2005` not refundable,
  `2007` not paid, `4001` not found; `1100-1199`, `2100-2199`, `4100-4199` our own codes with the reason written out.
- Published, CancelOrder with `confirmType 2` must be refused unless the quantity asked for is the refundable one:
  a mismatch (tickets used or refunded meanwhile) is `2004`. Approvals are answered at once
  (`supplierConfirmType 1` + the cancelled vouchers); `CancelOrderConfirm` (deciding later) is not used.
- GUESS, CancelOrder `confirmType 1` ("仅通知": cancelled already) is a refund made (`decided`): revoke, no decision.
- GUESS, freshness: nothing is published (no window, no nonce). A `requestTime` (Asia/Shanghai) more than the
  channel's `freshness_s` away from our clock is refused `0001` "请求时间无效或已过期", as one public implementation
  does. Ctrip's 3 "compensation" resends carry the same `sequenceId`: the same message gets our stored answer (the
  fingerprint is the sign), a resend with a fresh `requestTime` is answered from the order we made.
- GUESS, `inventorys` in the CreatePreOrder answer ("剩余库存数量", required only when stock is short): the
  quantity held for this order on each day, as we do not publish the day's stock to Ctrip.
- GUESS, `voucherId` (published: unique in the order, used for 核销 and refunds) is our voucher code, so every
  message names a ticket alike; Ctrip's `itemId` (bound to a PLU by PayPreOrder) is kept in the order's extra
  (`ctrip_items`: PLU -> itemId); each line's `ref` is its PLU.
- Published, the verify call `OrderConsumedNotice` to `{base_url}{config notice_path}` (GUESS, the path: the
  sandbox's `/api/order/notice.do` by default, configurable per account): our `sequenceId` = yyyyMMdd (the call's
  creation day, Asia/Shanghai) + 32 hex characters of the idempotency key; `useQuantity` cumulative
  ("共购买三张…第二次又核销一张，则传值3"), capped at the item's quantity; the used vouchers listed. Built only from the
  stored call (its `requestTime` is the call's creation time), so every attempt sends the same bytes (published:
  "请用相同报文重试"). GUESS, the verdicts: `0000` done, `0008` (batch already exists) done, `0005`/`0007`, HTTP 429
  or 5xx and network errors retried, any other answer given up (shown in the back office).
- GUESS: a multi-PLU order's `useQuantity` per item is the order's count capped at the item's quantity; HTTP
  status always 200, the code in `header.resultCode`, as every public implementation does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

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

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")  # China keeps no summer time
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
VERSION = "1.0"
NOTICE_PATH = "/api/order/notice.do"
ITEMS = "ctrip_items"  # extra: PLU -> Ctrip's itemId (from PayPreOrder)
LINES = "ctrip_lines"  # extra: each line's PLU, quantity, useStartDate, useEndDate (from CreatePreOrder)
SERVICES = ("CreatePreOrder", "PayPreOrder", "CancelPreOrder", "CancelOrder", "QueryOrder")
_HEX32 = re.compile(r"[0-9a-f]{32}")

_ACCOUNT = ("0003", "供应商账户信息不正确")
_REJECTED = {
    "malformed": ("0001", "报文解析失败"),
    "stale": ("0001", "请求时间无效或已过期"),
    "replay": ("0001", "报文重复"),
}
_REJECTED |= {"bad_signature": ("0002", "签名错误"), "unknown_account": _ACCOUNT, "disabled": _ACCOUNT}
_ORDERING = {"unknown_sku": "1001", "not_on_sale": "1002", "sold_out": "1003", "bad_date": "1009", "invalid": "1006"}
_ORDERING |= {"price_mismatch": "1100", "unknown_order": "1101", "not_paid": "1102"}  # 1100-1199: ours
_CANCELLING = {"unknown_order": "2001", "not_paid": "2007"}  # anything else: 2100 (ours) with the reason
_DENIALS = {"unknown_order": "2001", "ticket_used": "2002", "past_cutoff": "2003", "wrong_quantity": "2004"}
_DENIALS |= {"not_refundable": "2005", "order_not_paid": "2007"}
_CTRIP_DONE = {"0000", "0008"}
_CTRIP_RETRY = {"0005", "0007"}


# ---- Ctrip's cipher and signature (published) ----


def encode_hex(data: bytes) -> str:
    """Ctrip's "hex": each half-byte as a letter from `a` (0) to `p` (15)."""
    return "".join(chr(97 + (b >> 4)) + chr(97 + (b & 0xF)) for b in data)


def decode_hex(text: str) -> bytes:
    if len(text) % 2 or any(not "a" <= c <= "p" for c in text):
        raise ValueError("not Ctrip's a-p hex")
    return bytes(((ord(text[i]) - 97) << 4) | (ord(text[i + 1]) - 97) for i in range(0, len(text), 2))


def _cipher(secrets: Mapping[str, str]) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(secrets["aes_key"].encode()), modes.CBC(secrets["aes_iv"].encode()))


def encrypt(plain: str, secrets: Mapping[str, str]) -> str:
    padder, encryptor = padding.PKCS7(128).padder(), _cipher(secrets).encryptor()
    return encode_hex(encryptor.update(padder.update(plain.encode()) + padder.finalize()) + encryptor.finalize())


def decrypt(text: str, secrets: Mapping[str, str]) -> str:
    """The plain text of a body; ValueError if it is not Ctrip's hex, not whole blocks or badly padded."""
    raw = decode_hex(text)
    if not raw or len(raw) % 16:
        raise ValueError("not whole AES blocks")
    decryptor, unpadder = _cipher(secrets).decryptor(), padding.PKCS7(128).unpadder()
    return (unpadder.update(decryptor.update(raw) + decryptor.finalize()) + unpadder.finalize()).decode()


def sign(account_id: str, service: str, request_time: str, body: str, sign_key: str, version: str = VERSION) -> str:
    text = account_id + service + request_time + body + version + sign_key
    return hashlib.md5(text.encode()).hexdigest()


def shanghai_time(at: datetime) -> str:
    return at.astimezone(SHANGHAI).strftime(TIME_FORMAT)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# ---- reading what Ctrip sends ----


def _str(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise Malformed(f"{name} is missing or not a string")
    return str(value)


def _int(obj: Mapping[str, Any], name: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(f"{name} is missing or not an integer")
    return value


def _items(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = body.get("items")
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise Malformed("items is missing or empty")
    return items


def _day(obj: Mapping[str, Any], name: str) -> date | None:
    try:
        return date.fromisoformat(str(obj[name])) if obj.get(name) else None
    except ValueError as exc:
        raise Malformed(f"{name} is not yyyy-MM-dd") from exc


def _fen(value: Any) -> int | None:
    try:
        amount = None if value is None or isinstance(value, bool) else Decimal(str(value))
    except (ArithmeticError, ValueError) as exc:
        raise Malformed("price is not a number") from exc
    if amount is not None and not (amount.is_finite() and 0 <= amount < 10**7):  # yuan; never 1e999999999
        raise Malformed("price is not a number of yuan in range")
    return None if amount is None else int(amount * 100)


class CtripAdapter:
    code: ClassVar[str] = "ctrip"

    def authenticate(self, request: InboundRequest, account: ChannelAccount, now: datetime) -> Authentic | Rejected:
        try:
            envelope = json.loads(request.body)
            header, body = envelope["header"], envelope["body"]
            fields = [header[k] for k in ("accountId", "serviceName", "requestTime", "version", "sign")]
        except (ValueError, TypeError, KeyError):
            return Rejected("malformed", "Not Ctrip's envelope {header, body}")
        if not all(isinstance(f, str) for f in [*fields, body]):
            return Rejected("malformed", "Ctrip's header fields and body are strings")
        account_id, service, request_time, version, signature = fields
        expected = account.config.get("account_id")
        if not expected or not hmac.compare_digest(str(account_id).encode(), expected.encode()):
            return Rejected("unknown_account", "accountId is not this supplier's")
        mine = sign(account_id, service, request_time, body, account.secrets["sign_key"], version)
        if not hmac.compare_digest(mine.encode(), str(signature).lower().encode()):
            return Rejected("bad_signature", "sign does not match")
        try:
            sent = datetime.strptime(request_time, TIME_FORMAT).replace(tzinfo=SHANGHAI)
        except ValueError:
            return Rejected("malformed", "requestTime is not yyyy-MM-dd HH:mm:ss")
        if abs((now - sent).total_seconds()) > account.freshness_s:
            return Rejected("stale", "requestTime is outside the accepted window")
        try:
            plain = json.loads(decrypt(body, account.secrets))
        except (ValueError, UnicodeDecodeError):
            return Rejected("malformed", "body cannot be decrypted")
        if not isinstance(plain, dict):
            return Rejected("malformed", "body is not a JSON object")
        payload = {"service": service, "header": header, "body": plain}
        return Authentic(fingerprint=signature.lower(), nonce=None, payload=payload)

    def parse(self, message: Authentic, request: InboundRequest) -> Intent:
        service, body = message.payload["service"], message.payload["body"]
        order_ref = _str(body, "otaOrderId")
        if service == "CreatePreOrder":
            return _place(order_ref, body)
        if service == "PayPreOrder":
            bound = {_str(i, "PLU"): _str(i, "itemId") for i in _items(body)}
            return PayOrder(order_ref=order_ref, extra={ITEMS: bound})
        if service == "CancelPreOrder":
            return CancelOrder(order_ref=order_ref)
        if service == "CancelOrder":
            return RefundRequest(
                order_ref=order_ref,
                refund_ref=_str(body, "sequenceId"),
                quantity=sum(_int(i, "quantity") for i in _items(body)),
                decided=body.get("confirmType") == 1,
                reason="携程取消",
            )
        if service == "QueryOrder":
            return QueryOrder(order_ref=order_ref)
        raise Malformed(f"serviceName {service} is not one we serve ({', '.join(SERVICES)})")

    def answer(self, message: Authentic | None, outcome: Outcome | Rejected, account: ChannelAccount) -> HttpAnswer:
        if isinstance(outcome, Rejected):
            return _envelope(*_REJECTED[outcome.kind])
        assert message is not None
        service, request = message.payload["service"], message.payload["body"]
        if isinstance(outcome, Failure):
            table = _CANCELLING if service in ("CancelPreOrder", "CancelOrder") else _ORDERING
            fallback = "2100" if table is _CANCELLING else "1100"
            if service == "QueryOrder":
                table, fallback = {"unknown_order": "4001"}, "4100"
            return _envelope(table.get(outcome.code, fallback), outcome.message)
        if isinstance(outcome, RefundOutcome):
            if not outcome.approved:
                return _envelope(_DENIALS.get(outcome.code, "2100"), outcome.message)
            by_plu = _item_ids(request)
            items: dict[str, list[dict[str, str]]] = {}
            for v in outcome.vouchers:
                items.setdefault(_item_of(v.sku or v.line_ref, by_plu), []).append({"voucherId": _voucher_id(v)})
            answer = {"supplierConfirmType": 1, "items": [{"itemId": k, "vouchers": vs} for k, vs in items.items()]}
            return _envelope("0000", "操作成功", answer, account)
        if service == "CancelPreOrder":
            return _envelope("0000", "操作成功")
        head = {"otaOrderId": outcome.order_ref, "supplierOrderId": outcome.order_number}
        if service == "CreatePreOrder":
            return _envelope("0000", "操作成功", {**head, "items": _held(outcome)}, account)
        if service == "PayPreOrder":
            return _envelope("0000", "操作成功", {**head, **_issued(outcome, _item_ids(request))}, account)
        return _envelope("0000", "操作成功", {**head, "items": _query_items(outcome)}, account)

    def send(self, call: VerifyCall, account: ChannelAccount, http: httpx.Client, now: datetime) -> CallResult:
        url = account.base_url.rstrip("/") + account.config.get("notice_path", NOTICE_PATH)
        try:
            reply = http.post(url, content=notice(call, account), headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            return CallResult("retry", f"network: {type(exc).__name__}")
        if reply.status_code == 429 or reply.status_code >= 500:
            return CallResult("retry", f"HTTP {reply.status_code}")
        try:
            header = reply.json()["header"]
            result, text = str(header["resultCode"]), str(header.get("resultMessage", ""))
        except (ValueError, TypeError, KeyError):
            garbled = f"HTTP {reply.status_code}, not Ctrip's answer"
            return CallResult("retry", garbled) if reply.status_code == 200 else CallResult("give_up", garbled)
        detail = f"{result} {text}".strip()
        if result in _CTRIP_DONE:
            return CallResult("done", detail, {"resultCode": result})
        return CallResult("retry" if result in _CTRIP_RETRY else "give_up", detail)


# ---- our answers and calls ----


def _envelope(
    code: str, message: str, body: Mapping[str, Any] | None = None, account: ChannelAccount | None = None
) -> HttpAnswer:
    out: dict[str, Any] = {"header": {"resultCode": code, "resultMessage": message}}
    if body is not None and account is not None:
        out["body"] = encrypt(dumps(body), account.secrets)
    return HttpAnswer(status=200, body=dumps(out).encode())


def _place(order_ref: str, body: Mapping[str, Any]) -> PlaceOrder:
    lines, kept = [], []
    for item in _items(body):
        plu, quantity = _str(item, "PLU"), _int(item, "quantity")
        start, end = _day(item, "useStartDate"), _day(item, "useEndDate") or _day(item, "useStartDate")
        lines.append(OrderLine(plu, quantity, _fen(item.get("price")), start, ref=plu))
        days = {"useStartDate": start.isoformat() if start else "", "useEndDate": end.isoformat() if end else ""}
        kept.append({"PLU": plu, "quantity": quantity, **days})
    contacts = body.get("contacts")
    contact = contacts[0] if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict) else {}
    phone = contact.get("mobile")
    extra = {LINES: kept, "sequenceId": body.get("sequenceId", "")}
    return PlaceOrder(
        order_ref=order_ref,
        lines=tuple(lines),
        paid=False,
        phone=str(phone) if phone else None,
        name=str(contact["name"]) if contact.get("name") else None,
        extra=extra,
    )


def _item_ids(request: Mapping[str, Any]) -> dict[str, str]:
    items = request.get("items")
    found = {}
    for i in items if isinstance(items, list) else []:
        if isinstance(i, dict) and i.get("PLU") and i.get("itemId"):
            found[str(i["PLU"])] = str(i["itemId"])
    return found


def _item_of(plu: str, by_plu: Mapping[str, str]) -> str:
    if plu in by_plu:
        return by_plu[plu]
    return next(iter(by_plu.values())) if len(by_plu) == 1 else "0"


def _voucher_id(v: Voucher) -> str:
    return v.code or str(v.ticket_id)


def _held(outcome: OrderOutcome) -> list[dict[str, Any]]:
    out: dict[str, dict[str, int]] = {}
    for line in outcome.extra.get(LINES) or []:
        per_day = out.setdefault(str(line.get("PLU")), {})
        if line.get("useStartDate"):  # an undated line has no day to hold stock on
            day = str(line["useStartDate"])
            per_day[day] = per_day.get(day, 0) + int(line.get("quantity") or 0)
    return [
        {"PLU": plu, "inventorys": [{"useDate": d, "quantity": n} for d, n in days.items()]}
        for plu, days in out.items()
    ]


def _issued(outcome: OrderOutcome, by_plu: Mapping[str, str]) -> dict[str, Any]:
    vouchers = [
        {
            "itemId": _item_of(v.sku or v.line_ref, by_plu),
            "voucherId": _voucher_id(v),
            "voucherType": 2,
            "voucherCode": v.code,
        }
        for v in outcome.vouchers
    ]
    items = [{"itemId": item, "isCredentialVouchers": 0} for item in dict.fromkeys(by_plu.values())]
    return {"supplierConfirmType": 1, "voucherSender": 1, "vouchers": vouchers, "items": items}


def _used(v: Voucher) -> bool:
    return v.state == "used" or v.entries_used > 0


def _cancelled(v: Voucher) -> bool:
    return v.state in ("refunded", "revoked") and v.entries_used == 0


def _status(order_status: str, vouchers: Sequence[Voucher]) -> int:
    """Ctrip's order status numbers (published appendix 订单状态)."""
    if order_status == "pending":
        return 11  # 待支付
    used, cancelled = sum(map(_used, vouchers)), sum(map(_cancelled, vouchers))
    if not vouchers or cancelled == len(vouchers):
        return 14 if not vouchers else 5  # 预下单取消成功, 全部取消
    if used:
        return 8 if used + cancelled == len(vouchers) else 7  # 全部使用, 部分使用
    return 4 if cancelled else 2  # 部分取消, 新订已确认


def _query_items(outcome: OrderOutcome) -> list[dict[str, Any]]:
    by_plu = {str(k): str(v) for k, v in (outcome.extra.get(ITEMS) or {}).items()}
    lines = {str(x.get("PLU")): x for x in outcome.extra.get(LINES) or []}
    groups: dict[str, list[Voucher]] = {plu: [] for plu in lines}
    for v in outcome.vouchers:
        groups.setdefault(v.sku or v.line_ref, []).append(v)
    items = []
    for plu, vs in groups.items():
        line, day = lines.get(plu, {}), (vs[0].visit_date.isoformat() if vs else "")
        states = [{"voucherId": _voucher_id(v), "voucherStatus": 1 if _used(v) else 2 * _cancelled(v)} for v in vs]
        item = {"itemId": by_plu.get(plu, "0"), "orderStatus": _status(outcome.status, vs), "vouchers": states}
        item |= {"useStartDate": line.get("useStartDate") or day, "useEndDate": line.get("useEndDate") or day}
        item |= {"quantity": len(vs) or int(line.get("quantity") or 0), "useQuantity": sum(map(_used, vs))}
        items.append(item | {"cancelQuantity": sum(map(_cancelled, vs))})
    return items


def sequence_id(call: VerifyCall) -> str:
    """Ours, in Ctrip's published form: the call's day (yyyyMMdd) + 32 hex characters, the same on every attempt."""
    key = call.idempotency_key.lower()
    key = key if _HEX32.fullmatch(key) else hashlib.md5(call.idempotency_key.encode()).hexdigest()
    return call.created_at.astimezone(SHANGHAI).strftime("%Y%m%d") + key


def notice(call: VerifyCall, account: ChannelAccount) -> bytes:
    """The OrderConsumedNotice envelope of this call: a function of the stored call alone (same bytes each time)."""
    extra = call.order_extra
    by_plu = {str(k): str(v) for k, v in (extra.get(ITEMS) or {}).items()}
    lines = {str(x.get("PLU")): x for x in extra.get(LINES) or []}
    items: dict[str, dict[str, Any]] = {}
    for entry in call.entries:
        item_id = _item_of(entry.line_ref, by_plu)
        line = lines.get(entry.line_ref) or (next(iter(lines.values())) if len(lines) == 1 else {})
        quantity, day = int(line.get("quantity") or call.quantity_total), entry.used_at.astimezone(SHANGHAI).date()
        item = {"itemId": item_id, "useStartDate": line.get("useStartDate") or day.isoformat()}
        item |= {"useEndDate": line.get("useEndDate") or day.isoformat(), "quantity": quantity}
        item = items.setdefault(item_id, item | {"useQuantity": min(call.used_total, quantity), "vouchers": []})
        item["vouchers"].append({"voucherId": entry.code or str(entry.ticket_id)})
    body: dict[str, Any] = {
        "sequenceId": sequence_id(call),
        "otaOrderId": call.order_ref,
        "supplierOrderId": call.order_number,
    }
    body["items"] = list(items.values())
    cipher = encrypt(dumps(body), account.secrets)
    service, request_time = "OrderConsumedNotice", shanghai_time(call.created_at)
    account_id = account.config.get("account_id", "")
    signature = sign(account_id, service, request_time, cipher, account.secrets["sign_key"])
    header = {"accountId": account_id, "serviceName": service, "requestTime": request_time, "version": VERSION}
    header["sign"] = signature
    return dumps({"header": header, "body": cipher}).encode()
