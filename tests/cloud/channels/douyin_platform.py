"""A stand-in of 抖音 生活服务 (三方码) on loopback, from the published field names and signature rules
(`docs/ota/douyin-meituan.md` §1 and §3 "Douyin fake").

As Douyin's SPI client it signs each notification as published (``x-life-sign`` = sha256 hex of
``client_secret&sorted query&http_body=<raw body>``, plus the old md5 ``sign`` in the URL), with the timestamp in
milliseconds, and sends the raw bytes to the cloud over a real socket: `issue` (发券), `refund_apply` (退款申请),
`refund_notice` (退款信息同步), `status_query`; `resend` sends the very same bytes again, `retry` re-signs them with a
fresh timestamp as Douyin's own retries do. It signs with its own code (not the adapter's), so a mistake on
either side shows.

As Douyin's OpenAPI it serves ``POST /oauth/client_token/`` and ``POST /goodlife/v1/fulfilment/certificate/verify/``:
checks the access token, ``poi_id``, ``order_id``, ``codes`` and ``verify_token`` of every call (anything wrong
goes to `problems`), caches answers per ``verify_token``, can fail the first K calls with the documented retryable
message (and still verify the codes, so the next call hears 1208 "already verified"), and can refuse a code for
good.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.cloud.channels.kit import TEST_SECRETS, Received, ServedPlatform, StandIn, post

CLIENT_KEY = "awtestclientkey01"
POI_ID = "7000000000000000001"
SECRET = TEST_SECRETS["douyin"]["client_secret"]
RETRYABLE = "服务器错误,请稍后重试"


def douyin_sign(secret: str, query: dict[str, str], body: bytes) -> tuple[str, str]:
    """(x-life-sign, old sign) as Douyin's doc describes them, written here independently of the adapter."""
    pairs = sorted((k, v) for k, v in query.items() if k != "sign")
    text = secret + "&" + "".join(f"{k}={v}&" for k, v in pairs) + "http_body="
    raw = text.encode() + body
    return hashlib.sha256(raw).hexdigest(), hashlib.md5(raw).hexdigest()


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Sent:
    """One notification as it went over the socket, and the cloud's answer."""

    url: str
    body: bytes
    query: dict[str, str]
    headers: dict[str, str]
    response: httpx.Response

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.response.json()["data"])


@dataclass
class DouyinPlatform(ServedPlatform):
    client_key: str = CLIENT_KEY
    secret: str = SECRET
    poi_id: str = POI_ID
    token_ttl_s: int = 7200
    fail_first: int = 0  # verify calls answered with the retryable error
    verified_anyway: bool = True  # ... after verifying the codes all the same (so the next call hears 1208)
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)  # code -> (result, msg), for good
    tokens: set[str] = field(default_factory=set)
    verified: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> {verify_id, verify_token, ...}
    by_token: dict[str, bytes] = field(default_factory=dict)  # verify_token -> the answer given
    problems: list[str] = field(default_factory=list)
    answers: list[int | str] = field(default_factory=list)  # each verify call's outcome: "error" or a result
    certificate_ids: dict[str, str] = field(default_factory=dict)  # code -> certificate id (from our answers)
    server: StandIn | None = None

    # ---- the OpenAPI side (we -> Douyin) ----

    def calls(self, path: str) -> list[Received]:
        assert self.server is not None
        return [r for r in self.server.received if r.path == path]

    @property
    def verify_calls(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.calls("/goodlife/v1/fulfilment/certificate/verify/")]

    def _handle(self, got: Received) -> tuple[int, dict[str, str], bytes]:
        if got.method == "POST" and got.path == "/oauth/client_token/":
            return self._token(got)
        if got.method == "POST" and got.path == "/goodlife/v1/fulfilment/certificate/verify/":
            return 200, {}, self._verify(got)
        return 404, {}, b'{"message":"not found"}'

    def _token(self, got: Received) -> tuple[int, dict[str, str], bytes]:
        body = got.json()
        if body != {"client_key": self.client_key, "client_secret": self.secret, "grant_type": "client_credential"}:
            self.problems.append(f"client_token: {body!r}")
            data: dict[str, Any] = {"error_code": 10013, "description": "client_key或client_secret错误"}
        else:
            token = "clt." + secrets.token_hex(16)
            self.tokens.add(token)
            data = {"access_token": token, "expires_in": self.token_ttl_s, "error_code": 0, "description": ""}
        return 200, {}, json.dumps({"data": data, "message": "success"}).encode()

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def _verify(self, got: Received) -> bytes:
        def error(code: int, text: str) -> bytes:
            return json.dumps({"data": {}, "extra": {"error_code": code, "description": text}}).encode()

        if got.headers.get("access-token") not in self.tokens:
            return error(2190008, "access_token过期")
        body = got.json()
        token, codes = body.get("verify_token"), body.get("codes")
        wrong = [
            name
            for name, ok in (
                ("verify_token", isinstance(token, str) and 0 < len(token) <= 64),
                ("poi_id", body.get("poi_id") == self.poi_id),
                ("order_id", isinstance(body.get("order_id"), str) and body["order_id"] != ""),
                ("codes", isinstance(codes, list) and codes and all(isinstance(c, str) for c in codes)),
            )
            if not ok
        ]
        if wrong:
            self.problems.append(f"verify: bad {', '.join(wrong)} in {body!r}")
            return error(2100005, "参数不合法")
        if token in self.by_token:
            return self.by_token[token]
        if self.fail_first > 0:
            self.fail_first -= 1
            if self.verified_anyway:
                for code in codes:
                    self.verified.setdefault(code, self._record(body, code))
            self.answers.append("error")
            return error(2100004, RETRYABLE)
        results = []
        for code in codes:
            if code in self.refuse:
                result, msg = self.refuse[code]
                results.append({"result": result, "msg": msg, "code": code})
            elif code in self.verified:
                results.append({"result": 1208, "msg": "券码已核销", "code": code, **self.verified[code]["ids"]})
            else:
                self.verified[code] = self._record(body, code)
                results.append({"result": 0, "msg": "", "code": code, **self.verified[code]["ids"]})
        self.answers.extend(r["result"] for r in results)
        answer = json.dumps({"data": {"verify_results": results}, "extra": {"error_code": 0, "description": ""}})
        self.by_token[token] = answer.encode()
        return answer.encode()

    def _record(self, body: dict[str, Any], code: str) -> dict[str, Any]:
        ids = {
            "verify_id": "v" + secrets.token_hex(6),
            "certificate_id": self.certificate_ids.get(code, "c" + secrets.token_hex(6)),
        }
        return {"ids": ids, "verify_token": body["verify_token"], "order_id": body["order_id"]}

    # ---- the SPI side (Douyin -> us) ----

    def send(self, url: str, body: bytes, *, timestamp_ms: int | None = None, secret: str | None = None) -> Sent:
        query = {"client_key": self.client_key, "timestamp": str(timestamp_ms or now_ms())}
        life, old = douyin_sign(secret or self.secret, query, body)
        query["sign"] = old
        headers = {
            "content-type": "application/json",
            "x-life-clientkey": self.client_key,
            "x-life-sign": life,
            "x-bytedance-logid": secrets.token_hex(12),
        }
        return self._post(url, body, query, headers)

    def _post(self, url: str, body: bytes, query: dict[str, str], headers: dict[str, str]) -> Sent:
        response = post(url, body, headers, query)
        sent = Sent(url, body, query, headers, response)
        if response.status_code == 200 and "certificates" in response.text:
            for cert in sent.data.get("certificates") or []:
                self.certificate_ids[cert["code"]] = cert["certificate_id"]
        return sent

    def resend(self, sent: Sent) -> Sent:
        """The very same request again (same bytes, timestamp and signature)."""
        return self._post(sent.url, sent.body, dict(sent.query), dict(sent.headers))

    def retry(self, sent: Sent, *, timestamp_ms: int | None = None) -> Sent:
        """Douyin's own retry: the same body, signed again with a fresh timestamp."""
        return self.send(sent.url, sent.body, timestamp_ms=timestamp_ms or now_ms() + 1)

    @staticmethod
    def body(payload: dict[str, Any]) -> bytes:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    def issue(
        self,
        url: str,
        order_id: str,
        sku_id: str,
        count: int = 1,
        *,
        third_sku_id: str = "",
        pay_amount: int | None = None,
        certificate_ids: list[str] | None = None,
        start_time: int | None = None,
        **kwargs: Any,
    ) -> Sent:
        """发券: the buyer has paid `count` copies of `sku_id` (valid from `start_time`, default now, 90 days);
        we must answer with our codes."""
        start = start_time or int(time.time())
        payload: dict[str, Any] = {
            "order_id": order_id,
            "count": count,
            "sku": {"sku_id": sku_id, "sku_name": "全天滑雪票", "third_sku_id": third_sku_id, "groupon_type": 1},
            "open_id": "_000" + secrets.token_hex(8),
            "start_time": start,
            "expire_time": start + 90 * 86400,
            "amount": {
                "original_amount": 30000 * count,
                "pay_amount": 28000 * count if pay_amount is None else pay_amount,
                "ticket_amount": 0,
                "merchant_ticket_amount": 0,
            },
            "tourists": [{"name": "张三", "phone": "13800000000", "id_card": ""}],
        }
        if certificate_ids is not None:
            payload["certificate_info_list"] = [
                {"certificate_id": cid, "sku_id": sku_id, "start_time": start, "expire_time": start + 90 * 86400}
                for cid in certificate_ids
            ]
        return self.send(url, self.body(payload), **kwargs)

    def refund_apply(self, url: str, order_id: str, after_sale_id: str, codes: list[str], **kwargs: Any) -> Sent:
        """退款申请 of these codes (one after-sale id); we answer allow or reject."""
        certificates = [{"certificate_id": self.certificate_ids.get(c, ""), "code": c} for c in codes]
        payload = {"order_id": order_id, "after_sale_id": after_sale_id, "certificates": certificates}
        return self.send(url, self.body(payload), **kwargs)

    def refund_notice(self, url: str, order_id: str, after_sale_id: str, codes: list[str], **kwargs: Any) -> Sent:
        """退款信息同步: Douyin refunded these codes itself (24 h auto-approval, customer service)."""
        notices = [{"certificate_id": self.certificate_ids.get(c, ""), "code": c, "total_count": 1} for c in codes]
        payload = {"order_id": order_id, "after_sale_id": after_sale_id, "after_sale_type": 3, "notice_list": notices}
        return self.send(url, self.body(payload), **kwargs)

    def status_query(self, url: str, order_id: str, **kwargs: Any) -> Sent:
        return self.send(url, self.body({"order_id": order_id}), **kwargs)
