"""The gate's configuration: one typed tree, loaded from YAML, unknown fields refused.

Secrets never live in the YAML: the trusted *public* keys may, since they are not secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.face.rule import (
    BASE_THRESHOLD,
    DEFAULT_MARGIN,
    DEFAULT_TARGET,
    FLOOR,
    IMPOSTOR_MEAN,
    IMPOSTOR_SD,
    FaceRule,
)
from models import GateConfig
from models.addresses import is_loopback
from models.credential import load_public_key
from models.ops import USERNAME_PATTERN
from models.sync_config import SyncConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraConfig(_Section):
    type: Literal["opencv"] = Field(default="opencv", description="Camera driver")
    source: int | str = Field(description="Device index, video file or rtsp:// URL")
    decoder: Literal["zxing", "pyzbar", "opencv", "chain"] = Field(
        default="zxing",
        description="QR decoder: zxing (default, chosen by measurement: see drivers.qr), pyzbar, opencv or chain",
    )
    width: int | None = Field(default=None, ge=16, description="Requested frame width")
    height: int | None = Field(default=None, ge=16, description="Requested frame height")


class ScannerConfig(_Section):
    type: Literal["serial"] = Field(default="serial", description="Scanner driver")
    port: str = Field(description="Serial device, e.g. /dev/serial/by-id/usb-...")
    baudrate: int = Field(default=9600, gt=0, description="Baud rate (8N1 unless set below)")
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 2] = 1


class ModbusTcpBarrier(_Section):
    type: Literal["modbus_tcp"] = Field(description="Relay board over Modbus TCP")
    host: str = Field(description="Relay board address")
    port: int = Field(default=502, gt=0, lt=65536)
    device_id: int = Field(default=1, ge=0, le=247, description="Modbus unit / device id")
    open_coil: int = Field(default=0, ge=0, description="Coil that opens the barrier (0-based, on the wire)")
    pulse_ms: int = Field(default=300, ge=0, le=10_000, description="How long the open coil stays on")
    passage_input: int | None = Field(default=None, ge=0, description="Discrete input: passage complete")
    fire_alarm_input: int | None = Field(default=None, ge=0, description="Discrete input: fire alarm")
    timeout_s: float = Field(default=0.5, gt=0, le=10, description="Per-request timeout")
    passage_timeout_s: float = Field(default=8.0, gt=0, description="How long to wait for somebody to pass")


class ModbusRtuBarrier(ModbusTcpBarrier):
    type: Literal["modbus_rtu"] = Field(description="Relay board over Modbus RTU (RS-485)")  # type: ignore[assignment]
    host: str = Field(default="", description="Unused for RTU")
    serial_port: str = Field(description="RS-485 adapter device")
    baudrate: int = Field(default=9600, gt=0)


BarrierConfig = Annotated[ModbusTcpBarrier | ModbusRtuBarrier, Field(discriminator="type")]


class IntakeConfig(_Section):
    """Between the readers and the decisions (`edge.intake`): what one input may ask of the gate."""

    queue_per_input: int = Field(
        default=8, ge=1, le=10_000, description="Reads one input may have waiting; when full, its oldest goes"
    )
    rate_per_s: float = Field(
        default=5.0, gt=0, description="Reads per second one input may send after its burst (a turnstile: ~1/s)"
    )
    burst: int = Field(default=20, ge=1, le=100_000, description="Reads one input may send at once")


class FaceQualityConfig(_Section):
    """Quality gates a face must pass before it is searched (`drivers.face.QualityGates`); failures are counted."""

    min_face_px: int = Field(default=80, ge=20, le=2000, description="Shorter side of the face box, in pixels")
    min_blur: float = Field(default=30.0, ge=0, description="Variance of the Laplacian of the face crop (sharpness)")
    min_brightness: float = Field(default=40.0, ge=0, le=255, description="Mean grey level of the face, lowest")
    max_brightness: float = Field(default=220.0, ge=0, le=255, description="Mean grey level of the face, highest")
    max_yaw_deg: float = Field(default=30.0, gt=0, le=90, description="Head turned left/right at most")
    max_pitch_deg: float = Field(default=25.0, gt=0, le=90, description="Head up/down at most")

    @model_validator(mode="after")
    def _range(self) -> FaceQualityConfig:
        if self.min_brightness >= self.max_brightness:
            raise ValueError("min_brightness must be below max_brightness")
        return self


class FaceRuleConfig(_Section):
    """When a face is the same person (`edge.face.rule.FaceRule`)."""

    target: float = Field(
        default=DEFAULT_TARGET, gt=0, lt=0.5, description="Chance of any false accept per attempt (see edge.face.rule)"
    )
    margin: float = Field(
        default=DEFAULT_MARGIN,
        ge=0,
        lt=1,
        description="The best holder must be this much nearer than the next other one",
    )
    impostor_mean: float = Field(
        default=IMPOSTOR_MEAN, gt=0, lt=2, description="Mean distance between different people (edge.face.rule)"
    )
    impostor_sd: float = Field(default=IMPOSTOR_SD, gt=0, lt=1, description="Its standard deviation")
    floor: float = Field(
        default=FLOOR,
        gt=0,
        le=BASE_THRESHOLD,
        description="Never a threshold below this (the top of the holders' own distances)",
    )
    k: int = Field(default=2, ge=1, le=50, description="The same holder must win k ...")
    m: int = Field(default=3, ge=1, le=50, description="... of the last m frames with a face")

    @model_validator(mode="after")
    def _k_of_m(self) -> FaceRuleConfig:
        if self.k > self.m:
            raise ValueError(f"k ({self.k}) cannot exceed m ({self.m})")
        return self

    def to_rule(self) -> FaceRule:
        """The matcher's rule with these settings."""
        return FaceRule(
            target=self.target,
            margin=self.margin,
            k=self.k,
            m=self.m,
            impostor_mean=self.impostor_mean,
            impostor_sd=self.impostor_sd,
            floor=self.floor,
        )


class FaceConfig(_Section):
    """Face admission for season-pass holders: the camera's frames are matched against the site's templates."""

    enabled: bool = Field(default=True, description="Match faces (false: keep the block, admit no faces)")
    key_file: Path | None = Field(default=None, description="File holding the site's face key (base64)")
    key_env: str | None = Field(default=None, description="Environment variable holding the site's face key")
    detect_width: int = Field(
        default=320,
        ge=160,
        le=4096,
        description="Frames are scaled to this width for detection (never up). HOG finds faces of 80 px and more "
        "at this width: 320 finds faces of 160 px in a 640-wide frame (a skier within about 0.6 m of a 60-degree "
        "lens) in ~10 ms; 640 finds 80 px faces but costs ~30 ms per frame on the 2-core gate (bench.face)",
    )
    upsample: int = Field(default=0, ge=0, le=2, description="HOG upsampling passes (each finds smaller faces, slower)")
    quality: FaceQualityConfig = Field(default_factory=FaceQualityConfig, description="Quality gates")
    rule: FaceRuleConfig = Field(default_factory=FaceRuleConfig, description="Threshold, margin and k of m")
    vote_max_age_s: float = Field(
        default=2.0, gt=0, le=60, description="A frame's vote counts toward k of m for this long"
    )
    readmit_after_s: float = Field(
        default=5.0, gt=0, le=3600, description="An admitted holder is offered again only after this long unseen"
    )

    @model_validator(mode="after")
    def _one_key(self) -> FaceConfig:
        if (self.key_file is None) == (self.key_env is None):
            raise ValueError("name the site's face key with exactly one of key_file or key_env")
        return self


class BreakGlassConfig(_Section):
    """A local technician account for a gate that has never synced (see `WebConfig.break_glass`)."""

    username: str = Field(min_length=3, max_length=64, pattern=USERNAME_PATTERN, description="Login name")
    password_hash: str = Field(
        pattern=r"^\$argon2",
        description="argon2id hash of the password (`starfish gate hash-password`), never the password",
    )


class WebConfig(_Section):
    """The technician page (`edge.web`) and /metrics, served by the daemon on the resort LAN."""

    bind: str = Field(default="127.0.0.1", description="Address to listen on (loopback unless set: the LAN address)")
    port: int = Field(default=8080, gt=0, lt=65536, description="TCP port of the page and /metrics")
    tls_cert: Path | None = Field(default=None, description="PEM certificate: serve HTTPS (with tls_key)")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    plain_http: bool = Field(
        default=False,
        description="Serve plain HTTP on a LAN address (technicians' passwords and cookies cross the LAN in clear); "
        "without it a LAN address needs tls_cert and tls_key (`starfish gate web-cert` makes a pair)",
    )
    hostnames: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        max_length=32,
        description="Other names or addresses the page is reached by (a DNS name, a second address); a request "
        "naming any other host is refused, so a web page elsewhere cannot reach the gate by DNS rebinding",
    )
    break_glass: BreakGlassConfig | None = Field(
        default=None,
        description="Local account that works only until the gate has received the cloud's technician list",
    )
    session_idle_min: float = Field(default=30, gt=0, le=24 * 60, description="A session ends after this idle time")
    session_max_h: float = Field(default=12, gt=0, le=24 * 7, description="... and after this long in any case")
    lockout_after: int = Field(default=5, ge=1, le=100, description="Failed logins of one name before it is locked")
    lockout_min: float = Field(default=15, gt=0, le=24 * 60, description="How long a locked name stays locked")
    metrics_token_file: Path | None = Field(default=None, description="File holding the bearer token for /metrics")
    metrics_token_env: str | None = Field(default=None, description="... or the environment variable holding it")
    lang: Literal["zh-CN", "en"] = Field(default="zh-CN", description="The page's language until a user picks one")

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        if self.bind in WILDCARD_ADDRESSES and not self.hostnames:
            raise ValueError(f"bind {self.bind!r} listens everywhere: name the gate's addresses in hostnames")
        if not is_loopback(self.bind) and self.tls_cert is None and not self.plain_http:
            raise ValueError(
                f"bind {self.bind} is a LAN address: set tls_cert and tls_key (`starfish gate web-cert` makes a "
                "self-signed pair), or plain_http: true where the LAN is trusted"
            )
        if self.metrics_token_file is not None and self.metrics_token_env is not None:
            raise ValueError("name the metrics token with at most one of metrics_token_file or metrics_token_env")
        return self


WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})


def allowed_hosts(web: WebConfig) -> frozenset[str]:
    """The host names a request to the page may carry in `Host` (lower case, no port)."""
    names = {h.lower().strip("[]") for h in web.hostnames}
    if web.bind not in WILDCARD_ADDRESSES:
        names.add(web.bind.lower().strip("[]"))
    if is_loopback(web.bind):
        names |= {"localhost", "127.0.0.1", "::1"}
    return frozenset(names)


class VoucherConfig(_Section):
    """The site's voucher key (`starfish cloud voucher-key`): an unknown plain code of our shape whose check holds
    is a ticket sold moments ago (``not_synced_yet``), not a code that never was (``unknown_ticket``)."""

    key_file: Path | None = Field(default=None, description="File holding the site's voucher key (base64)")
    key_env: str | None = Field(default=None, description="Environment variable holding the site's voucher key")

    @model_validator(mode="after")
    def _one_key(self) -> VoucherConfig:
        if (self.key_file is None) == (self.key_env is None):
            raise ValueError("name the site's voucher key with exactly one of key_file or key_env")
        return self

    def load_key(self) -> bytes:
        """The key from the file or variable named; ValueError naming where it was looked for."""
        import os

        from models.voucher import load_voucher_key

        if self.key_file is not None:
            where = f"vouchers.key_file {self.key_file}"
            try:
                text = self.key_file.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read {where}: {getattr(exc, 'strerror', None) or exc}") from exc
        else:
            where = f"vouchers.key_env {self.key_env}"
            text = os.environ.get(self.key_env or "", "")
        try:
            return load_voucher_key(text)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc


class StoreConfig(_Section):
    path: Path = Field(default=Path("/var/lib/starfish/gate.db"), description="SQLite journal and cache")


class EdgeConfig(_Section):
    """Everything one gate daemon needs."""

    gate: GateConfig
    store: StoreConfig = Field(default_factory=StoreConfig)
    intake: IntakeConfig = Field(default_factory=IntakeConfig, description="Per-input queues and rate limits")
    barrier: BarrierConfig
    camera: CameraConfig | None = None
    scanner: ScannerConfig | None = None
    face: FaceConfig | None = Field(
        default=None, description="Face admission from the camera's frames; none: no face matching"
    )
    sync: SyncConfig | None = Field(
        default=None, description="MQTT sync with the site broker and the cloud; none: a standalone gate"
    )
    vouchers: VoucherConfig | None = Field(
        default=None, description="The site's voucher key; none: an unknown plain code is just unknown_ticket"
    )
    trusted_keys: dict[int, str] = Field(
        default_factory=dict, description="Key id -> base64 Ed25519 public key (verifying only)"
    )
    max_scan_age_s: float = Field(
        default=3.0, gt=0, description="A read that waited longer than this (behind a passage) is dropped"
    )
    input_debounce_s: float = Field(
        default=1.5, ge=0, description="A code still in view is read again only after this pause"
    )
    web: WebConfig | None = Field(default=None, description="The technician page and /metrics; none: not served")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per log line, for a log collector"
    )

    @field_validator("trusted_keys")
    @classmethod
    def _keys_parse(cls, v: dict[int, str]) -> dict[int, str]:
        for key_id, b64 in v.items():
            try:
                load_public_key(b64)
            except ValueError as exc:
                raise ValueError(f"key {key_id}: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _one_identity(self) -> EdgeConfig:
        """The gate is who it syncs as: tokens name the site (`gate.site_id`), events the site and the gate,
        and the cloud and the other gates believe an event only from that gate's own topic."""
        if self.sync is not None and (self.gate.site_id, self.gate.gate_id) != (self.sync.site, self.sync.gate):
            raise ValueError(
                f"gate.site_id/gate_id ({self.gate.site_id}/{self.gate.gate_id}) must equal "
                f"sync.site/gate ({self.sync.site}/{self.sync.gate})"
            )
        return self

    @model_validator(mode="after")
    def _face_needs_camera(self) -> EdgeConfig:
        if self.face is not None and self.face.enabled and self.camera is None:
            raise ValueError("face admission needs a camera block")
        return self


class ConfigError(Exception):
    """The configuration file is missing, not YAML, or has a wrong field (named in the message)."""


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def parse_config(data: object, source: str = "config") -> EdgeConfig:
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source} is not a valid gate configuration:\n{_describe(exc)}") from exc


def load_config(path: str | Path) -> EdgeConfig:
    """Read and validate a gate's YAML configuration."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping at the top level")
    return parse_config(data, str(path))
