"""Log in, log out, who am I: `POST /api/login`, `POST /api/logout`, `GET /api/session`."""

from __future__ import annotations

import asyncio
import logging
import re

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edge.web import errors
from edge.web.auth import Session, verify_password
from edge.web.state import COOKIE, WebState, acting_session, check_origin, current_session, read_json, web_state
from models.ops import USERNAME_PATTERN

log = logging.getLogger(__name__)

MAX_NAME = 64
MAX_PASSWORD = 1024
_NAME = re.compile(USERNAME_PATTERN)


def _session_json(st: WebState, s: Session) -> dict[str, str]:
    return {"username": s.username, "source": s.source, "csrf": s.csrf, "lang": st.config.lang}


def _journal_name(username: str) -> str:
    """A name as the journal keeps it: what was typed when it could be an account, a marker otherwise."""
    return username if _NAME.match(username) and len(username) <= MAX_NAME else "(invalid name)"


async def login(request: Request) -> JSONResponse:
    """Check a technician's name and password; a session cookie and the CSRF token when right."""
    st = web_state(request)
    check_origin(request)
    body = await read_json(request)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not 0 < len(username) <= MAX_NAME:
        raise errors.bad_request("username", "Type your name", "请输入用户名")
    if not isinstance(password, str) or not 0 < len(password) <= MAX_PASSWORD:
        raise errors.bad_request("password", "Type your password", "请输入密码")
    address = request.client.host if request.client else "unknown"
    refusal = st.lockout.check(username, address, st.monotonic())
    if refusal is not None:
        raise errors.locked_out(refusal.retry_after_s)
    if not st.lockout.begin(username, address):
        raise errors.login_busy()
    try:
        return await _check_login(st, username, password, address)
    finally:
        st.lockout.end(username, address)


async def _check_login(st: WebState, username: str, password: str, address: str) -> JSONResponse:
    """One login of this name and from this address at a time (`Lockout.begin`): the lockout is read
    again after waiting for a verify slot, so attempts sent at once are counted one after another."""
    async with st.verifying:
        refusal = st.lockout.check(username, address, st.monotonic())
        if refusal is not None:
            raise errors.locked_out(refusal.retry_after_s)
        source, password_hash = st.account(username)
        ok = await asyncio.to_thread(verify_password, password_hash, password)
    name = _journal_name(username)
    if not ok:
        started = st.lockout.failed(username, address, st.monotonic())
        log.warning("web: failed login for %s from %s", name, address)
        await st.panel.journal_action(name, "login_failed", "", False, f"from {address}")
        minutes = f"{st.config.lockout_min:g} min"
        for scope in started:
            what = f"name {name}" if scope == "name" else f"address {address}"
            log.warning("web: %s locked out for %s", what, minutes)
            await st.panel.journal_action(name, "locked_out", "", False, f"{what} locked for {minutes}")
        if started:
            raise errors.locked_out(int(st.config.lockout_min * 60))
        raise errors.bad_login()

    st.lockout.succeeded(username, address)
    s = st.sessions.create(username, source, password_hash or "", st.monotonic())
    log.info("web: %s logged in (%s) from %s", username, source, address)
    await st.panel.journal_action(username, "login", "", True, f"{source} from {address}")
    response = JSONResponse(_session_json(st, s))
    response.set_cookie(
        COOKIE, s.token, path="/", httponly=True, samesite="strict", secure=st.config.tls_cert is not None
    )
    return response


async def logout(request: Request) -> JSONResponse:
    st = web_state(request)
    s = await acting_session(request)
    st.sessions.drop(s.token)
    log.info("web: %s logged out", s.username)
    await st.panel.journal_action(s.username, "logout", "", True, "")
    response = JSONResponse({"ok": True})
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=st.config.tls_cert is not None)
    return response


async def session(request: Request) -> JSONResponse:
    """Who is logged in, the CSRF token for the page's POSTs, and the page's default language."""
    s = await current_session(request)
    return JSONResponse(_session_json(web_state(request), s))


routes = [
    Route("/api/login", login, methods=["POST"]),
    Route("/api/logout", logout, methods=["POST"]),
    Route("/api/session", session, methods=["GET"]),
]
