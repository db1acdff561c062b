"""Which adapter speaks for a channel, and its account: the database's configuration plus the settings' secrets."""

from __future__ import annotations

import importlib
from functools import cache

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
