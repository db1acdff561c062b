"""WeChat Pay APIv3, JSAPI (the mini-program): signed prepay requests, mini-program pay parameters, and
notifications accepted only after the platform's signature verifies and the AES-256-GCM resource decrypts."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificates
from pydantic import BaseModel, Field, ValidationError

from cloud.errors import DomainError
from cloud.orders.models import Order
from cloud.payments.providers import AwaitingCustomer, Confirmation, Payer
from cloud.settings import Settings

JSAPI_PATH = "/v3/pay/transactions/jsapi"
MAX_CLOCK_SKEW = timedelta(minutes=5)
_UNIX_TIME = re.compile(r"[0-9]{1,12}")  # seconds; 10 digits until the year 2286
MAX_NOTIFY_BYTES = 64 * 1024
PLACEHOLDER_NOTIFY_HOST = "example.invalid"


def sign(key: RSAPrivateKey, message: str) -> str:
    """Base64 RSA-SHA256 (PKCS#1 v1.5), WeChat Pay's signature."""
    return base64.b64encode(key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def verifies(key: RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def serial_key(serial: str) -> int | None:
    """Certificate serials compare as numbers: WeChat writes them in upper-case hex."""
    try:
        return int(serial, 16) if 0 < len(serial) <= 64 else None
    except ValueError:
        return None


def unconfigured(problem: str, problem_zh: str) -> DomainError:
    return DomainError(
        "payment_provider_unconfigured",
        f"WeChat Pay is not configured: {problem}",
        f"微信支付未配置：{problem_zh}",
        status_code=503,
    )


def _rejected(code: str, en: str, zh: str, status_code: int = 401) -> DomainError:
    return DomainError(code, en, zh, status_code=status_code)


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    """The Wechatpay-Timestamp/-Nonce/-Signature/-Serial headers of a notification or response."""

    timestamp: str | None
    nonce: str | None
    signature: str | None
    serial: str | None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> SignedHeaders:
        return cls(
            timestamp=headers.get("Wechatpay-Timestamp"),
            nonce=headers.get("Wechatpay-Nonce"),
            signature=headers.get("Wechatpay-Signature"),
            serial=headers.get("Wechatpay-Serial"),
        )


@dataclass(frozen=True, slots=True)
class WechatPayConfig:
    base_url: str
    appid: str
    mchid: str
    merchant_serial: str
    merchant_key: RSAPrivateKey
    platform_keys: Mapping[int, RSAPublicKey]  # by certificate serial
    api_v3_key: bytes
    notify_url: str
    timezone: ZoneInfo

    @classmethod
    def from_settings(cls, settings: Settings) -> WechatPayConfig:
        """The keys and ids from settings; a clear 503 naming what is missing instead of a half-working provider."""
        required = {
            "STARFISH_WECHAT_APPID": settings.wechat_appid,
            "STARFISH_WECHAT_MCHID": settings.wechat_mchid,
            "STARFISH_WECHAT_API_V3_KEY": settings.wechat_api_v3_key.get_secret_value(),
            "STARFISH_WECHAT_MERCHANT_KEY_FILE": settings.wechat_merchant_key_file,
            "STARFISH_WECHAT_MERCHANT_SERIAL": settings.wechat_merchant_serial,
            "STARFISH_WECHAT_PLATFORM_CERT_FILE": settings.wechat_platform_cert_file,
        }
        missing = [name for name, value in required.items() if not value]
        if missing:
            names = ", ".join(missing)
            raise unconfigured(f"set {names}", f"请设置 {names}")
        api_v3_key = settings.wechat_api_v3_key.get_secret_value().encode()
        if len(api_v3_key) != 32:
            raise unconfigured("the APIv3 key must be 32 bytes", "APIv3 密钥必须为 32 字节")
        notify = httpx.URL(settings.wechat_notify_url)
        if settings.environment != "development" and (
            notify.scheme != "https" or notify.host.endswith(PLACEHOLDER_NOTIFY_HOST)
        ):
            raise unconfigured("set STARFISH_WECHAT_NOTIFY_URL to this service's https address", "请设置回调地址")
        return cls(
            base_url=settings.wechat_base_url,
            appid=settings.wechat_appid,
            mchid=settings.wechat_mchid,
            merchant_serial=settings.wechat_merchant_serial,
            merchant_key=_merchant_key(str(settings.wechat_merchant_key_file)),
            platform_keys=_platform_keys(str(settings.wechat_platform_cert_file)),
            api_v3_key=api_v3_key,
            notify_url=settings.wechat_notify_url,
            timezone=ZoneInfo(settings.timezone),
        )


def _stamp(path: str, what: str, what_zh: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError as exc:
        raise unconfigured(f"cannot read the {what} {path}", f"无法读取{what_zh}") from exc


def _merchant_key(path: str) -> RSAPrivateKey:
    return _load_merchant_key(path, _stamp(path, "merchant key", "商户私钥"))


def _platform_keys(path: str) -> Mapping[int, RSAPublicKey]:
    return _load_platform_keys(path, _stamp(path, "platform certificate", "平台证书"))


# Loading an RSA private key checks it, which costs ~80 ms: load once per file version (a replaced file reloads).
@lru_cache(maxsize=4)
def _load_merchant_key(path: str, _mtime_ns: int) -> RSAPrivateKey:
    try:
        with open(path, "rb") as f:
            key = load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError) as exc:
        raise unconfigured(f"cannot read the merchant key {path}", "无法读取商户私钥") from exc
    if not isinstance(key, RSAPrivateKey):
        raise unconfigured(f"{path} is not an RSA private key", "商户私钥不是 RSA 私钥")
    return key


@lru_cache(maxsize=4)
def _load_platform_keys(path: str, _mtime_ns: int) -> Mapping[int, RSAPublicKey]:
    """Every certificate in the file, by serial: during WeChat's certificate rotation both are valid."""
    try:
        with open(path, "rb") as f:
            certs = load_pem_x509_certificates(f.read())
    except (OSError, ValueError) as exc:
        raise unconfigured(f"cannot read the platform certificate {path}", "无法读取平台证书") from exc
    keys = {c.serial_number: k for c in certs if isinstance(k := c.public_key(), RSAPublicKey)}
    if not keys:
        raise unconfigured(f"{path} holds no RSA certificate", "平台证书不是 RSA 证书")
    return keys


class _Resource(BaseModel):
    algorithm: str
    ciphertext: str
    nonce: str
    associated_data: str = ""


class _Envelope(BaseModel):
    id: str
    event_type: str
    resource: _Resource


class _Amount(BaseModel):
    total: int
    currency: str = "CNY"


class _Transaction(BaseModel):
    appid: str
    mchid: str
    out_trade_no: str
    transaction_id: str = Field(min_length=1, max_length=64)
    trade_state: str
    success_time: datetime | None = None
    amount: _Amount


@dataclass(frozen=True, slots=True)
class Notification:
    """A verified, decrypted notification: its nonce (for replay checks) and, if it says paid, the payment."""

    nonce: str
    confirmation: Confirmation | None


class WechatPay:
    """The WeChat Pay provider. Keys load on first use, so an unconfigured service still starts."""

    name = "wechat"

    def __init__(
        self, settings: Settings, *, transport: httpx.BaseTransport | None = None, timeout_s: float = 10.0
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._timeout_s = timeout_s

    @cached_property
    def config(self) -> WechatPayConfig:
        return WechatPayConfig.from_settings(self._settings)

    def start(self, order: Order, payer: Payer, *, now: datetime) -> AwaitingCustomer:
        """Create the prepay order; return the parameters `wx.requestPayment` needs."""
        cfg = self.config
        if not payer.openid:
            raise DomainError(
                "wechat_openid_missing",
                "Sign in with WeChat to pay with WeChat Pay",
                "请先用微信登录再使用微信支付",
                status_code=409,
            )
        if order.total_fen < 1:
            raise DomainError("nothing_to_pay", "This order costs nothing", "该订单无需支付", status_code=409)
        body = {
            "appid": cfg.appid,
            "mchid": cfg.mchid,
            "description": f"滑雪票 {order.number}",
            "out_trade_no": order.number,
            # WeChat refuses to take money after the order would have expired here.
            "time_expire": order.expires_at.astimezone(cfg.timezone).isoformat(timespec="seconds"),
            "notify_url": cfg.notify_url,
            "amount": {"total": order.total_fen, "currency": "CNY"},
            "payer": {"openid": payer.openid},
        }
        prepay_id = self._post(JSAPI_PATH, body, now=now).get("prepay_id")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise DomainError(
                "wechat_pay_bad_response", "WeChat Pay sent no prepay_id", "微信支付未返回预支付单号", status_code=502
            )
        return AwaitingCustomer(
            method="jsapi", amount_fen=order.total_fen, client_params=self.mini_program_params(prepay_id, now=now)
        )

    def authorization(self, method: str, url_path: str, body: bytes, *, timestamp: int, nonce: str) -> str:
        """The `Authorization` header of a merchant request to APIv3."""
        cfg = self.config
        message = f"{method}\n{url_path}\n{timestamp}\n{nonce}\n{body.decode()}\n"
        fields = {
            "mchid": cfg.mchid,
            "nonce_str": nonce,
            "signature": sign(cfg.merchant_key, message),
            "timestamp": str(timestamp),
            "serial_no": cfg.merchant_serial,
        }
        return "WECHATPAY2-SHA256-RSA2048 " + ",".join(f'{k}="{v}"' for k, v in fields.items())

    def mini_program_params(self, prepay_id: str, *, now: datetime) -> dict[str, str]:
        cfg = self.config
        timestamp, nonce, package = str(int(now.timestamp())), secrets.token_hex(16), f"prepay_id={prepay_id}"
        pay_sign = sign(cfg.merchant_key, f"{cfg.appid}\n{timestamp}\n{nonce}\n{package}\n")
        return {"timeStamp": timestamp, "nonceStr": nonce, "package": package, "signType": "RSA", "paySign": pay_sign}

    def _post(self, path: str, payload: Mapping[str, object], *, now: datetime) -> dict[str, object]:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Accept": "application/json", "Content-Type": "application/json", "User-Agent": "starfish-gate/1"}
        with httpx.Client(base_url=self.config.base_url, transport=self._transport, timeout=self._timeout_s) as http:
            request = http.build_request("POST", path, content=body, headers=headers)
            request.headers["Authorization"] = self.authorization(
                "POST", request.url.raw_path.decode(), body, timestamp=int(now.timestamp()), nonce=secrets.token_hex(16)
            )
            try:
                response = http.send(request)
            except httpx.HTTPError as exc:
                raise DomainError(
                    "wechat_pay_unreachable",
                    "WeChat Pay did not answer; try again",
                    "微信支付无响应，请重试",
                    status_code=502,
                ) from exc
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200 or not isinstance(answer, dict):
            reason = answer.get("message", response.reason_phrase) if isinstance(answer, dict) else ""
            raise DomainError(
                "wechat_pay_refused",
                f"WeChat Pay refused the payment: {reason}",
                f"微信支付拒绝了该支付：{reason}",
                status_code=502,
                wechat_code=answer.get("code") if isinstance(answer, dict) else None,
            )
        try:
            self.verify_signed(SignedHeaders.of(response.headers), response.content, now=now)
        except DomainError as exc:
            raise DomainError(
                "wechat_pay_bad_response",
                f"WeChat Pay's answer failed verification: {exc.en}",
                "微信支付应答验签失败",
                status_code=502,
            ) from exc
        return answer

    def verify_signed(self, headers: SignedHeaders, body: bytes, *, now: datetime) -> str:
        """Check a platform signature over `timestamp\\nnonce\\nbody\\n`; returns the nonce."""
        ts, nonce, signature, serial = headers.timestamp, headers.nonce, headers.signature, headers.serial
        if not (ts and nonce and signature and serial):
            raise _rejected("signature_missing", "The message is not signed", "报文未签名")
        key = self.config.platform_keys.get(serial_key(serial) or -1)
        if key is None:
            raise _rejected("unknown_platform_serial", f"No platform certificate {serial}", "未知的平台证书序列号")
        if _UNIX_TIME.fullmatch(ts) is None:  # str.isdigit() takes "²", int() refuses 5,000 digits
            raise _rejected("bad_timestamp", "The timestamp is not a Unix time", "时间戳不是 Unix 时间")
        if abs(now.timestamp() - int(ts)) > MAX_CLOCK_SKEW.total_seconds():
            raise _rejected("stale_notification", "The timestamp is more than 5 minutes off", "时间戳偏差超过 5 分钟")
        if len(nonce) > 64 or not verifies(key, f"{ts}\n{nonce}\n".encode() + body + b"\n", signature):
            raise _rejected("bad_signature", "The signature does not verify", "签名验证失败")
        return nonce

    def verify_notification(self, headers: SignedHeaders, body: bytes, *, now: datetime) -> Notification:
        """Verify and decrypt a payment notification; raises a DomainError for anything not genuine and ours."""
        cfg = self.config  # an unconfigured service says so before judging anything
        if len(body) > MAX_NOTIFY_BYTES:
            raise _rejected("bad_notification", "The notification is too large", "通知报文过大", 413)
        nonce = self.verify_signed(headers, body, now=now)
        try:
            envelope = _Envelope.model_validate_json(body)
        except ValidationError as exc:
            raise _rejected("bad_notification", "The notification is malformed", "通知报文格式错误", 400) from exc
        try:
            transaction = _Transaction.model_validate_json(_decrypt(cfg.api_v3_key, envelope.resource))
        except ValidationError as exc:
            raise _rejected("bad_notification", "The transaction is malformed", "交易报文格式错误", 400) from exc
        if transaction.mchid != cfg.mchid or transaction.appid != cfg.appid:
            raise _rejected("wrong_merchant", "The notification is for another merchant", "通知不属于本商户", 400)
        if envelope.event_type != "TRANSACTION.SUCCESS" or transaction.trade_state != "SUCCESS":
            return Notification(nonce=nonce, confirmation=None)
        if transaction.amount.currency != "CNY":
            currency = transaction.amount.currency
            raise _rejected("amount_mismatch", f"Paid in {currency}, not CNY", f"币种 {currency} 不是人民币", 400)
        return Notification(
            nonce=nonce,
            confirmation=Confirmation(
                order_number=transaction.out_trade_no,
                provider_ref=transaction.transaction_id,
                amount_fen=transaction.amount.total,
                paid_at=_aware(transaction.success_time, cfg.timezone) or now,
            ),
        )


def _aware(when: datetime | None, zone: ZoneInfo) -> datetime | None:
    return when.replace(tzinfo=zone) if when is not None and when.tzinfo is None else when


def _decrypt(api_v3_key: bytes, resource: _Resource) -> bytes:
    """AEAD_AES_256_GCM with the APIv3 key; a tampered ciphertext, nonce or associated data fails the tag."""
    if resource.algorithm != "AEAD_AES_256_GCM":
        raise _rejected("bad_notification", f"Unknown algorithm {resource.algorithm}", "未知的加密算法", 400)
    try:
        return AESGCM(api_v3_key).decrypt(
            resource.nonce.encode(),
            base64.b64decode(resource.ciphertext, validate=True),
            resource.associated_data.encode(),
        )
    except (InvalidTag, binascii.Error, ValueError) as exc:
        raise _rejected("undecryptable_notification", "The notification does not decrypt", "通知解密失败", 400) from exc
