"""A stand-in of 美团门票直连 on loopback: Meituan calling our order endpoints, and its 核销 endpoint.

Signing follows what integrations publish (MWS over METHOD + " " + path + "\\n" + Date, HMAC-SHA1, base64), written
here on its own so that it checks the adapter rather than repeating it. The body field names beyond `orderId` and
`partnerDealId` are the adapter's guesses (see `cloud/channels/meituan.py`). Meituan's resend schedule is not
public: `retry` resends the same body under a fresh Date, as a platform that got no good answer would.

The verify endpoint `POST /rhone/mtp/api/order/consume/notice` checks PartnerId, the MWS signature and the Date,
keeps one result per requestId (a resend gets the same answer), answers 1008 "此券码已被验证" to a new requestId for
quantities already counted, can fail the first K calls (HTTP 500, envelope 500, or "lost": counted, then HTTP 500)
and can refuse for good (`refuse_with`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from tests.cloud.channels.kit import TEST_SECRETS, Received, ServedPlatform, StandIn, post

CONSUME_PATH = "/rhone/mtp/api/order/consume/notice"
PARTNER_ID = "10086"
CLIENT_ID = "mt-client-7"
SECRET = TEST_SECRETS["meituan"]["client_secret"]
CONFIG = {"partner_id": PARTNER_ID, "client_id": CLIENT_ID}


def gmt(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def mws(secret: str, method: str, path: str, date_header: str) -> str:
    digest = hmac.new(secret.encode(), f"{method} {path}\n{date_header}".encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Sent:
    """One notification as sent: enough to send it again byte for byte."""

    url: str
    headers: dict[str, str]
    content: bytes
    response: httpx.Response

    def json(self) -> Any:
        return self.response.json()


@dataclass(frozen=True)
class Consumed:
    """One consume notice the stand-in accepted (signature and Date held)."""

    headers: dict[str, str]
    body: dict[str, Any]


FailMode = Literal["http500", "code500", "lost"]


@dataclass
class MeituanPlatform(ServedPlatform):
    """Meituan towards our cloud (`notify_url(action)`) and Meituan's own 核销 endpoint (`start()` first)."""

    notify_url: Any  # Callable[[str], str]: the cloud's URL of an action
    partner_id: str = PARTNER_ID
    client_id: str = CLIENT_ID
    secret: str = SECRET
    fail_first: int = 0
    fail_mode: FailMode = "http500"
    refuse_with: tuple[int, str] | None = None
    already_on_repeat: bool = False  # a requestId already counted gets 1008 instead of its first answer
    clock_skew_s: int = 300
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))  # Meituan's clock, for our Date
    consumed: list[Consumed] = field(default_factory=list)  # accepted notices (each attempt that got through)
    refused: list[str] = field(default_factory=list)  # why a notice was refused (our signature, Date ...)
    used: dict[str, int] = field(default_factory=dict)  # Meituan order id -> used quantity it counts
    results: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # requestId -> first answer
    attempts: int = 0
    server: StandIn | None = None

    # ---- Meituan -> our cloud ----

    def prepare(
        self,
        action: str,
        body: dict[str, Any],
        *,
        at: datetime | None = None,
        secret: str | None = None,
        content: bytes | None = None,
    ) -> tuple[str, dict[str, str], bytes]:
        """The URL, headers and bytes of a notification, signed as Meituan signs it."""
        url = self.notify_url(action)
        date_header = gmt(at or datetime.now(UTC))
        signature = mws(secret or self.secret, "POST", urlsplit(url).path, date_header)
        headers = {
            "PartnerId": self.partner_id,
            "Date": date_header,
            "Authorization": f"MWS {self.client_id}:{signature}",
            "Content-Type": "application/json; charset=utf-8",
        }
        return url, headers, content if content is not None else self.envelope(body)

    def send(
        self,
        action: str,
        body: dict[str, Any],
        *,
        at: datetime | None = None,
        secret: str | None = None,
        content: bytes | None = None,
    ) -> Sent:
        """Send one request; sent now (no `at`), an answer asking for a resend (code 503: its signature was taken
        by another message in the same second) is resent under a later Date, as Meituan's retry would."""
        when = at or datetime.now(UTC)
        for _ in range(3):
            url, headers, raw = self.prepare(action, body, at=when, secret=secret, content=content)
            sent = Sent(url, headers, raw, post(url, raw, headers))
            if at is not None or sent.response.json().get("code") != 503:
                return sent
            when += timedelta(seconds=1)
        return sent

    def envelope(self, body: dict[str, Any]) -> bytes:
        return json.dumps({"partnerId": int(self.partner_id), "body": body}, ensure_ascii=False).encode()

    def resend(self, sent: Sent) -> Sent:
        """The same request again, byte for byte (a resend after a lost answer)."""
        return Sent(sent.url, sent.headers, sent.content, post(sent.url, sent.content, sent.headers))

    def retry(self, sent: Sent, *, at: datetime | None = None) -> Sent:
        """The same body under a fresh Date and signature (Meituan's own later retry)."""
        action = sent.url.rsplit("/", 1)[-1]
        return self.send(action, {}, at=at, content=sent.content)

    def reserialised(self, sent: Sent, **changes: Any) -> Sent:
        """The same headers with the body's JSON re-serialised (keys reordered, spaces) and any field changed:
        someone replaying captured headers (MWS does not sign the body)."""
        data = json.loads(sent.content)
        data["body"] = dict(reversed(list({**data["body"], **changes}.items())))
        raw = json.dumps(dict(reversed(list(data.items()))), ensure_ascii=False, indent=1).encode()
        return Sent(sent.url, sent.headers, raw, post(sent.url, raw, sent.headers))

    def create(
        self,
        order_id: int,
        deal: str,
        quantity: int,
        visit: date | None,
        *,
        unit_price_fen: int | None = None,
        phone: str = "13800138000",
        name: str = "张三",
        at: datetime | None = None,
    ) -> Sent:
        body: dict[str, Any] = {
            "orderId": order_id,
            "partnerDealId": deal,
            "quantity": quantity,
            "contactName": name,
            "contactPhone": phone,
        }
        if visit is not None:
            body["visitDate"] = visit.isoformat()
        if unit_price_fen is not None:
            body["unitPriceFen"] = unit_price_fen
        return self.send("create", body, at=at)

    def pay(self, order_id: int, *, at: datetime | None = None) -> Sent:
        return self.send("pay", {"orderId": order_id, "payTime": "2026-12-20 10:00:00"}, at=at)

    def refund(self, order_id: int, refund_id: str, *, quantity: int | None = None, at: datetime | None = None) -> Sent:
        body: dict[str, Any] = {"orderId": order_id, "refundId": refund_id, "reason": "行程变更"}
        if quantity is not None:
            body["quantity"] = quantity
        return self.send("refund", body, at=at)

    def query(self, order_id: int) -> Sent:
        return self.send("query", {"orderId": order_id})

    def cancel(self, order_id: int) -> Sent:
        return self.send("cancel", {"orderId": order_id})

    # ---- our cloud -> Meituan (核销) ----

    def _handle(self, got: Received) -> tuple[int, dict[str, str], bytes]:
        if got.method != "POST" or got.path != CONSUME_PATH:
            return self._answer(404, "not found", http=404)
        problem = self._check_signature(got)
        if problem:
            self.refused.append(problem)
            return self._answer(401, problem)
        try:
            body = got.json()["body"]
            request_id, order_id, used = str(body["requestId"]), str(body["orderId"]), int(body["usedQuantity"])
        except (ValueError, KeyError, TypeError):
            self.refused.append("malformed body")
            return self._answer(400, "参数错误")
        self.consumed.append(Consumed(got.headers, body))
        self.attempts += 1
        if self.attempts <= self.fail_first:
            if self.fail_mode == "lost":
                self._count(request_id, order_id, used)
            return self._answer(500, "系统繁忙", http=500 if self.fail_mode != "code500" else 200)
        if self.refuse_with is not None:
            return self._answer(*self.refuse_with)
        if request_id in self.results and self.already_on_repeat:
            return self._answer(1008, "此券码已被验证")
        if request_id in self.results:
            code, reply = self.results[request_id]
            return self._answer(code, "success", reply)
        if used <= self.used.get(order_id, 0):
            return self._answer(1008, "此券码已被验证")
        return self._answer(200, "success", self._count(request_id, order_id, used))

    def _count(self, request_id: str, order_id: str, used: int) -> dict[str, Any]:
        if request_id in self.results:
            return self.results[request_id][1]
        self.used[order_id] = max(used, self.used.get(order_id, 0))
        reply = {"orderId": order_id, "consumeId": f"C{len(self.results) + 1}"}
        self.results[request_id] = (200, reply)
        return reply

    def _check_signature(self, got: Received) -> str:
        if got.headers.get("partnerid") != self.partner_id:
            return "wrong PartnerId"
        date_header = got.headers.get("date", "")
        try:
            sent_at = parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            return "no Date"
        if abs((self.clock() - sent_at).total_seconds()) > self.clock_skew_s:
            return "stale Date"
        expected = f"MWS {self.client_id}:{mws(self.secret, got.method, got.path, date_header)}"
        if not hmac.compare_digest(got.headers.get("authorization", ""), expected):
            return "bad signature"
        return ""

    def _answer(
        self, code: int, describe: str, body: dict[str, Any] | None = None, *, http: int = 200
    ) -> tuple[int, dict[str, str], bytes]:
        envelope = {"code": code, "describe": describe, "partnerId": int(self.partner_id), "body": body or {}}
        return http, {}, json.dumps(envelope, ensure_ascii=False).encode()
