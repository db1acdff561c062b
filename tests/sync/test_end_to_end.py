"""The whole chain for real: cloud (uvicorn, its MQTT loop) → Mosquitto → gate daemon → back.

Sell at the ticket window → admissible at the gate; the gate's passage reaches the cloud once
and leaves the gate's outbox; refund → denied at the gate.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from cloud.app import create_app
from cloud.deps import Role
from cloud.migrate import upgrade
from cloud.sync.models import GatePassage
from drivers.barrier import FakeBarrier
from edge.config import parse_config
from edge.daemon import GateDaemon
from edge.store import GateStore, GateStoreReader
from harness.api import Api
from harness.cloud import live_server
from harness.cloud_api import Cashier
from harness.keys import KEY_ROOT, cloud_settings
from harness.mosquitto import MosquittoFactory
from harness.processes import wait_until
from models.api import API_PREFIX
from sync.mosquitto import GateAccount, SiteRegistry

API = API_PREFIX
SLOW = 15.0


@dataclass
class Resort:
    app: FastAPI
    base: str
    cashier: Cashier
    site_id: int
    product_id: int
    gate_db: Path
    daemon: GateDaemon
    loop: asyncio.AbstractEventLoop

    def sell(self, days_ahead: int = 0) -> dict[str, Any]:
        order_id, [ticket] = self.cashier.sell(self.product_id, days_ahead=days_ahead)
        return {"order": {"id": order_id}, "ticket": ticket}

    @property
    def gate(self) -> GateStoreReader:
        return GateStoreReader(self.gate_db)

    def scan(self, text: str) -> Any:
        return asyncio.run_coroutine_threadsafe(self.daemon.handle(text.encode(), "test"), self.loop).result(30)


@pytest.fixture
def resort(tmp_path: Path, mosquitto_factory: MosquittoFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Resort]:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    upgrade(url)
    first = cloud_settings(url)
    bootstrap = create_app(first, expiry_every_s=0)
    from fastapi.testclient import TestClient

    with TestClient(bootstrap) as c:
        api = Api(c, bootstrap)
        site = api.as_(Role.ADMIN).post(f"{API}/sites", json={"code": "nanshan", "name": "南山"}).json()
        gate = api.as_(Role.ADMIN).post(f"{API}/sites/{site['id']}/gates", json={"code": "g1", "name": "北门"}).json()
        product = (
            api.as_(Role.ADMIN)
            .post(
                f"{API}/sites/{site['id']}/products",
                json={
                    "code": "day",
                    "name": "全天票",
                    "kind": "day",
                    "weekday_price_fen": 100,
                    "weekend_price_fen": 100,
                    "holiday_price_fen": 100,
                },
            )
            .json()
        )
        cashier_token = api.token(Role.CASHIER)

    registry = SiteRegistry(
        "nanshan", [GateAccount("g1", gate["username"], gate["secret"])], "cloud", "cloud-pw-123456"
    )
    broker = mosquitto_factory(registry)
    settings = cloud_settings(
        url,
        jwt_secret=first.jwt_secret,  # the same cloud as the bootstrap one: its tokens and tickets hold
        signing_key_b64=first.signing_key_b64,
        mqtt_host="127.0.0.1",
        mqtt_port=broker.port,
        mqtt_username="cloud",
        mqtt_password="cloud-pw-123456",
        sync_poll_seconds=0.2,
    )
    app = create_app(settings, expiry_every_s=0)
    with live_server(app) as base:
        monkeypatch.setenv("STARFISH_TEST_GATE_PASSWORD", gate["secret"])
        cfg = parse_config(
            {
                "gate": {"gate_id": "g1", "site_id": "nanshan", "passback_seconds": 0},
                "store": {"path": str(tmp_path / "gate.db")},
                "barrier": {"type": "modbus_tcp", "host": "127.0.0.1", "passage_input": 0, "passage_timeout_s": 1},
                "sync": {
                    "site": "nanshan",
                    "gate": "g1",
                    "broker_host": "127.0.0.1",
                    "broker_port": broker.port,
                    "username": gate["username"],
                    "password_env": "STARFISH_TEST_GATE_PASSWORD",
                    "snapshot_url": base,
                    "key_root": KEY_ROOT,
                    "ack_timeout_s": 2,
                    "status_interval_s": 1,
                },
            }
        )
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        made: dict[str, Any] = {}

        def gate_thread() -> None:
            # The store belongs to the daemon's thread, as in production.
            asyncio.set_event_loop(loop)
            store = GateStore(cfg.store.path)
            made["daemon"] = GateDaemon(cfg, store=store, barrier=FakeBarrier())
            ready.set()
            try:
                loop.run_until_complete(made["daemon"].run())
            finally:
                store.close()

        thread = threading.Thread(target=gate_thread, daemon=True)
        thread.start()
        ready.wait(10)
        daemon = made["daemon"]
        cashier = Cashier(base, cashier_token, site["id"])
        try:
            yield Resort(app, base, cashier, site["id"], product["id"], Path(cfg.store.path), daemon, loop)
        finally:
            cashier.close()
            loop.call_soon_threadsafe(daemon.request_stop)
            thread.join(15)


def test_sold_ticket_is_admissible_at_the_gate_and_its_passage_reaches_the_cloud_once(resort: Resort) -> None:
    sale = resort.sell()
    tid = str(sale["ticket"]["id"])
    wait_until(
        lambda: resort.gate.ticket(tid) is not None,
        "ticket at the gate",
        SLOW,
    )
    handled = resort.scan(sale["ticket"]["token"])
    assert (handled.entry.code, handled.entry.passed) == ("ok", True)

    def stored_in_cloud() -> int:
        with resort.app.state.sessionmaker() as s:
            return s.query(GatePassage).filter(GatePassage.event_id == handled.entry.event_id).count()

    wait_until(lambda: stored_in_cloud() == 1, "passage stored in the cloud", SLOW)
    wait_until(lambda: resort.gate.outbox_depth() == 0, "outbox drained after the ack", SLOW)
    assert stored_in_cloud() == 1


def test_refunded_ticket_is_denied_at_the_gate_after_the_revocation_arrives(resort: Resort) -> None:
    sale = resort.sell(days_ahead=1)  # refunds close when the visit day starts
    tid = str(sale["ticket"]["id"])
    wait_until(
        lambda: resort.gate.ticket(tid) is not None,
        "ticket at the gate",
        SLOW,
    )
    r = resort.cashier.http.post(
        f"{API}/orders/{sale['order']['id']}/refunds", json={"ticket_ids": [sale["ticket"]["id"]]}
    )
    assert r.status_code == 201, r.text
    wait_until(
        lambda: resort.gate.status(tid) == "revoked",
        "revocation at the gate",
        SLOW,
    )
    handled = resort.scan(sale["ticket"]["token"])
    assert (handled.entry.outcome.value, handled.entry.code) == ("deny", "revoked")
