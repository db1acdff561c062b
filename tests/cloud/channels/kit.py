"""What every channel's tests share: a platform stand-in served on loopback, the channels' test secrets,
and a cloud served over a real socket with a channel configured.

A stand-in is a plain `http.server` on a free loopback port; each platform's module
(`tests/cloud/channels/<code>_platform.py`) gives it a handler built from the platform's published field
names and signature rules, and uses `post` to send its signed notifications to the cloud over a real socket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.channels.models import Channel, ChannelSku
from cloud.settings import Settings
from cloud.tickets.models import Ticket
from harness.api import Api

# Each channel's secrets as the tests configure them (STARFISH_CHANNEL_SECRETS_JSON); a platform's stand-in
# signs with the same ones. Only a channel's own module and its tests read its entry.
TEST_SECRETS: dict[str, dict[str, str]] = {
    "douyin": {"client_secret": "douyin-test-client-secret"},
    "meituan": {"client_secret": "meituan-test-client-secret"},
    "ctrip": {
        "sign_key": "0123456789abcdef0123456789abcdef",
        "aes_key": "0123456789abcdef",
        "aes_iv": "fedcba9876543210",
    },
    "lebingxue": {"secret": "lebingxue-test-secret"},
}


def secrets_json() -> str:
    return json.dumps(TEST_SECRETS)


@dataclass(frozen=True, slots=True)
class Received:
    """A request the stand-in received, as it came over the socket (header names in lower case)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Received], tuple[int, Mapping[str, str], bytes]]


@dataclass
class StandIn:
    """A platform on loopback: every request is recorded, then answered by `handler`."""

    handler: Handler
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> StandIn:
        stand_in = self

        class _Http(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                got = Received(
                    method=self.command,
                    path=parts.path,
                    query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                stand_in.received.append(got)
                status, headers, body = stand_in.handler(got)
                self.send_response(status)
                for name, value in {"content-type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Http)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"


class ServedPlatform:
    """A platform's stand-in served by a `StandIn`: `start`, `stop` and `base_url` for the classes that answer
    with their own `_handle` (they declare `server: StandIn | None = None`)."""

    server: StandIn | None

    def _handle(self, got: Received) -> tuple[int, Mapping[str, str], bytes]:
        raise NotImplementedError

    def start(self) -> Self:
        self.server = StandIn(self._handle).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def base_url(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.base_url


@contextmanager
def stand_in(handler: Handler) -> Iterator[StandIn]:
    platform = StandIn(handler).start()
    try:
        yield platform
    finally:
        platform.stop()


def post(url: str, body: bytes, headers: Mapping[str, str], params: Mapping[str, str] | None = None) -> httpx.Response:
    """Send a platform's notification to the cloud over a real socket, the raw bytes exactly as signed."""
    return httpx.post(url, content=body, headers=dict(headers), params=dict(params or {}), timeout=10)


@dataclass
class ChannelCloud:
    """A cloud served on loopback (`url`), with an admin `api` for setting up and a database session factory."""

    url: str
    api: Api
    settings: Settings
    sessions: sessionmaker[Session]
    site: dict[str, Any]

    def notify_url(self, code: str, action: str = "") -> str:
        return f"{self.url}/api/v1/channels/{code}/notify" + (f"/{action}" if action else "")

    def configure(
        self,
        code: str,
        *,
        base_url: str,
        skus: Mapping[str, tuple[int, int | None]],
        config: Mapping[str, str] | None = None,
        freshness_s: int = 600,
        enabled: bool = True,
    ) -> None:
        """Configure a channel and map its SKUs ({sku: (product id, channel price in fen or None)}) straight in
        the database, as the admin API would."""
        with self.sessions() as s:
            row = s.get(Channel, code) or Channel(code=code, updated_by="test")
            row.enabled, row.base_url, row.freshness_s, row.config = enabled, base_url, freshness_s, dict(config or {})
            s.add(row)
            s.flush()
            for sku, (product_id, price) in skus.items():
                mapped = s.scalar(select(ChannelSku).where(ChannelSku.channel == code, ChannelSku.sku == sku))
                mapped = mapped or ChannelSku(channel=code, sku=sku)
                mapped.product_id, mapped.price_fen, mapped.active = product_id, price, True
                s.add(mapped)
            s.commit()

    def gate_passage(self, ticket_id: int, *, gate: str = "g1", at: datetime | None = None) -> str | None:
        """A gate of the site admitted the ticket and its passage reached the cloud (stored by the same code the
        MQTT consumer runs); the conflict it was flagged with. This is what triggers a platform's verify call."""
        from cloud.db import utcnow
        from cloud.deps import Role
        from cloud.sync import service as sync_service
        from cloud.sync.inbound import EventIn
        from cloud.sync.models import GatePassage
        from models import Direction, Outcome, PassageEvent

        site_id, site_code = self.site["id"], self.site["code"]
        gates = self.api.as_(Role.ADMIN).get(f"/api/v1/sites/{site_id}/gates").json()
        if gate not in {g["code"] for g in gates}:
            r = self.api.as_(Role.ADMIN).post(f"/api/v1/sites/{site_id}/gates", json={"code": gate, "name": gate})
            assert r.status_code == 201, r.text
        event = PassageEvent(
            gate_id=gate,
            site_id=site_code,
            at=at or utcnow(),
            direction=Direction.IN,
            outcome=Outcome.ADMIT,
            code="ok",
            ticket_id=str(ticket_id),
            passed=True,
            counted=True,
            credential="plain",
        )
        with self.sessions() as session:
            sync_service.store(session, [EventIn(site_code, gate, event)])
            return session.scalar(select(GatePassage.conflict).where(GatePassage.event_id == event.event_id))

    def counts(self) -> tuple[int, int, int]:
        """(orders, tickets, feed changes) in the cloud: what a refused message must leave as it was."""
        from cloud.orders.models import Order
        from cloud.sync.models import FeedChange
        from cloud.tickets.models import Ticket

        with self.sessions() as s:
            return (
                s.scalar(select(func.count()).select_from(Order)) or 0,
                s.scalar(select(func.count()).select_from(Ticket)) or 0,
                s.scalar(select(func.count()).select_from(FeedChange)) or 0,
            )

    def tickets_of(self, channel: str, order_ref: str) -> list[Ticket]:
        """The tickets of the order a platform knows as `order_ref`, in order."""
        from cloud.orders.models import Order
        from cloud.tickets.models import Ticket

        with self.sessions() as s:
            order_id = s.scalar(select(Order.id).where(Order.ota_channel == channel, Order.ota_order_ref == order_ref))
            return list(s.scalars(select(Ticket).where(Ticket.order_id == order_id).order_by(Ticket.id)))

    def feed(self) -> list[dict[str, Any]]:
        """The site's feed changes, in order, each as {"kind", **body}."""
        from cloud.sync.models import FeedChange

        with self.sessions() as s:
            return [{"kind": f.kind, **f.body} for f in s.scalars(select(FeedChange).order_by(FeedChange.seq))]

    def send_due_calls(self, now: datetime | None = None) -> int:
        """Send the verify calls that are due now, as the cloud's background loop does; how many were tried."""
        from cloud.channels.calls import send_due

        with self.sessions() as s:
            return send_due(s, self.settings, now=now)
