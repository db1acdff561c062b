"""Cloud settings from the environment (prefix ``STARFISH_``).

``STARFISH_ENVIRONMENT`` is ``production`` unless set: development must be chosen explicitly
(the demo and the tests do). Outside ``development`` every secret must be set explicitly: the
service refuses to start with a default or missing JWT secret, ticket signing key, key-set
root key or WeChat Pay key, and the message names the variable to set. The development
defaults are published in this file, so they are worth nothing anywhere else.

The face master key (``STARFISH_FACE_KEY_FILE``, base64 of 32 bytes, or ``STARFISH_FACE_KEY_B64``)
seals face templates (`models.face`). Production refuses to start without it; the published development
key works only in development; in ``test`` an unset key leaves face admission off (its endpoints
answer 503 ``face_key_missing``), so tests of other domains need none.

The voucher master key (``STARFISH_VOUCHER_KEY_FILE`` or ``_B64``, the same shape) makes the check group of
OTA tickets' plain codes (`models.voucher`); its published development key is refused outside development.
"""

from __future__ import annotations

import base64
import json
from functools import cached_property
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.addresses import is_loopback
from models.api import API_PREFIX
from models.credential import load_public_key
from models.face import load_face_key
from models.voucher import load_voucher_key

DEV_JWT_SECRET = "development-only-jwt-secret-do-not-use"
# A fixed development signing key, so tickets survive a restart of the dev server. Refused in production.
DEV_SIGNING_KEY_B64 = "c3RhcmZpc2gtZGV2LXNpZ25pbmcta2V5LTMyYnl0ZXM="
DEV_KEYSET_ROOT_KEY_B64 = "c3RhcmZpc2gtZGV2LWtleXNldC1yb290LWtleS0zMmI="
_DEV_KEYS = (DEV_SIGNING_KEY_B64, DEV_KEYSET_ROOT_KEY_B64)
DEV_FACE_KEY_B64 = "c3RhcmZpc2gtZGV2LWZhY2UtbWFzdGVyLWtleS0zMmI="  # seals face templates in development only
DEV_VOUCHER_KEY_B64 = "c3RhcmZpc2gtZGV2LXZvdWNoZXItbWFzdGVyLWtleTI="  # checks voucher codes in development only


DEFAULT_DATABASE_URL = "sqlite:///./starfish-cloud.db"


class DatabaseSettings(BaseSettings):
    """Only the database: for commands that read the registry and sign nothing (`starfish sync broker-config`)."""

    model_config = SettingsConfigDict(env_prefix="STARFISH_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STARFISH_", extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "production"
    database_url: str = Field(default=DEFAULT_DATABASE_URL, description="SQLAlchemy URL")
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_ttl_minutes: int = Field(
        default=12 * 60, gt=0, description="Access tokens' life; clients that refresh can do with e.g. 30"
    )
    refresh_ttl_hours: int = Field(
        default=7 * 24, gt=0, description="A staff sign-in can be refreshed this long; then the password again"
    )
    staff_recheck_s: float = Field(
        default=10.0, ge=0, description="A staff token's account (active, role, forced logout) is read again this often"
    )
    signing_key_b64: SecretStr = Field(
        default=SecretStr(DEV_SIGNING_KEY_B64), description="Ed25519 private key: 32 raw bytes, base64"
    )
    signing_key_file: str | None = Field(default=None, description="Ed25519 private key, PEM file (wins)")
    signing_key_id: int = Field(default=1, ge=0, lt=2**16)
    keyset_root_key_b64: SecretStr = Field(
        default=SecretStr(DEV_KEYSET_ROOT_KEY_B64),
        description="Ed25519 private key that signs the ticket key sets gates install: 32 raw bytes, base64",
    )
    keyset_root_key_file: str | None = Field(default=None, description="The key-set root, PEM file (wins)")
    face_key_file: str | None = Field(
        default=None, description="The face master key: a file holding base64 of 32 bytes (wins over the _B64)"
    )
    face_key_b64: SecretStr = Field(default=SecretStr(""), description="The face master key, base64 of 32 bytes")
    voucher_key_file: str | None = Field(
        default=None, description="The voucher master key: a file holding base64 of 32 bytes (wins over the _B64)"
    )
    voucher_key_b64: SecretStr = Field(
        default=SecretStr(""),
        description="The voucher master key (base64 of 32 bytes): the check group of OTA tickets' plain codes",
    )
    channel_secrets_file: str | None = Field(
        default=None, description="OTA channels' secrets: a JSON file {channel: {name: value}} (wins over the _JSON)"
    )
    channel_secrets_json: SecretStr = Field(
        default=SecretStr(""), description="OTA channels' secrets as JSON {channel: {name: value}}, e.g. douyin"
    )
    channel_calls_every_s: float = Field(
        default=5.0, gt=0, description="How often the OTA platforms' due verify calls are sent"
    )
    order_pending_minutes: int = Field(default=15, gt=0, description="Unpaid orders expire after this")
    verify_undo_minutes: int = Field(default=10, gt=0, description="A handheld verification can be undone this long")
    timezone: str = "Asia/Shanghai"
    # WeChat Pay APIv3 (the mini-program's payment)
    wechat_base_url: str = "https://api.mch.weixin.qq.com"
    wechat_login_url: str = "https://api.weixin.qq.com"
    wechat_appid: str = ""
    wechat_app_secret: SecretStr = SecretStr("")
    wechat_mchid: str = ""
    wechat_api_v3_key: SecretStr = SecretStr("")
    wechat_merchant_key_file: str | None = None
    wechat_merchant_serial: str = ""
    wechat_platform_cert_file: str | None = None
    wechat_notify_url: str = f"https://example.invalid{API_PREFIX}/payments/wechat/notify"
    # Points: the defaults until an admin sets the rules (PUT /points/rules, stored in the database)
    points_per_yuan: int = Field(default=1, ge=0, le=100, description="Points earned per whole yuan paid")
    signin_points: int = Field(default=5, ge=0, le=10_000)
    signin_streak_bonus: int = Field(
        default=10, ge=0, le=100_000, description="Extra points on every 7th consecutive day"
    )
    # Sync (cloud/sync): the MQTT loop runs in every process where STARFISH_MQTT_HOST is set; one of them publishes.
    mqtt_host: str | None = Field(default=None, description="Cloud broker host; unset: no MQTT in this process")
    mqtt_port: int = Field(default=1883, gt=0, lt=65536)
    mqtt_username: str | None = None
    mqtt_password: SecretStr = SecretStr("")
    mqtt_client_id: str = Field(
        default="starfish-cloud", description="Fixed: the broker keeps this session's queued events across restarts"
    )
    mqtt_tls_ca_file: str | None = Field(default=None, description="Speak TLS, trusting this CA (PEM)")
    mqtt_session_expiry_s: int | None = Field(
        default=None,
        ge=0,
        description="How long the broker keeps this process's session (its queued events) while it is away; "
        "unset: 7 days on SQLite (the only cloud process), 300 s on PostgreSQL (cloud.sync.instance)",
    )
    cloud_instance: str = Field(
        default="",
        pattern=r"^([a-z0-9][a-z0-9-]{0,15})?$",
        description="This host's name among several cloud hosts (one per host, fixed across restarts): its MQTT "
        "client id and login get it as a suffix; unset: one host (cloud.sync.instance)",
    )
    cloud_run_dir: str = Field(
        default="",
        description="Where worker processes of one host claim their worker numbers (lock files); unset: "
        "$RUNTIME_DIRECTORY (systemd), else the temp dir",
    )
    sync_poll_seconds: float = Field(
        default=1.0, gt=0, description="The publisher also looks for unpublished changes this often"
    )
    sync_heartbeat_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How often each site's feed head is published (retained): gates count a quiet feed as fresh",
    )
    sync_previous_public_keys: dict[int, str] = Field(
        default_factory=dict, description="Key id -> base64 public key of retired signing keys gates still trust"
    )
    checksum_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="Each site's ticket-set checksum is recomputed this often when its feed moved, for the feed head "
        "(gates compare theirs with it: 'in step')",
    )
    metrics_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token for GET /metrics; unset: /metrics is open in development and off elsewhere",
    )
    metrics_token_file: str | None = Field(default=None, description="File holding the /metrics token (wins)")
    log_format: Literal["text", "json"] = Field(default="text", description="json: one JSON object per log line")

    @field_validator("sync_previous_public_keys")
    @classmethod
    def _public_keys_parse(cls, v: dict[int, str]) -> dict[int, str]:
        for b64 in v.values():
            load_public_key(b64)
        return v

    @model_validator(mode="after")
    def _no_default_secrets_outside_development(self) -> Settings:
        if self.environment == "development":
            return self
        problems = []
        if self.jwt_secret.get_secret_value() in ("", DEV_JWT_SECRET) or len(self.jwt_secret.get_secret_value()) < 32:
            problems.append("STARFISH_JWT_SECRET must be set to a random value of 32+ characters")
        # Either development key in either place is a published key (one left set, or the two swapped).
        if self.signing_key_file is None and self.signing_key_b64.get_secret_value() in _DEV_KEYS:
            problems.append("STARFISH_SIGNING_KEY_FILE or STARFISH_SIGNING_KEY_B64 must be set")
        if self.keyset_root_key_file is None and self.keyset_root_key_b64.get_secret_value() in _DEV_KEYS:
            problems.append(
                "STARFISH_KEYSET_ROOT_KEY_FILE or STARFISH_KEYSET_ROOT_KEY_B64 must be set "
                "(the gates pin its public key as sync.key_root)"
            )
        same_file = self.signing_key_file is not None and self.signing_key_file == self.keyset_root_key_file
        same_b64 = self.signing_key_file is None and self.keyset_root_key_file is None
        if same_file or (same_b64 and self.signing_key_b64 == self.keyset_root_key_b64):
            problems.append("the key-set root must be another key than the ticket signing key")
        face_key: str | None
        try:
            face_key = self._face_key_text()
        except OSError as exc:
            problems.append(f"STARFISH_FACE_KEY_FILE cannot be read: {exc}")
            face_key = None
        if face_key is None:
            pass
        elif not face_key:
            if self.environment == "production":
                problems.append("STARFISH_FACE_KEY_FILE must be set (base64 of 32 random bytes: seals face templates)")
        else:
            try:
                if load_face_key(face_key) == load_face_key(DEV_FACE_KEY_B64):
                    problems.append("STARFISH_FACE_KEY_FILE holds the published development key: set your own")
            except ValueError as exc:
                problems.append(f"STARFISH_FACE_KEY_FILE: {exc}")
        try:
            voucher_key = self._voucher_key_text()
            if voucher_key and load_voucher_key(voucher_key) == load_voucher_key(DEV_VOUCHER_KEY_B64):
                problems.append("STARFISH_VOUCHER_KEY_FILE holds the published development key: set your own")
        except (OSError, ValueError) as exc:
            problems.append(f"STARFISH_VOUCHER_KEY_FILE: {exc}")
        mqtt_login = self.mqtt_username and self.mqtt_password.get_secret_value()
        if self.environment == "production" and self.mqtt_host and not mqtt_login:
            problems.append("STARFISH_MQTT_USERNAME and STARFISH_MQTT_PASSWORD must be set when MQTT is")
        remote_broker = self.mqtt_host is not None and not is_loopback(self.mqtt_host)
        if self.environment == "production" and remote_broker and self.mqtt_tls_ca_file is None:
            problems.append("STARFISH_MQTT_TLS_CA_FILE must be set for a broker on another machine")
        if problems:
            hint = " (or set STARFISH_ENVIRONMENT=development for a local trial with published keys)"
            raise ValueError(f"refusing to start in {self.environment}: " + "; ".join(problems) + hint)
        return self

    def _face_key_text(self) -> str:
        if self.face_key_file:
            with open(self.face_key_file, encoding="ascii") as f:
                return f.read().strip()
        return self.face_key_b64.get_secret_value().strip()

    @cached_property
    def face_key(self) -> bytes | None:
        """The face master key; the published one in development when none is set; None: face admission is off."""
        text = self._face_key_text() or (DEV_FACE_KEY_B64 if self.environment == "development" else "")
        return load_face_key(text) if text else None

    def _voucher_key_text(self) -> str:
        if self.voucher_key_file:
            with open(self.voucher_key_file, encoding="ascii") as f:
                return f.read().strip()
        return self.voucher_key_b64.get_secret_value().strip()

    @cached_property
    def channel_secrets(self) -> dict[str, dict[str, str]]:
        """Each OTA channel's secrets (signing keys, AES keys), never stored in the database; {} when none."""
        if self.channel_secrets_file:
            with open(self.channel_secrets_file, encoding="utf-8") as f:
                text = f.read()
        else:
            text = self.channel_secrets_json.get_secret_value()
        if not text.strip():
            return {}
        data = json.loads(text)
        if not isinstance(data, dict) or not all(
            isinstance(v, dict) and all(isinstance(x, str) for x in v.values()) for v in data.values()
        ):
            raise ValueError("channel secrets must be a JSON object {channel: {name: text}}")
        return {str(k): {str(n): x for n, x in v.items()} for k, v in data.items()}

    @cached_property
    def voucher_key(self) -> bytes | None:
        """The voucher master key; the published one in development when none is set. None: OTA tickets get no
        plain code (their signed QR still admits), as before codes were issued; a start-up without it is allowed
        so that a resort selling no OTA vouchers needs no such key."""
        text = self._voucher_key_text() or (DEV_VOUCHER_KEY_B64 if self.environment == "development" else "")
        return load_voucher_key(text) if text else None

    @cached_property
    def signing_key(self) -> Ed25519PrivateKey:
        return _private_key(self.signing_key_file, self.signing_key_b64, "STARFISH_SIGNING_KEY_B64")

    @cached_property
    def keyset_root_key(self) -> Ed25519PrivateKey:
        return _private_key(self.keyset_root_key_file, self.keyset_root_key_b64, "STARFISH_KEYSET_ROOT_KEY_B64")


def _private_key(pem_file: str | None, b64: SecretStr, name: str) -> Ed25519PrivateKey:
    if pem_file:
        with open(pem_file, "rb") as f:
            key = load_pem_private_key(f.read(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{pem_file} is not an Ed25519 private key")
        return key
    raw = base64.b64decode(b64.get_secret_value())
    if len(raw) != 32:
        raise ValueError(f"{name} must be 32 raw bytes, base64")
    return Ed25519PrivateKey.from_private_bytes(raw)
