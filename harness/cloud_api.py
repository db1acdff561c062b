"""The demo's cloud, spoken to through its API: set up a resort, sell at the ticket window, refund.

`DemoCloud` holds the admin's and a cashier's logins and works against any server of one cloud
(same database, same JWT secret): the in-process server of the single-gate demo (`demo_cloud`,
which hands the gate the cloud's data by direct call) or the cloud process of the whole resort
(`harness.resort`). The signing key is made fresh for each run: a demo never uses a key that could
sign a real ticket.

`Cashier` is the one ticket window of tests, bench and demo: `DemoCloud.sell` sells through it.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import FastAPI

from cloud.app import create_app
from cloud.deps import Role
from cloud.migrate import upgrade
from cloud.settings import Settings
from cloud.staff.service import create_staff
from edge.store import GateStore
from harness.cloud import live_server
from harness.keys import production_env, settings_of
from models import TicketStatus
from models.api import API_PREFIX
from models.credential import public_key_b64
from sync.mosquitto import GateAccount

API = API_PREFIX
TIMEZONE = ZoneInfo("Asia/Shanghai")
GATES = (("north-1", "北门1号"), ("north-2", "北门2号"))


def resort_today() -> date:
    """Today at the resort (visit dates are local days)."""
    return datetime.now(TIMEZONE).date()


@dataclass(frozen=True)
class Sale:
    order_id: int
    ticket_id: int
    token: str  # the signed QR text


def _client(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"})


def _ok(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        raise RuntimeError(f"cloud refused {r.request.method} {r.request.url.path}: {r.status_code} {r.text}")
    return r.json()


@dataclass
class DemoCloud:
    base: str
    admin_token: str
    cashier_token: str = ""
    site_id: int = 0
    site_code: str = ""
    products: dict[str, int] = field(default_factory=dict)
    gates: dict[str, GateAccount] = field(default_factory=dict)  # the gates' own logins (shown once)
    customer_id: int | None = None
    _clients: dict[str, httpx.Client] = field(default_factory=dict, repr=False)
    _till: Cashier | None = field(default=None, repr=False)

    @classmethod
    def bootstrap(cls, app: FastAPI, base: str) -> DemoCloud:
        """Create the demo's admin in the app's database and log in through the API at `base`."""
        password = secrets.token_urlsafe(16)
        with app.state.sessionmaker() as session:
            create_staff(session, "demo", "demo.admin", password, Role.ADMIN)
        token = _ok(httpx.post(f"{base}{API}/auth/token", data={"username": "demo.admin", "password": password}))
        return cls(base=base, admin_token=token["access_token"])

    @property
    def admin(self) -> httpx.Client:
        return self._session("admin", self.admin_token)

    @property
    def till(self) -> Cashier:
        """The ticket window, logged in as the cashier `set_up_site` made."""
        assert self.cashier_token, "set_up_site() first"
        if self._till is None:
            self._till = Cashier(self.base, self.cashier_token, self.site_id)
        return self._till

    @property
    def cashier(self) -> httpx.Client:
        return self.till.http

    def _session(self, who: str, token: str) -> httpx.Client:
        if who not in self._clients:
            self._clients[who] = _client(self.base, token)
        return self._clients[who]

    def at(self, base: str) -> DemoCloud:
        """The same logins and resort against another server of this cloud (same database and JWT secret)."""
        return DemoCloud(
            base,
            self.admin_token,
            self.cashier_token,
            self.site_id,
            self.site_code,
            dict(self.products),
            dict(self.gates),
            self.customer_id,
        )

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self._till is not None:
            self._till.close()
            self._till = None

    def set_up_resort(self, site: str = "demo", gates: tuple[tuple[str, str], ...] = GATES) -> None:
        """The demo's resort: its products, and a customer club whose members hold season passes."""
        today = resort_today()
        prices = {"weekday_price_fen": 28000, "weekend_price_fen": 38000, "holiday_price_fen": 45000}
        season = {
            "season_start": (today - timedelta(days=30)).isoformat(),
            "season_end": (today + timedelta(days=90)).isoformat(),
        }
        products = [
            {"code": code, "name": name, **extra, **prices}
            for code, name, extra in (
                ("day", "全天票", {"kind": "day"}),
                ("punch10", "十次卡", {"kind": "punch", "entries": 10}),
                ("single", "单次票", {"kind": "punch", "entries": 1}),
                ("4h", "四小时票", {"kind": "time_window", "window_minutes": 240}),
                ("season", "季卡", {"kind": "season", **season}),
            )
        ]
        self.set_up_site(site, "演示滑雪场", gates, products)
        self.customer_id = _ok(
            self.cashier.post(f"{API}/customers", json={"phone": "13800138000", "nickname": "雪友俱乐部"})
        )["id"]

    def set_up_site(
        self, site: str, name: str, gates: Sequence[tuple[str, str]], products: Sequence[Mapping[str, Any]]
    ) -> None:
        """A site, its gates (code, name), its products and a cashier, as the resort's admin would through the API."""
        self.site_code = site
        self.site_id = _ok(self.admin.post(f"{API}/sites", json={"code": site, "name": name}))["id"]
        for code, gate_name in gates:
            g = _ok(self.admin.post(f"{API}/sites/{self.site_id}/gates", json={"code": code, "name": gate_name}))
            self.gates[code] = GateAccount(code, g["username"], g["secret"])
        for body in products:
            self.products[body["code"]] = _ok(self.admin.post(f"{API}/sites/{self.site_id}/products", json=body))["id"]
        password = secrets.token_urlsafe(12)
        staff = {"username": "demo.cashier", "password": password, "role": "cashier"}
        _ok(self.admin.post(f"{API}/staff", json=staff))
        token = _ok(self.admin.post(f"{API}/auth/token", data={"username": "demo.cashier", "password": password}))
        self.cashier_token = token["access_token"]

    def sell(self, product: str, visit: date | None = None, *, holder_id: int | None = None) -> Sale:
        """A ticket-window sale, paid in cash (a season pass names its holder, a member of the club)."""
        customer = self.customer_id if holder_id is not None else None
        order_id, [ticket] = self.till.sell(
            self.products[product], visit=visit, holder_id=holder_id, customer_id=customer
        )
        return Sale(order_id, ticket["id"], ticket["token"])

    def refund(self, sale: Sale) -> None:
        self.till.refund(sale.order_id, [sale.ticket_id], reason="skier changed plans")

    def sync_status(self) -> dict[str, Any]:
        """The site's feed head and each gate's last reported status (`GET .../gates/status`)."""
        result: dict[str, Any] = _ok(self.admin.get(f"{API}/sites/{self.site_id}/gates/status", timeout=2))
        return result


@dataclass
class InProcessCloud:
    """The single-gate demo's cloud: the app in this process, whose data a gate can take by direct call."""

    api: DemoCloud
    app: FastAPI
    settings: Settings

    def hand_to_gate(self, store: GateStore) -> None:
        """What sync does in the resort, by direct call: keys, tickets and revocations into the gate's store."""
        from cloud.tickets.models import Ticket
        from cloud.tickets.service import wire_ticket

        store.set_keys({self.settings.signing_key_id: public_key_b64(self.settings.signing_key.public_key())})
        with self.app.state.sessionmaker() as session:
            tickets = session.query(Ticket).filter(Ticket.site_id == self.api.site_id)
            store.upsert_tickets(wire_ticket(t) for t in tickets)
        for rev in _ok(self.api.admin.get(f"{API}/sites/{self.api.site_id}/revocations"))["items"]:
            store.set_status(str(rev["ticket_id"]), TicketStatus.REVOKED, rev.get("reason") or "refunded")


@contextmanager
def demo_cloud(folder: Path) -> Iterator[InProcessCloud]:
    """The cloud on SQLite in `folder`, served by uvicorn in this process on a free loopback port."""
    url = f"sqlite:///{folder / 'cloud.db'}"
    upgrade(url)
    settings = settings_of(production_env(url))
    app = create_app(settings, expiry_every_s=0)
    with live_server(app) as base:
        api = DemoCloud.bootstrap(app, base)
        try:
            yield InProcessCloud(api, app, settings)
        finally:
            api.close()


@dataclass(frozen=True)
class Seeded:
    """What `seed_cloud` created: ids, each gate's login (broker and snapshot) and a cashier's token."""

    site_id: int
    gates: dict[str, tuple[str, str]]  # gate code -> (username, secret)
    products: dict[str, int]  # product code -> id
    cashier_token: str


def seed_cloud(settings: Settings, site: str, gates: Sequence[str], products: Sequence[Mapping[str, Any]]) -> Seeded:
    """Migrate the database, then create the site, its gates and products as an admin would, through the API."""
    upgrade(settings.database_url)
    app = create_app(settings, expiry_every_s=0)
    with live_server(app) as base:
        api = DemoCloud.bootstrap(app, base)
        try:
            api.set_up_site(site, site.title(), [(g, g) for g in gates], products)
        finally:
            api.close()
    logins = {code: (a.username, a.password) for code, a in api.gates.items()}
    return Seeded(api.site_id, logins, dict(api.products), api.cashier_token)


class Cashier:
    """The ticket window, selling through the cloud's API.

    A sale survives the cloud going away mid-request: the order is created under an Idempotency-Key
    and paid only while it is pending, so a retry never sells twice.
    """

    def __init__(self, base: str, token: str, site_id: int) -> None:
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.site_id = site_id

    def close(self) -> None:
        self.http.close()

    def sell(
        self,
        product_id: int,
        quantity: int = 1,
        *,
        days_ahead: int = 0,
        visit: date | None = None,
        holder_id: int | None = None,
        customer_id: int | None = None,
        patience: float = 0.0,
        on_paid: Callable[[], None] | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(order id, its tickets); retries for `patience` seconds while the cloud does not answer.

        `visit`: the visit day, by default today at the resort plus `days_ahead`. `holder_id` (with the
        order's `customer_id`): the holder a season pass names. `on_paid` is called the moment the payment's
        answer arrives, when the sale is committed and its tickets issued: where the bench starts its clock.
        """
        item: dict[str, Any] = {
            "product_id": product_id,
            "visit_date": (visit or resort_today() + timedelta(days=days_ahead)).isoformat(),
            "quantity": quantity,
        }
        body: dict[str, Any] = {"site_id": self.site_id, "channel": "counter", "items": [item]}
        if holder_id is not None:
            item["holder_id"] = holder_id
        if customer_id is not None:
            body["customer_id"] = customer_id
        key = f"sale-{uuid.uuid4()}"
        deadline = time.monotonic() + patience
        while True:
            try:
                return self._sell_once(body, key, on_paid)
            except (httpx.TransportError, _Unavailable):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _sell_once(
        self, body: dict[str, Any], key: str, on_paid: Callable[[], None] | None
    ) -> tuple[int, list[dict[str, Any]]]:
        order = _answer(self.http.post(f"{API}/orders", json=body, headers={"Idempotency-Key": key}))
        if order["status"] == "pending":
            paid = self.http.post(
                f"{API}/orders/{order['id']}/payments/counter",
                json={"method": "cash", "amount_fen": order["total_fen"]},
            )
            if on_paid is not None:
                on_paid()
            if paid.status_code != 409:  # 409: paid by the attempt whose answer was lost
                _answer(paid)
        tickets: list[dict[str, Any]] = _answer(self.http.get(f"{API}/orders/{order['id']}/tickets"))
        assert len(tickets) == body["items"][0]["quantity"], tickets
        return order["id"], tickets

    def refund(self, order_id: int, ticket_ids: Sequence[int], *, reason: str | None = None) -> None:
        body: dict[str, Any] = {"ticket_ids": list(ticket_ids)}
        if reason is not None:
            body["reason"] = reason
        _answer(self.http.post(f"{API}/orders/{order_id}/refunds", json=body))


class _Unavailable(RuntimeError):
    """The cloud answered 5xx (it is starting or stopping): try again."""


def _answer(r: httpx.Response) -> Any:
    """The answer's JSON; `_Unavailable` on 5xx (worth a retry), `RuntimeError` naming the refusal on 4xx."""
    if r.status_code >= 500:
        raise _Unavailable(f"{r.status_code}: {r.text[:200]}")
    return _ok(r)
