"""What every route of the page shares: the panel, the config, sessions and lockout, and the checks a
request passes before it reaches the gate (session, origin, CSRF, JSON body)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from edge.config import WebConfig
from edge.web import errors
from edge.web.auth import Lockout, Session, SessionStore, same_origin, same_token
from edge.web.port import GatePanel, LoginSource

log = logging.getLogger(__name__)

COOKIE = "sf_gate_session"
MAX_BODY = 16 * 1024
VERIFY_AT_ONCE = 2  # argon2 verifies in flight (64 MiB each): a login storm cannot starve the gate


@dataclass
class WebState:
    panel: GatePanel
    config: WebConfig
    monotonic: Callable[[], float]
    metrics_token: str | None
    ping_s: float
    sessions: SessionStore = field(init=False)
    lockout: Lockout = field(init=False)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    verifying: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(VERIFY_AT_ONCE))

    def __post_init__(self) -> None:
        c = self.config
        self.sessions = SessionStore(idle_s=c.session_idle_min * 60, max_s=c.session_max_h * 3600)
        self.lockout = Lockout(after=c.lockout_after, window_s=c.lockout_min * 60)

    def apply(self, config: WebConfig) -> None:
        """A reloaded config: session and lockout limits, the break-glass account and the language apply
        at once; bind, port, TLS and the metrics token were read at start and need a restart."""
        self.config = config
        self.follow_config()

    def follow_config(self) -> None:
        """Take the limits from `config` as it is now (a config reload may change it in place)."""
        c = self.config
        self.sessions.configure(idle_s=c.session_idle_min * 60, max_s=c.session_max_h * 3600)
        self.lockout.configure(after=c.lockout_after, window_s=c.lockout_min * 60)

    def account(self, username: str) -> tuple[LoginSource, str | None]:
        """Where this name's password hash comes from: the cloud's list, or the break-glass account while the
        gate has never received that list. None: no such account (the caller still verifies a dummy)."""
        bg = self.config.break_glass
        if not self.panel.has_cloud_technicians() and bg is not None and username == bg.username:
            return "break_glass", bg.password_hash
        return "cloud", self.panel.technician_hash(username)

    def still_allowed(self, s: Session) -> bool:
        """Is the account behind this session still the one that logged in (same source, same hash)?"""
        source, current = self.account(s.username)
        return source == s.source and current is not None and same_token(current, s.password_hash)


def web_state(request: Request) -> WebState:
    st: WebState = request.app.state.web
    st.follow_config()
    return st


async def current_session(request: Request) -> Session:
    """The request's live session, 401 `login_required` otherwise. A cloud technician gone from the gate's
    list (disabled in the cloud, or a new password) loses the session here, at the next request; so does a
    break-glass session once the cloud's list has arrived."""
    st = web_state(request)
    s = st.sessions.get(request.cookies.get(COOKIE), st.monotonic())
    if s is None:
        raise errors.login_required()
    if not st.still_allowed(s):
        st.sessions.drop(s.token)
        log.info("web: session of %s ended: the account is no longer a technician of this gate", s.username)
        await st.panel.journal_action(s.username, "logout", "", False, "session ended: account withdrawn")
        raise errors.login_required()
    return s


def check_origin(request: Request) -> None:
    """A POST that names its origin must come from this page (403 `origin`)."""
    if not same_origin(request.headers.get("origin"), request.url.scheme, request.headers.get("host")):
        raise errors.origin()


async def acting_session(request: Request) -> Session:
    """A POST other than the login: same origin, a live session, and its CSRF token in `X-CSRF-Token`."""
    check_origin(request)
    s = await current_session(request)
    if not same_token(request.headers.get("x-csrf-token"), s.csrf):
        raise errors.csrf()
    return s


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object (`application/json`, at most MAX_BODY bytes)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise errors.WebError(415, "json_required", "Send JSON (application/json)", "请以 JSON 格式提交")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise errors.too_large(MAX_BODY)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise errors.too_large(MAX_BODY)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request("body", "The body is not valid JSON", "请求内容不是有效的 JSON") from exc
    if not isinstance(data, dict):
        raise errors.bad_request("body", "Send a JSON object", "请提交 JSON 对象")
    return data


def load_metrics_token(config: WebConfig) -> str | None:
    """The bearer token of /metrics from its file or environment variable; None: /metrics is off (404).
    An empty or unreadable token turns metrics off (logged), never opens them."""
    token: str | None = None
    if config.metrics_token_file is not None:
        try:
            token = config.metrics_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            log.error("web: metrics token file %s unreadable (%s): /metrics is off", config.metrics_token_file, exc)
            return None
    elif config.metrics_token_env is not None:
        token = os.environ.get(config.metrics_token_env, "").strip()
    else:
        return None
    if not token:
        log.error("web: the metrics token is empty: /metrics is off")
        return None
    return token
