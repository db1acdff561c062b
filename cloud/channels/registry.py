"""Which adapter speaks for a channel, and its account: the database's configuration plus the settings' secrets."""

from __future__ import annotations

import importlib
from functools import cache
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from cloud.channels.base import CHANNEL_CODES, ChannelAccount, ChannelAdapter
from cloud.channels.models import Channel
from cloud.settings import Settings

# The secrets each adapter signs (and decrypts) with, by name in `Settings.channel_secrets[code]`: a channel
# missing one is treated as not configured (its notifications are refused, its calls wait).
REQUIRED_SECRETS: dict[str, tuple[str, ...]] = {
    "douyin": ("client_secret",),
    "meituan": ("client_secret",),
    "ctrip": ("sign_key", "aes_key", "aes_iv"),
    "lebingxue": ("secret",),
}


# Where each platform's verify calls may go in production unless the settings pin a `base_url` for the channel
# (its entry in `Settings.channel_secrets`): the hosts the research found published (docs/ota/). 乐冰雪 publishes
# none, so its base URL must be pinned in the settings.
PUBLISHED_HOSTS: dict[str, tuple[str, ...]] = {
    "douyin": ("open.douyin.com",),
    "meituan": ("lvyou.meituan.com",),
    "ctrip": ("ttdopen.ctrip.com", "ttdentry.ctrip.com"),
    "lebingxue": (),
}


def base_url_problem(settings: Settings, code: str, base_url: str) -> str | None:
    """Why verify calls (which carry credentials: Douyin's client_secret fetches its token) may not go to
    `base_url`; None when they may. An admin's setting cannot send them elsewhere: a `base_url` pinned in the
    settings must be matched exactly; without one, production needs https to one of the platform's hosts.
    Development and test allow any URL (loopback stand-ins)."""
    pinned = settings.channel_secrets.get(code, {}).get("base_url")
    if pinned:
        if base_url.rstrip("/") != pinned.rstrip("/"):
            return f"{code}'s base URL is pinned by the settings to {pinned}"
        return None
    if settings.environment in ("development", "test"):
        return None
    parts = urlsplit(base_url)
    if parts.scheme != "https" or (parts.hostname or "") not in PUBLISHED_HOSTS.get(code, ()):
        allowed = ", ".join(PUBLISHED_HOSTS.get(code, ())) or "none published: pin base_url in the settings"
        return f"{code}'s verify calls go over https to {allowed}"
    return None


@cache
def adapter(code: str) -> ChannelAdapter:
    """The channel's adapter (`cloud.channels.<code>:<Code>Adapter`), imported on first use; KeyError if unknown."""
    if code not in CHANNEL_CODES:
        raise KeyError(code)
    module = importlib.import_module(f"cloud.channels.{code}")
    made: ChannelAdapter = getattr(module, f"{code.capitalize()}Adapter")()
    return made


def secrets_of(settings: Settings, code: str) -> dict[str, str] | None:
    """The channel's secrets, or None when one it needs is missing or empty."""
    secrets = settings.channel_secrets.get(code, {})
    if not all(secrets.get(name) for name in REQUIRED_SECRETS.get(code, ())):
        return None
    return dict(secrets)


def account_of(row: Channel | None, code: str, secrets: dict[str, str] | None) -> ChannelAccount:
    """An account from a row (any row, even disabled: answering a refusal needs its config, never its secrets)."""
    return ChannelAccount(
        code=code,
        base_url=(row.base_url if row is not None else "") or "",
        freshness_s=row.freshness_s if row is not None else 600,
        config=dict(row.config or {}) if row is not None else {},
        secrets=secrets or {},
    )


def account(session: Session, settings: Settings, code: str) -> ChannelAccount | None:
    """The enabled channel's account; None when it is unknown, not configured, disabled, or its secrets missing."""
    row = session.get(Channel, code)
    if row is None or not row.enabled:
        return None
    secrets = secrets_of(settings, code)
    if secrets is None:
        return None
    return account_of(row, code, secrets)
