"""The demo's cloud: the real FastAPI service on SQLite, on a loopback port, selling through its API.

Until sync exists the gate receives what the cloud sold by a direct call (`hand_to_gate`):
the cloud's public key, its tickets as the gate caches them, and its revocation list.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from cloud.app import create_app
from cloud.deps import Role
from cloud.local_server import live_server
from cloud.migrate import upgrade
from cloud.settings import Settings
from cloud.staff.service import create_staff
from edge.store import GateStore
from models import TicketStatus
from models.credential import public_key_b64

API = "/api/v1"


@dataclass
class DemoCloud:
    base: str
    settings: Settings
    app: Any
    admin: httpx.Client
    cashier: httpx.Client | None = None
    site_id: int = 0
    products: dict[str, int] = field(default_factory=dict)

    def _ok(self, r: httpx.Response) -> Any:
        if r.status_code >= 400:
            raise RuntimeError(f"cloud refused {r.request.method} {r.request.url.path}: {r.status_code} {r.text}")
        return r.json()

    def set_up_resort(self) -> None:
        """A site, two gates and the products, as the resort's admin would through the API."""
        self.site_id = self._ok(self.admin.post(f"{API}/sites", json={"code": "demo", "name": "演示滑雪场"}))["id"]
        for code, name in (("north-1", "北门1号"), ("north-2", "北门2号")):
            self._ok(self.admin.post(f"{API}/sites/{self.site_id}/gates", json={"code": code, "name": name}))
        prices = {"weekday_price_fen": 28000, "weekend_price_fen": 38000, "holiday_price_fen": 45000}
        for code, name, extra in (
            ("day", "全天票", {"kind": "day", "daily_stock": 500}),
            ("punch10", "十次卡", {"kind": "punch", "entries": 10}),
            ("4h", "四小时票", {"kind": "time_window", "window_minutes": 240}),
        ):
            body = {"code": code, "name": name, **extra, **prices}
            self.products[code] = self._ok(self.admin.post(f"{API}/sites/{self.site_id}/products", json=body))["id"]
        password = secrets.token_urlsafe(12)
        self._ok(
            self.admin.post(f"{API}/staff", json={"username": "demo.cashier", "password": password, "role": "cashier"})
        )
        token = self._ok(self.admin.post(f"{API}/auth/token", data={"username": "demo.cashier", "password": password}))
        self.cashier = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {token['access_token']}"})

    def sell(self, product: str, visit: date) -> tuple[int, str]:
        """A ticket-window sale, paid in cash; returns (order id, the ticket's signed QR text)."""
        assert self.cashier is not None
        body = {
            "site_id": self.site_id,
            "channel": "counter",
            "items": [{"product_id": self.products[product], "visit_date": visit.isoformat()}],
        }
        order = self._ok(
            self.cashier.post(f"{API}/orders", json=body, headers={"Idempotency-Key": secrets.token_hex(8)})
        )
        pay = {"method": "cash", "amount_fen": order["total_fen"]}
        self._ok(self.cashier.post(f"{API}/orders/{order['id']}/payments/counter", json=pay))
        [ticket] = self._ok(self.cashier.get(f"{API}/orders/{order['id']}/tickets"))
        return order["id"], ticket["token"]

    def refund(self, order_id: int) -> None:
        assert self.cashier is not None
        tickets = self._ok(self.cashier.get(f"{API}/orders/{order_id}/tickets"))
        body = {"ticket_ids": [t["id"] for t in tickets], "reason": "skier changed plans"}
        self._ok(self.cashier.post(f"{API}/orders/{order_id}/refunds", json=body))

    def hand_to_gate(self, store: GateStore) -> None:
        """What sync will do later, by direct call: keys, tickets and revocations into the gate's store."""
        from cloud.tickets.models import Ticket
        from cloud.tickets.service import wire_ticket

        store.set_keys({self.settings.signing_key_id: public_key_b64(self.settings.signing_key.public_key())})
        with self.app.state.sessionmaker() as session:
            store.upsert_tickets(wire_ticket(t) for t in session.query(Ticket).filter(Ticket.site_id == self.site_id))
        for rev in self._ok(self.admin.get(f"{API}/sites/{self.site_id}/revocations"))["items"]:
            store.set_status(str(rev["ticket_id"]), TicketStatus.REVOKED, rev.get("reason") or "refunded")


@contextmanager
def demo_cloud(folder: Path) -> Iterator[DemoCloud]:
    """The cloud on SQLite in `folder`, served by uvicorn on a free loopback port."""
    url = f"sqlite:///{folder / 'cloud.db'}"
    upgrade(url)
    # A fresh signing key for each demo run: the demo never uses a key that could sign a real ticket.
    settings = Settings(
        environment="development", database_url=url, signing_key_b64=base64.b64encode(os.urandom(32)).decode()
    )
    app = create_app(settings, expiry_every_s=0)
    password = secrets.token_urlsafe(16)
    with app.state.sessionmaker() as session:
        create_staff(session, "demo", "demo.admin", password, Role.ADMIN)
    with live_server(app) as base:
        with httpx.Client(base_url=base, timeout=30) as anon:
            r = anon.post(f"{API}/auth/token", data={"username": "demo.admin", "password": password})
            r.raise_for_status()
        with httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {r.json()['access_token']}"}
        ) as admin:
            cloud = DemoCloud(base=base, settings=settings, app=app, admin=admin)
            try:
                yield cloud
            finally:
                if cloud.cashier is not None:
                    cloud.cashier.close()
