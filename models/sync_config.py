"""How a gate reaches its site broker and the cloud: the `sync:` section of a gate's YAML.

Plain pydantic over `models`: reading a gate's configuration loads no MQTT or HTTP library.
"""

from __future__ import annotations

import os
from datetime import datetime
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, FilePath, field_validator, model_validator

from models.addresses import is_loopback
from models.api import API_PREFIX
from models.credential import load_public_key
from models.sync import EVENT_BATCH_MAX

_CODE = r"^[a-z0-9][a-z0-9-]{0,31}$"


class SyncConfig(BaseModel):
    """How one gate reaches its site broker and the cloud's snapshot endpoint."""

    model_config = ConfigDict(extra="forbid")

    site: str = Field(pattern=_CODE, description="Site code in the cloud's registry (topics sf/<site>/...)")
    gate: str = Field(pattern=_CODE, description="This gate's code in the site")
    broker_host: str = Field(description="Site broker address")
    broker_port: int = Field(default=1883, gt=0, lt=65536, description="Site broker port (8883 with TLS)")
    username: str | None = Field(default=None, description="The gate's own broker and snapshot login")
    password_file: FilePath | None = Field(
        default=None, description="File holding the gate's password; else the environment variable below"
    )
    password_env: str = Field(default="STARFISH_SYNC_PASSWORD", description="Environment variable with the password")
    tls_ca: FilePath | None = Field(
        default=None, description="CA certificate: use TLS to the broker and the snapshot URL"
    )
    snapshot_url: str = Field(
        description=f"Cloud base URL; the snapshot is GET {{base}}{API_PREFIX}/sync/sites/{{site}}/snapshot"
    )
    key_root: str = Field(
        description="The key-set root's public key (base64 Ed25519; `starfish cloud key-root` prints it): "
        "the gate installs only ticket keys it signed"
    )
    max_feed_age_s: float = Field(
        default=3600.0, gt=0, description="Refuse plain (unsigned) codes when the ticket feed is older than this"
    )
    feed_gap_grace_s: float = Field(
        default=10.0,
        gt=0,
        description="Fetch a snapshot when the cloud's feed head stays ahead of this gate this long without progress",
    )
    keepalive_s: int = Field(default=30, ge=5, le=600, description="MQTT keepalive; the Last Will fires after 1.5x")
    session_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=60, description="How long the broker keeps this gate's session while it is away"
    )
    receive_maximum: int = Field(
        default=1000, ge=20, le=65535, description="Unacknowledged messages the broker may send this gate"
    )
    publish_window: int = Field(
        default=5000, ge=1, description="Events published and not yet acknowledged by the cloud"
    )
    event_batch: int = Field(
        default=100, ge=1, le=EVENT_BATCH_MAX, description="Most passage events per message when a backlog goes up"
    )
    ack_timeout_s: float = Field(default=30.0, gt=0, description="Republish events the cloud has not confirmed by then")
    status_interval_s: float = Field(default=30.0, gt=0, description="Retained status refresh, besides changes")
    checksum_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="At most this often the gate sums its ticket set for its status (in a worker thread)",
    )
    snapshot_timeout_s: float = Field(default=60.0, gt=0, description="HTTP timeout of the snapshot download")
    reconnect_max_s: int = Field(default=30, ge=1, description="Longest wait between broker reconnect attempts")

    @field_validator("key_root")
    @classmethod
    def _root_loads(cls, v: str) -> str:
        load_public_key(v)
        return v

    @model_validator(mode="after")
    def _secret_never_in_clear(self) -> SyncConfig:
        """The gate's password is its broker login and its snapshot login: it travels only over TLS
        with a pinned CA (`tls_ca`), or to this machine itself."""
        url = urlsplit(self.snapshot_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"snapshot_url must be an http(s) URL with a host, not {self.snapshot_url!r}")
        if url.scheme == "http" and not is_loopback(url.hostname):
            raise ValueError("snapshot_url must use https (with tls_ca) unless the cloud is on this machine")
        if url.scheme == "https" and self.tls_ca is None:
            raise ValueError("an https snapshot_url needs tls_ca: the CA this gate pins for the cloud")
        if self.tls_ca is None and not is_loopback(self.broker_host):
            raise ValueError(
                "a broker on another machine needs tls_ca: the gate's login must not cross the LAN in clear"
            )
        return self

    def load_password(self) -> str | None:
        """The gate's password, from `password_file` or the environment (None: anonymous)."""
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        return os.environ.get(self.password_env)


def stale_feed(last_fresh: datetime | None, now: datetime, max_age_s: float) -> bool:
    """Is the ticket feed too old to admit plain codes on? Never confirmed fresh is stale."""
    if last_fresh is None:
        return True
    return (now - last_fresh).total_seconds() > max_age_s
