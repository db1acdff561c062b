"""The technician page's Starlette app: `build_app(panel, config)`.

Starlette rather than FastAPI: a lighter import on the gate. The app sees the gate only through
`GatePanel` (edge.web.port); the daemon serves it with `edge.web.server.WebServer` in its own loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.config import WebConfig, allowed_hosts
from edge.web import errors, routes_api, routes_auth
from edge.web.port import GatePanel
from edge.web.state import WebState, load_metrics_token

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PING_S = 15.0
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    """The security headers on every response, `Cache-Control: no-store` on the API and /metrics, and a
    JSON 500 (with those headers) for anything a route failed to handle."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if _host_name(Headers(scope=scope).get("host", "")) not in self.hosts:
            # DNS rebinding: a page elsewhere whose name now points here would otherwise be same-origin.
            await errors.wrong_host().response()(scope, receive, send)
            return
        no_store = path.startswith("/api/") or path == "/metrics"
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if no_store:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("web: %s %s failed", scope.get("method"), path)
            if started:
                raise
            await errors.internal().response()(scope, receive, send_with_headers)


def _host_name(host: str) -> str:
    """`Host` without its port, lower case: "10.0.0.20:8080" -> "10.0.0.20", "[::1]:8080" -> "::1"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _page(static_dir: Path, name: str) -> Callable[[Request], Response]:
    def page(_request: Request) -> Response:
        file = static_dir / name
        if not file.is_file():
            raise errors.not_found()
        return FileResponse(file, media_type="text/html")

    return page


async def _web_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.WebError)
    return exc.response()


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return errors.not_found().response()
    if exc.status_code == 405:
        return errors.method_not_allowed().response()
    return errors.error_response(exc.status_code, f"http_{exc.status_code}", str(exc.detail), str(exc.detail))


def build_app(
    panel: GatePanel,
    config: WebConfig,
    *,
    static_dir: Path = STATIC_DIR,
    monotonic: Callable[[], float] = time.monotonic,
    ping_s: float = PING_S,
) -> Starlette:
    """The page and its API for this gate. `monotonic` is the sessions' and lockouts' clock (tests pass their
    own); `ping_s` the quiet interval between the live stream's pings."""
    state = WebState(panel, config, monotonic, load_metrics_token(config), ping_s)
    app = Starlette(
        routes=[
            Route("/", _page(static_dir, "index.html"), methods=["GET"]),
            Route("/login", _page(static_dir, "login.html"), methods=["GET"]),
            Mount("/static", StaticFiles(directory=static_dir, check_dir=False), name="static"),
            *routes_auth.routes,
            *routes_api.routes,
        ],
        middleware=[Middleware(SecurityHeaders, hosts=allowed_hosts(config))],
        exception_handlers={errors.WebError: _web_error, HTTPException: _http_error},
    )
    app.state.web = state
    return app


def web_state_of(app: Starlette) -> WebState:
    state: WebState = app.state.web
    return state


def apply_config(app: Starlette, config: WebConfig) -> None:
    """A reloaded `web:` section: sessions, lockout, break-glass account and language apply at once."""
    web_state_of(app).apply(config)


def close_streams(app: Starlette) -> None:
    """End the live decision streams (before the server stops, so it does not wait on them)."""
    web_state_of(app).closing.set()
