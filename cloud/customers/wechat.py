"""Mini-program login: exchange a wx.login() code for the user's openid (code2Session).

`WeChatLogin` is what the service sees; `HttpWeChatLogin` speaks WeChat's API,
`StaticWeChatLogin` is a fake for logic tests and the demo. Swap the implementation with
`app.dependency_overrides[get_wechat_login]` (see cloud/customers/routes.py).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import httpx

# errcodes of jscode2session that mean "this code is no good", not "WeChat is down"
_BAD_CODE = frozenset({40029, 40163})  # invalid code, code already used
_BLOCKED = frozenset({40226})  # high-risk user blocked by WeChat


class WeChatError(Exception):
    """The login exchange failed."""


class WeChatCodeInvalid(WeChatError):
    """The code is unknown, expired or already used: the mini-program should call wx.login() again."""


class WeChatUserBlocked(WeChatError):
    """WeChat refuses this user (risk control)."""


class WeChatNotConfigured(WeChatError):
    """No appid or app secret: WeChat cannot answer, so it is not asked."""


class WeChatUnavailable(WeChatError):
    """WeChat could not be reached, is busy, rate-limited us, or rejected our app credentials."""


class WeChatLogin(Protocol):
    def code2session(self, code: str) -> tuple[str, str]:
        """(openid, session_key) for a wx.login() code."""
        ...


class HttpWeChatLogin:
    """GET {base_url}/sns/jscode2session with httpx; WeChat answers JSON (often as text/plain)."""

    def __init__(
        self,
        *,
        base_url: str,
        appid: str,
        secret: str,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.appid = appid
        self._secret = secret
        self.timeout_s = timeout_s
        self.transport = transport

    def code2session(self, code: str) -> tuple[str, str]:
        if not self.appid or not self._secret:
            raise WeChatNotConfigured("STARFISH_WECHAT_APPID and STARFISH_WECHAT_APP_SECRET must be set")
        params = {"appid": self.appid, "secret": self._secret, "js_code": code, "grant_type": "authorization_code"}
        try:
            with httpx.Client(timeout=self.timeout_s, transport=self.transport) as client:
                resp = client.get(f"{self.base_url}/sns/jscode2session", params=params)
        except httpx.HTTPError as exc:
            # The URL carries the secret: report the kind of failure, not the request.
            raise WeChatUnavailable(f"WeChat login API unreachable: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise WeChatUnavailable(f"WeChat login API answered HTTP {resp.status_code}")
        return _parse(resp.text)


def _parse(text: str) -> tuple[str, str]:
    try:
        body: Any = json.loads(text)
    except ValueError:
        raise WeChatUnavailable("WeChat login API answered something that is not JSON") from None
    if not isinstance(body, dict):
        raise WeChatUnavailable("WeChat login API answered an unexpected JSON shape")
    errcode = body.get("errcode") or 0
    if errcode in _BAD_CODE:
        raise WeChatCodeInvalid(f"errcode {errcode}: {body.get('errmsg', '')}")
    if errcode in _BLOCKED:
        raise WeChatUserBlocked(f"errcode {errcode}: {body.get('errmsg', '')}")
    if errcode:
        raise WeChatUnavailable(f"errcode {errcode}: {body.get('errmsg', '')}")
    openid, session_key = body.get("openid"), body.get("session_key")
    if not isinstance(openid, str) or not 0 < len(openid) <= 64 or not isinstance(session_key, str):
        raise WeChatUnavailable("WeChat login API answered without openid/session_key")
    return openid, session_key


class StaticWeChatLogin:
    """A fake: known codes map to openids, anything else is an invalid code."""

    def __init__(self, codes: dict[str, str]) -> None:
        self.codes = dict(codes)

    def code2session(self, code: str) -> tuple[str, str]:
        if code not in self.codes:
            raise WeChatCodeInvalid(f"unknown code {code}")
        return self.codes[code], "fake-session-key"
