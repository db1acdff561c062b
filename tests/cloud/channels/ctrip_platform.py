"""A stand-in of 携程 景点玩乐开放平台 (supplier direct connection) on loopback, from the published Swagger
(`docs/ota/ctrip-lebingxue-wechat-refund.md` §1).

As Ctrip's order system it sends each service (`CreatePreOrder`, `PayPreOrder`, `CancelPreOrder`, `CancelOrder`,
`QueryOrder`) as published: `{"header": {accountId, serviceName, requestTime, version, sign}, "body": <AES-128-CBC
ciphertext in Ctrip's a-p hex>}`, sign = md5(accountId + serviceName + requestTime + body + version + signKey),
and posts the raw bytes to the cloud over a real socket. `resend` sends the very same bytes again (Ctrip's
"compensation"), `retry` re-signs the same body with a fresh `requestTime`. Its cipher and signature are written
here independently of the adapter, so a mistake on either side shows.

As Ctrip's notice endpoint it serves `OrderConsumedNotice` (核销): checks our account, signature, `requestTime`,
the `sequenceId` form (yyyyMMdd + 32 hex) and the body's fields (anything wrong goes to `problems`), answers
`0008` to a `sequenceId` it has already taken, can fail the first K calls (`0005` or HTTP 500, taking the notice
all the same when `taken_anyway`) and refuse for good (`refuse`, e.g. `5001`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.cloud.channels.kit import TEST_SECRETS, Received, ServedPlatform, StandIn, post

ACCOUNT_ID = "ctrip-acct-0001"
SECRETS = TEST_SECRETS["ctrip"]
NOTICE_PATH = "/api/order/notice.do"
BEIJING = timezone(timedelta(hours=8))
SEQUENCE = re.compile(r"\d{8}[0-9a-f]{32}")


def to_hex(data: bytes) -> str:
    out = []
    for b in data:
        out.append(chr((b >> 4 & 0xF) + ord("a")))
        out.append(chr((b & 0xF) + ord("a")))
    return "".join(out)


def from_hex(text: str) -> bytes:
    return bytes(((ord(text[i]) - ord("a")) << 4) + (ord(text[i + 1]) - ord("a")) for i in range(0, len(text), 2))


def aes_encrypt(plain: str, key: str = SECRETS["aes_key"], iv: str = SECRETS["aes_iv"]) -> str:
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain.encode("utf-8")) + padder.finalize()
    enc = Cipher(algorithms.AES(key.encode("utf-8")), modes.CBC(iv.encode("utf-8"))).encryptor()
    return to_hex(enc.update(data) + enc.finalize())


def aes_decrypt(text: str, key: str = SECRETS["aes_key"], iv: str = SECRETS["aes_iv"]) -> str:
    dec = Cipher(algorithms.AES(key.encode("utf-8")), modes.CBC(iv.encode("utf-8"))).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    data = dec.update(from_hex(text)) + dec.finalize()
    return (unpadder.update(data) + unpadder.finalize()).decode("utf-8")


def ctrip_sign(account_id: str, service: str, request_time: str, body: str, version: str, key: str) -> str:
    return hashlib.md5((account_id + service + request_time + body + version + key).encode("utf-8")).hexdigest()


def beijing_now(offset_s: float = 0) -> str:
    return (datetime.now(BEIJING) + timedelta(seconds=offset_s)).strftime("%Y-%m-%d %H:%M:%S")


def new_sequence(tag: str) -> str:
    return datetime.now(BEIJING).strftime("%Y%m%d") + hashlib.md5(tag.encode()).hexdigest()


@dataclass(frozen=True)
class Sent:
    """One message as it went over the socket, and the cloud's answer (its body decrypted)."""

    url: str
    service: str
    body: dict[str, Any]
    raw: bytes
    response: httpx.Response

    @property
    def code(self) -> str:
        return str(self.response.json()["header"]["resultCode"])

    @property
    def message(self) -> str:
        return str(self.response.json()["header"]["resultMessage"])

    @property
    def data(self) -> dict[str, Any]:
        answer = self.response.json()
        return dict(json.loads(aes_decrypt(answer["body"]))) if answer.get("body") else {}


@dataclass
class CtripPlatform(ServedPlatform):
    notify_url: str = ""  # the supplier's one URL (the cloud's, or an inbox for adapter-only tests)
    account_id: str = ACCOUNT_ID
    sign_key: str = SECRETS["sign_key"]
    fail_first: int = 0  # notices answered with a retryable failure
    fail_with: str = "0005"  # "0005" / "0007" (Ctrip codes) or "http500"
    taken_anyway: bool = True  # ... after taking the notice all the same (so the next attempt hears 0008)
    refuse: str | None = None  # a code every notice is refused with, for good
    taken: dict[str, dict[str, Any]] = field(default_factory=dict)  # sequenceId -> the notice's body
    notices: list[dict[str, Any]] = field(default_factory=list)  # every notice body received, in order
    raw_notices: list[bytes] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    server: StandIn | None = None

    # ---- Ctrip -> supplier ----

    def envelope(
        self, service: str, body: dict[str, Any], *, request_time: str | None = None, sign: str | None = None
    ) -> bytes:
        cipher = aes_encrypt(json.dumps(body, ensure_ascii=False))
        when = request_time or beijing_now()
        header = {
            "accountId": self.account_id,
            "serviceName": service,
            "requestTime": when,
            "version": "1.0",
            "sign": sign or ctrip_sign(self.account_id, service, when, cipher, "1.0", self.sign_key),
        }
        return json.dumps({"header": header, "body": cipher}, ensure_ascii=False).encode("utf-8")

    def send(self, service: str, body: dict[str, Any], **kw: Any) -> Sent:
        raw = self.envelope(service, body, **kw)
        return self.send_raw(service, body, raw)

    def send_raw(self, service: str, body: dict[str, Any], raw: bytes) -> Sent:
        response = post(self.notify_url, raw, {"content-type": "application/json"})
        return Sent(self.notify_url, service, body, raw, response)

    def resend(self, sent: Sent) -> Sent:
        """Ctrip's compensation: the very same bytes again."""
        return self.send_raw(sent.service, sent.body, sent.raw)

    def retry(self, sent: Sent, offset_s: float = 1) -> Sent:
        """The same body signed again with a fresh requestTime."""
        return self.send(sent.service, sent.body, request_time=beijing_now(offset_s))

    def create_pre_order(
        self, order_id: str, plu: str, day: str, quantity: int = 1, price: float = 180.0, **kw: Any
    ) -> Sent:
        item: dict[str, Any] = {
            "PLU": plu,
            "locale": "zh-CN",
            "distributionChannel": "XCW",
            "useStartDate": day,
            "useEndDate": day,
        }
        item |= {"price": price, "priceCurrency": "CNY", "salePrice": price, "salePriceCurrency": "CNY"}
        item |= {
            "quantity": quantity,
            "passengers": [{"passengerId": f"p{i}", "name": "张三"} for i in range(quantity)],
        }
        contacts = [{"name": "张三", "mobile": "13800138000", "intlCode": "86", "email": "zhangsan@trip.com"}]
        body: dict[str, Any] = {
            "sequenceId": new_sequence(f"create{order_id}"),
            "otaOrderId": order_id,
            "contacts": contacts,
        }
        return self.send("CreatePreOrder", body | {"items": [item]}, **kw)

    def pay_pre_order(self, order_id: str, supplier_order_id: str, plu: str, item_id: str, **kw: Any) -> Sent:
        body: dict[str, Any] = {"sequenceId": new_sequence(f"pay{order_id}"), "otaOrderId": order_id}
        body |= {"supplierOrderId": supplier_order_id, "confirmType": 1, "orderLastConfirmTime": beijing_now(3600)}
        return self.send("PayPreOrder", body | {"items": [{"itemId": item_id, "PLU": plu}]}, **kw)

    def cancel_pre_order(self, order_id: str, **kw: Any) -> Sent:
        return self.send("CancelPreOrder", {"sequenceId": new_sequence(f"cpo{order_id}"), "otaOrderId": order_id}, **kw)

    def cancel_order(
        self, order_id: str, supplier_order_id: str, plu: str, item_id: str, quantity: int, *, confirm_type: int = 2
    ) -> Sent:
        item: dict[str, Any] = {"itemId": item_id, "PLU": plu, "lastConfirmTime": beijing_now(3600), "cancelType": 1}
        item |= {"quantity": quantity, "amount": 180.0 * quantity, "amountCurrency": "CNY"}
        body: dict[str, Any] = {"sequenceId": new_sequence(f"cancel{order_id}{quantity}"), "otaOrderId": order_id}
        body |= {"supplierOrderId": supplier_order_id, "confirmType": confirm_type, "items": [item]}
        return self.send("CancelOrder", body)

    def query_order(self, order_id: str) -> Sent:
        return self.send("QueryOrder", {"sequenceId": new_sequence(f"q{order_id}"), "otaOrderId": order_id})

    # ---- supplier -> Ctrip (OrderConsumedNotice) ----

    def _handle(self, got: Received) -> tuple[int, dict[str, str], bytes]:
        if got.method != "POST" or got.path != NOTICE_PATH:
            return 404, {}, b'{"message":"not found"}'
        self.raw_notices.append(got.body)
        code, text = self._notice(got)
        if code == "http500":
            return 500, {}, b"Internal Server Error"
        return 200, {}, json.dumps({"header": {"resultCode": code, "resultMessage": text}}).encode()

    def _notice(self, got: Received) -> tuple[str, str]:
        try:
            envelope = got.json()
            header, cipher = envelope["header"], envelope["body"]
            body = json.loads(aes_decrypt(cipher))
        except (ValueError, KeyError, TypeError):
            self.problems.append(f"notice: cannot read {got.body[:80]!r}")
            return "0003", "报文解析失败"
        if header.get("accountId") != self.account_id:
            self.problems.append(f"notice: accountId {header.get('accountId')!r}")
            return "0001", "供应商账户为空"
        if header.get("serviceName") != "OrderConsumedNotice" or header.get("version") != "1.0":
            self.problems.append(f"notice: header {header!r}")
            return "0004", "请求方法为空"
        account_id, service, when = (str(header.get(k, "")) for k in ("accountId", "serviceName", "requestTime"))
        if header.get("sign") != ctrip_sign(account_id, service, when, cipher, "1.0", self.sign_key):
            self.problems.append("notice: bad sign")
            return "0002", "签名不正确"
        self.notices.append(body)
        wrong = self._check(header, body)
        if wrong:
            self.problems.append(f"notice: bad {', '.join(wrong)} in {body!r}")
            return "0006", "请求数据异常"
        sequence = body["sequenceId"]
        if self.fail_first > 0:  # Ctrip in trouble: it may have taken the notice all the same
            self.fail_first -= 1
            if self.taken_anyway:
                self.taken[sequence] = body
            return self.fail_with, "系统处理异常"
        if sequence in self.taken:
            return "0008", "携程处理批次流水号已存在"
        if self.refuse is not None:
            return self.refuse, "携程订单号不存在" if self.refuse == "5001" else "refused"
        self.taken[sequence] = body
        return "0000", "success"

    @staticmethod
    def _check(header: dict[str, Any], body: dict[str, Any]) -> list[str]:
        try:
            datetime.strptime(str(header.get("requestTime")), "%Y-%m-%d %H:%M:%S")
            time_ok = True
        except ValueError:
            time_ok = False
        items = body.get("items")
        items_ok = (
            isinstance(items, list)
            and bool(items)
            and all(
                isinstance(i, dict)
                and isinstance(i.get("itemId"), str)
                and isinstance(i.get("useQuantity"), int)
                and isinstance(i.get("quantity"), int)
                and 0 < i["useQuantity"] <= i["quantity"]
                and all(isinstance(v, dict) and isinstance(v.get("voucherId"), str) for v in i.get("vouchers", []))
                for i in items
            )
        )
        checks = (
            ("requestTime", time_ok),
            ("sequenceId", isinstance(body.get("sequenceId"), str) and bool(SEQUENCE.fullmatch(body["sequenceId"]))),
            ("otaOrderId", isinstance(body.get("otaOrderId"), str) and body["otaOrderId"] != ""),
            ("supplierOrderId", isinstance(body.get("supplierOrderId"), str) and body["supplierOrderId"] != ""),
            ("items", items_ok),
        )
        return [name for name, ok in checks if not ok]
