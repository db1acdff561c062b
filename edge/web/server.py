"""Serve the technician page with uvicorn inside the daemon's event loop, as one task.

`WebServer.start()` binds the socket itself (so a port already taken is a `WebServerError` the daemon
logs and lives with, not uvicorn's `sys.exit`), then runs uvicorn on it; uvicorn is kept away from the
daemon's signal handlers and its logging configuration. `stop()` ends the live streams, asks uvicorn to
exit and awaits the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette

from edge.config import WebConfig
from edge.web.app import close_streams

log = logging.getLogger(__name__)

GRACEFUL_S = 3  # a request still running after stop() is cancelled after this long
STARTED_WITHIN_S = 10.0


class WebServerError(Exception):
    """The page cannot be served (address in use, bad address, unreadable TLS files)."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """The daemon owns SIGTERM and SIGINT: uvicorn must not replace its handlers."""
        yield


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise WebServerError(f"cannot serve the page on {host}:{port}: {exc}") from exc
    family, kind, proto, _name, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise WebServerError(f"cannot serve the page on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


class WebServer:
    """The page on `config.bind:config.port`, over TLS when `tls_cert`/`tls_key` are set."""

    def __init__(self, app: Starlette, config: WebConfig) -> None:
        self.app = app
        self.config = config
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int | None:
        """The bound port (None before start)."""
        return None if self._sock is None else int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls_cert is not None else "http"
        host = self.config.bind if ":" not in self.config.bind else f"[{self.config.bind}]"
        return f"{scheme}://{host}:{self.port or self.config.port}"

    async def start(self) -> None:
        """Bind and serve; returns once uvicorn listens. `WebServerError` when the page cannot be served."""
        c = self.config
        uv = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            log_config=None,  # the daemon configured logging (text or JSON); uvicorn only sets its levels
            access_log=False,
            ssl_certfile=str(c.tls_cert) if c.tls_cert is not None else None,
            ssl_keyfile=str(c.tls_key) if c.tls_key is not None else None,
            timeout_graceful_shutdown=GRACEFUL_S,
            server_header=False,
            proxy_headers=False,  # no proxy in front of a gate: the lockout sees the real peer address
        )
        try:
            uv.load()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise WebServerError(f"cannot load the page's TLS certificate or key: {exc}") from exc
        self._sock = _bind(c.bind, c.port)
        self._server = _Server(uv)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="web-server")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTED_WITHIN_S
        while not self._server.started:
            if self._task.done() or loop.time() > deadline:
                await self.stop()
                raise WebServerError(f"the page's server did not start on {c.bind}:{c.port}")
            await asyncio.sleep(0.01)
        log.info("technician page at %s", self.url)

    async def stop(self) -> None:
        """End the live streams, let running requests finish (up to GRACEFUL_S), close the socket."""
        close_streams(self.app)
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            try:
                await self._task
            except (Exception, SystemExit) as exc:  # uvicorn exits its startup by SystemExit
                log.error("web: the page's server ended with %r", exc)
            self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
