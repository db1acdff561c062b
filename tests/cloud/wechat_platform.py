"""A loopback stand-in of the WeChat Pay platform, with its own keys and self-signed certificates.

It serves `POST /v3/pay/transactions/jsapi` on a real HTTP server thread, refuses requests whose merchant
`Authorization` signature does not verify (as WeChat does, with `SIGN_ERROR`), signs its answers with the
platform key, and builds signed, AES-256-GCM encrypted payment notifications.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
        nonce, associated = secrets.token_hex(6), "transaction"
        ciphertext = AESGCM(self.api_v3_key.encode()).encrypt(
            nonce.encode(), json.dumps(transaction).encode(), associated.encode()
        )
        if tamper:
            ciphertext = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
        envelope = {
            "id": str(uuid.uuid4()),
            "create_time": datetime.now(CHINA).isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource",
            "event_type": f"TRANSACTION.{trade_state}",
            "summary": "支付成功" if trade_state == "SUCCESS" else trade_state,
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(ciphertext).decode(),
                "associated_data": associated,
                "nonce": nonce,
            },
        }
        body = json.dumps(envelope, ensure_ascii=False).encode()
        return Notify(self.signed_headers(body, key=key, **header_fields), body, transaction_id)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _handler(platform: WechatPlatform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != JSAPI_PATH:
                status, answer = 404, {"code": "NOT_FOUND", "message": "no such API"}
            else:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, answer = platform.accept_prepay(self.path, headers, body)
            payload = json.dumps(answer).encode()
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
