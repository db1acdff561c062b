"""A loopback stand-in of the WeChat Pay platform, with its own keys and self-signed certificates.

It serves `POST /v3/pay/transactions/jsapi` on a real HTTP server thread, refuses requests whose merchant
`Authorization` signature does not verify (as WeChat does, with `SIGN_ERROR`), signs its answers with the
platform key, and builds signed, AES-256-GCM encrypted payment notifications.

Refunds: `POST /v3/refund/domestic/refunds` (one refund per `out_refund_no` however often it is asked for,
never more than the payment), `GET .../refunds/{out_refund_no}`, scripted failures (`refund_failures`), and
`finish_refund`, which settles a refund and sends its notification to `refund_sink` the way WeChat does:
delivered again after a 4xx/5xx answer, twice (`refund_notify = "twice"`), or never (`"never"`).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from cloud.settings import Settings
from models.api import API_PREFIX

JSAPI_PATH = "/v3/pay/transactions/jsapi"
REFUNDS_PATH = "/v3/refund/domestic/refunds"
# Scripted answers to the next refund requests; ACCEPTED_BUT_500 records the refund, then answers SYSTEM_ERROR.
REFUND_FAILURES: dict[str, tuple[int, str, str]] = {
    "NOT_ENOUGH": (403, "NOT_ENOUGH", "基本账户余额不足，请充值后重新发起"),
    "SYSTEM_ERROR": (500, "SYSTEM_ERROR", "系统错误"),
    "ACCEPTED_BUT_500": (500, "SYSTEM_ERROR", "系统错误"),
    "FREQUENCY_LIMITED": (429, "FREQUENCY_LIMITED", "频率限制"),
}
CHINA = timezone(timedelta(hours=8))
_AUTH_FIELD = re.compile(r'(\w+)="([^"]*)"')


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verifies(key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    try:
        key.verify(base64.b64decode(signature_b64), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def self_signed(key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class Prepay:
    """A prepay order the platform accepted."""

    prepay_id: str
    body: dict[str, Any]


@dataclass
class PlatformRefund:
    """A refund as the platform keeps it, by `out_refund_no`."""

    out_refund_no: str
    refund_id: str
    transaction_id: str
    refund_fen: int
    total_fen: int
    notify_url: str
    status: str = "PROCESSING"
    success_time: str | None = None
    create_time: str = field(default_factory=lambda: datetime.now(CHINA).isoformat(timespec="seconds"))

    def answer(self) -> dict[str, Any]:
        """The `Refund` object of the API's answers."""
        answer: dict[str, Any] = {
            "refund_id": self.refund_id,
            "out_refund_no": self.out_refund_no,
            "transaction_id": self.transaction_id,
            "out_trade_no": "",
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": self.create_time,
            "status": self.status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": self.total_fen,
                "refund": self.refund_fen,
                "payer_total": self.total_fen,
                "payer_refund": self.refund_fen,
                "currency": "CNY",
            },
        }
        if self.success_time:
            answer["success_time"] = self.success_time
        return answer


@dataclass
class Notify:
    """One delivery of a notification: headers and body exactly as WeChat would POST them."""

    headers: dict[str, str]
    body: bytes
    transaction_id: str


class WechatPlatform:
    def __init__(self, directory: Path, *, mchid: str = "1900000109", appid: str = "wxd678efh567hg6787") -> None:
        self.mchid = mchid
        self.appid = appid
        self.merchant_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.merchant_serial = f"{x509.random_serial_number():X}"
        self.platform_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.platform_cert = self_signed(self.platform_key, "Tenpay.com stand-in")
        self.platform_serial = f"{self.platform_cert.serial_number:X}"
        self.api_v3_key = secrets.token_hex(16)  # 32 ASCII characters, as the merchant platform issues them
        self.response_key = self.platform_key  # what the platform signs its answers with
        self.merchant_key_file = directory / "apiclient_key.pem"
        self.merchant_key_file.write_bytes(_pem(self.merchant_key))
        self.platform_cert_file = directory / "wechatpay_platform.pem"
        self.platform_cert_file.write_bytes(self.platform_cert.public_bytes(serialization.Encoding.PEM))
        self.prepays: dict[str, Prepay] = {}
        self.refusals: list[str] = []
        self.refunds: dict[str, PlatformRefund] = {}
        self.refund_requests: list[str] = []  # out_refund_no of every refund request received
        self.refund_failures: list[str] = []  # keys of REFUND_FAILURES, consumed one per request
        self.refund_notify: Literal["once", "twice", "never"] = "once"
        self.refund_sink: Callable[[Notify], int] | None = None  # delivers a notification, returns the HTTP status
        self._server: ThreadingHTTPServer | None = None

    # ---- the HTTP side -------------------------------------------------------------------------------------

    def start(self) -> WechatPlatform:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._server.serve_forever, name="wechat-platform", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the platform first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def configure(self, settings: Settings, **overrides: Any) -> Settings:
        """`settings` pointed at this platform, holding the keys a merchant would configure."""
        values: dict[str, Any] = {
            "wechat_base_url": self.base_url,
            "wechat_appid": self.appid,
            "wechat_mchid": self.mchid,
            "wechat_api_v3_key": SecretStr(self.api_v3_key),
            "wechat_merchant_key_file": str(self.merchant_key_file),
            "wechat_merchant_serial": self.merchant_serial,
            "wechat_platform_cert_file": str(self.platform_cert_file),
            "wechat_notify_url": f"https://starfish.test{API_PREFIX}/payments/wechat/notify",
        }
        return settings.model_copy(update={**values, **overrides})

    def accept_prepay(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """What the platform answers a JSAPI prepay request (status, JSON)."""
        problem = self._authorization_problem("POST", path, headers.get("authorization", ""), body)
        if problem:
            self.refusals.append(problem)
            return 401, {"code": "SIGN_ERROR", "message": f"签名错误: {problem}"}
        order = json.loads(body)
        if order.get("mchid") != self.mchid or order.get("appid") != self.appid:
            return 400, {"code": "PARAM_ERROR", "message": "appid和mch_id不匹配"}
        if not order.get("payer", {}).get("openid") or order.get("amount", {}).get("total", 0) < 1:
            return 400, {"code": "PARAM_ERROR", "message": "参数错误"}
        known = self.prepays.get(order["out_trade_no"])
        if known is None or known.body != order:
            known = Prepay(prepay_id=f"wx{secrets.token_hex(16)}", body=order)
            self.prepays[order["out_trade_no"]] = known
        return 200, {"prepay_id": known.prepay_id}

    def _authorization_problem(self, method: str, path: str, authorization: str, body: bytes) -> str | None:
        scheme, _, rest = authorization.partition(" ")
        if scheme != "WECHATPAY2-SHA256-RSA2048":
            return "not a WECHATPAY2-SHA256-RSA2048 Authorization"
        fields = dict(_AUTH_FIELD.findall(rest))
        if fields.get("mchid") != self.mchid or fields.get("serial_no") != self.merchant_serial:
            return "unknown merchant or certificate serial"
        if abs(time.time() - int(fields.get("timestamp", "0"))) > 300:
            return "stale timestamp"
        message = f"{method}\n{path}\n{fields['timestamp']}\n{fields.get('nonce_str', '')}\n".encode() + body + b"\n"
        if not rsa_verifies(self.merchant_key.public_key(), message, fields.get("signature", "")):
            return "signature does not verify"
        return None

    def signed_headers(self, body: bytes, *, key: rsa.RSAPrivateKey | None = None, **fields: str) -> dict[str, str]:
        """Wechatpay-* headers over `body`; `fields` overrides timestamp, nonce or serial."""
        timestamp = fields.get("timestamp", str(int(time.time())))
        nonce = fields.get("nonce", secrets.token_hex(16).upper())
        message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
        return {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": rsa_sign(key or self.platform_key, message),
            "Wechatpay-Serial": fields.get("serial", self.platform_serial),
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        }

    # ---- notifications -------------------------------------------------------------------------------------

    def notification(
        self,
        out_trade_no: str,
        amount_fen: int,
        *,
        transaction_id: str | None = None,
        mchid: str | None = None,
        appid: str | None = None,
        trade_state: str = "SUCCESS",
        tamper: bool = False,
        key: rsa.RSAPrivateKey | None = None,
        **header_fields: str,
    ) -> Notify:
        """A payment notification, encrypted with the APIv3 key and signed by the platform."""
        transaction_id = transaction_id or f"4200{secrets.randbelow(10**24):024d}"
        transaction = {
            "appid": appid or self.appid,
            "mchid": mchid or self.mchid,
            "out_trade_no": out_trade_no,
            "transaction_id": transaction_id,
            "trade_type": "JSAPI",
            "trade_state": trade_state,
            "trade_state_desc": "支付成功" if trade_state == "SUCCESS" else trade_state,
            "bank_type": "OTHERS",
            "attach": "",
            "success_time": datetime.now(CHINA).isoformat(timespec="seconds"),
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "amount": {"total": amount_fen, "payer_total": amount_fen, "currency": "CNY", "payer_currency": "CNY"},
        }
        summary = "支付成功" if trade_state == "SUCCESS" else trade_state
        body = self._envelope("transaction", f"TRANSACTION.{trade_state}", summary, transaction, tamper=tamper)
        return Notify(self.signed_headers(body, key=key, **header_fields), body, transaction_id)

    def _envelope(
        self, original_type: str, event_type: str, summary: str, resource: dict[str, Any], *, tamper: bool = False
    ) -> bytes:
        """A notification body: `resource` encrypted with the APIv3 key (AEAD_AES_256_GCM)."""
        nonce = secrets.token_hex(6)
        ciphertext = AESGCM(self.api_v3_key.encode()).encrypt(
            nonce.encode(), json.dumps(resource, ensure_ascii=False).encode(), original_type.encode()
        )
        if tamper:
            ciphertext = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
        envelope = {
            "id": str(uuid.uuid4()),
            "create_time": datetime.now(CHINA).isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(ciphertext).decode(),
                "associated_data": original_type,
                "nonce": nonce,
            },
        }
        return json.dumps(envelope, ensure_ascii=False).encode()

    # ---- refunds -------------------------------------------------------------------------------------------

    def accept_refund(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """What the platform answers a refund request: one refund per out_refund_no, never over the payment."""
        problem = self._authorization_problem("POST", path, headers.get("authorization", ""), body)
        if problem:
            self.refusals.append(problem)
            return 401, {"code": "SIGN_ERROR", "message": f"签名错误: {problem}"}
        asked = json.loads(body)
        number, amount = asked["out_refund_no"], asked["amount"]
        self.refund_requests.append(number)
        failure = self.refund_failures.pop(0) if self.refund_failures else None
        if failure is not None and failure != "ACCEPTED_BUT_500":
            status, code, message = REFUND_FAILURES[failure]
            return status, {"code": code, "message": message}
        known = self.refunds.get(number)
        if known is None:
            refunded = sum(r.refund_fen for r in self.refunds.values() if r.transaction_id == asked["transaction_id"])
            if refunded + amount["refund"] > amount["total"]:
                return 403, {"code": "INVALID_REQUEST", "message": "申请退款金额超过订单可退金额"}
            known = PlatformRefund(
                out_refund_no=number,
                refund_id=f"5030{secrets.randbelow(10**24):024d}",
                transaction_id=asked["transaction_id"],
                refund_fen=amount["refund"],
                total_fen=amount["total"],
                notify_url=asked.get("notify_url", ""),
            )
            self.refunds[number] = known
        elif known.status == "CLOSED":  # a closed refund asked for again under its own number is tried again
            known.status = "PROCESSING"
        if failure == "ACCEPTED_BUT_500":
            status, code, message = REFUND_FAILURES[failure]
            return status, {"code": code, "message": message}
        return 200, known.answer()

    def query_refund(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        problem = self._authorization_problem("GET", path, headers.get("authorization", ""), b"")
        if problem:
            self.refusals.append(problem)
            return 401, {"code": "SIGN_ERROR", "message": f"签名错误: {problem}"}
        known = self.refunds.get(unquote(path.removeprefix(REFUNDS_PATH + "/").partition("?")[0]))
        if known is None:
            return 404, {"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"}
        return 200, known.answer()

    def finish_refund(self, out_refund_no: str, status: str = "SUCCESS") -> list[int]:
        """The refund ends as `status`; its notification goes out per `refund_notify` (our answers returned)."""
        refund = self.refunds[out_refund_no]
        refund.status = status
        if status == "SUCCESS":
            refund.success_time = datetime.now(CHINA).isoformat(timespec="seconds")
        answers: list[int] = []
        for _ in range({"once": 1, "twice": 2, "never": 0}[self.refund_notify]):
            for _attempt in range(3):  # WeChat delivers again after a 4xx/5xx (15 s, 15 s, 30 s ... later)
                assert self.refund_sink is not None, "set refund_sink to deliver notifications"
                answers.append(self.refund_sink(self.refund_notification(out_refund_no)))
                if answers[-1] < 400:
                    break
        return answers

    def refund_notification(
        self, out_refund_no: str, *, key: rsa.RSAPrivateKey | None = None, tamper: bool = False, **header_fields: str
    ) -> Notify:
        """The refund's notification as it stands now: REFUND.<status>, encrypted and signed."""
        refund = self.refunds[out_refund_no]
        resource: dict[str, Any] = {
            "mchid": self.mchid,
            "out_trade_no": "",
            "transaction_id": refund.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": refund.status,
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": refund.total_fen,
                "refund": refund.refund_fen,
                "payer_total": refund.total_fen,
                "payer_refund": refund.refund_fen,
            },
        }
        if refund.success_time:
            resource["success_time"] = refund.success_time
        body = self._envelope("refund", f"REFUND.{refund.status}", "退款状态变更", resource, tamper=tamper)
        return Notify(self.signed_headers(body, key=key, **header_fields), body, refund.transaction_id)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _handler(platform: WechatPlatform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            if self.path == JSAPI_PATH:
                self._answer(*platform.accept_prepay(self.path, headers, body))
            elif self.path == REFUNDS_PATH:
                self._answer(*platform.accept_refund(self.path, headers, body))
            else:
                self._answer(404, {"code": "NOT_FOUND", "message": "no such API"})

        def do_GET(self) -> None:
            if self.path.startswith(REFUNDS_PATH + "/"):
                self._answer(*platform.query_refund(self.path, {k.lower(): v for k, v in self.headers.items()}))
            else:
                self._answer(404, {"code": "NOT_FOUND", "message": "no such API"})

        def _answer(self, status: int, answer: dict[str, Any]) -> None:
            payload = json.dumps(answer, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Request-ID", str(uuid.uuid4()))
            if status == 200:
                for name, value in platform.signed_headers(payload, key=platform.response_key).items():
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
