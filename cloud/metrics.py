"""The cloud's Prometheus metrics: `GET /metrics` on the app root (not under /api/v1).

* Requests: an ASGI middleware counts each request by its route's path template (the route the
  router matched: ``/api/v1/orders/{order_id}``, never the raw path, so ids cannot blow up the
  label set; ``unmatched`` for a path no route has) and times it.
* Business counters (`order`, `payment`, `events`) are one-line hooks in the services. An order or
  payment counts when its transaction commits (an after-commit hook on the session): a request
  that rolls back counts nothing.
* The feed head of each site is read from `site_feed_heads` (one row per site) at scrape time.

Token (`Settings.metrics_token_file`, which wins, or `metrics_token`): with one, /metrics needs
``Authorization: Bearer <token>`` (compared in constant time; 401 otherwise). Without one it is
open in development and answers 404 ``metrics_off`` elsewhere: never open by accident.
The token file is read once, when the app is built (a new token needs a restart).

Counters live in this process: with several uvicorn workers each has its own numbers and a scrape
reaches one of them (through the shared port). Run one worker per port and scrape each, or sum with
care; prometheus-client's multiprocess mode is not used.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.settings import Settings

ORDERS = Counter(
    "starfish_cloud_orders", "Orders created and moved along their states", ["channel", "status"], registry=None
)
PAYMENTS = Counter("starfish_cloud_payments", "Payments by provider and result", ["provider", "result"], registry=None)
EVENTS = Counter(
    "starfish_cloud_events",
    "Gate passage events: stored, duplicate, conflict, quarantined; refused (dead letters)",
    ["result"],
    registry=None,
)
_PENDING = "starfish.metrics_pending"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# --- hooks the services call ----------------------------------------------------------------


def _on_commit(session: Session, bump: Callable[[], None]) -> None:
    session.info.setdefault(_PENDING, []).append(bump)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    for bump in session.info.pop(_PENDING, ()):
        bump()


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def order(session: Session, channel: str, status: str) -> None:
    """An order was created (``created``) or reached `status`; counted when the session commits."""
    _on_commit(session, ORDERS.labels(channel, status).inc)


def payment(session: Session, provider: str, result: str) -> None:
    """A payment was recorded with `result` (pending, succeeded, late); counted when the session commits."""
    _on_commit(session, PAYMENTS.labels(provider, result).inc)


class Batch(Protocol):
    """What one committed batch of gate messages did (`cloud.sync.service.Stored`)."""

    new: int
    duplicates: int
    conflicts: int
    quarantined: int
    dead_letters: int


def events(batch: Batch) -> None:
    """Count the events of a committed batch: stored, duplicate, conflict, quarantined, refused (dead letters)."""
    for result, n in (
        ("stored", batch.new),
        ("duplicate", batch.duplicates),
        ("conflict", batch.conflicts),
        ("quarantined", batch.quarantined),
        ("refused", batch.dead_letters),
    ):
        if n:
            EVENTS.labels(result).inc(n)


# --- the app's side -------------------------------------------------------------------------


class _FeedHeads(Collector):
    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from cloud.sites.models import Site
        from cloud.sync.models import SiteFeedHead

        heads = GaugeMetricFamily(
            "starfish_cloud_feed_head", "Last sequence number of each site's feed", labels=["site"]
        )
        with self._factory() as session:
            rows = session.execute(
                select(Site.code, SiteFeedHead.seq).join(SiteFeedHead, SiteFeedHead.site_id == Site.id)
            )
            for code, seq in rows:
                heads.add_metric([code], seq)
        yield heads


class CloudMetrics:
    """One app's registry: its request metrics, the process's business counters, the feed heads."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self.registry = CollectorRegistry()
        for shared in (ORDERS, PAYMENTS, EVENTS):
            self.registry.register(shared)
        self.requests = Counter(
            "starfish_cloud_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "starfish_cloud_request_seconds",
            "HTTP request time by route template and method",
            ["route", "method"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_FeedHeads(factory))
        self.token = _token(settings)
        self.open = not self.token and settings.environment == "development"

    def endpoint(self, request: Request) -> Response:
        """GET /metrics (sync: the feed-head query runs in the thread pool)."""
        if not self.token and not self.open:
            return _error(404, "metrics_off", "Metrics are off: no token is configured", "未配置令牌，指标已关闭")
        if self.token:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
                return _error(401, "metrics_token", "A valid metrics bearer token is required", "需要有效的指标令牌")
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)


def _token(settings: Settings) -> str:
    if settings.metrics_token_file:
        return Path(settings.metrics_token_file).read_text(encoding="utf-8").strip()
    return settings.metrics_token.get_secret_value().strip()


def _error(status: int, code: str, en: str, zh: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": en, "message_zh": zh}}, status, headers=headers)


class MetricsMiddleware:
    """Counts and times every HTTP request by the matched route's template (pure ASGI: streams pass through)."""

    def __init__(self, app: ASGIApp, metrics: CloudMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._templates: dict[int, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes the app becomes a 500 outside this middleware

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = self._template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.seconds.labels(route, method).observe(time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        """The matched route's full path template (an included router's prefix and its route's path)."""
        route = scope.get("route")
        if route is None:
            return "unmatched"
        found = self._templates.get(id(route))
        if found is None:
            self._templates = _templates(getattr(scope.get("app"), "routes", []))
            found = self._templates.setdefault(id(route), str(getattr(route, "path", "unmatched")))
        return found


def _templates(routes: list[Any], prefix: str = "") -> dict[int, str]:
    """id(route) -> its full path template, through routers included with a prefix (FastAPI keeps their
    routes as they are and puts the original route in the scope)."""
    out: dict[int, str] = {}
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            more = getattr(getattr(r, "include_context", None), "prefix", "") or ""
            out.update(_templates(inner.routes, prefix + more))
        elif isinstance(getattr(r, "path", None), str):
            out[id(r)] = prefix + r.path
    return out


def install(app: Any, factory: sessionmaker[Session], settings: Settings) -> CloudMetrics:
    """Add the request middleware and GET /metrics to the FastAPI app."""
    metrics = CloudMetrics(factory, settings)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # A plain Starlette route: its caller is a Prometheus server with the metrics token, not a staff role.
    app.add_route("/metrics", metrics.endpoint, methods=["GET"], include_in_schema=False)
    return metrics
