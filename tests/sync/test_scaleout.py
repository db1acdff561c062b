"""Two cloud processes on one PostgreSQL and one broker, as a resort running more than one machine does.

Both sell and both consume the gates' passage events (one MQTT v5 shared subscription, each process its
own persistent session under its own instance id); only the holder of the feed lease publishes the feed.
Kill the publishing one with SIGKILL in the middle of the sales: the other takes the lease over, the feed a
gate receives stays gapless with every sold ticket on it, and every passage event is stored once and
acknowledged, also those the dead process had taken and a gate sent again.
"""

from __future__ import annotations

import base64
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from cloud.settings import Settings
from cloud.sync.instance import logins
from harness.cloud import CloudServer
from harness.cloud_api import Cashier, seed_cloud
from harness.keys import KEYSET_ROOT_B64
from harness.mosquitto import MosquittoFactory, MosquittoProcess
from harness.mqtt import BrokerClient, connect_client
from harness.postgres import PostgresUnavailable, ThrowawayPostgres
from harness.processes import tail, wait_until
from models import Direction, Outcome
from models.messages import PassageEvent
from models.sync import EventAck, FeedMessage, TicketUpsert, event_batch_json
from sync import topics
from sync.mosquitto import GateAccount, SiteRegistry

pytestmark = pytest.mark.scaleout

SITE = "nanshan"
GATES = ("g1", "g2")
CLOUD_LOGIN = ("cloud", "cloud-pw-0123456")
PRODUCTS = [
    {
        "code": "day",
        "name": "全天票",
        "kind": "day",
        "weekday_price_fen": 100,
        "weekend_price_fen": 100,
        "holiday_price_fen": 100,
    }
]
LEADS = "holds the feed lease"  # what a cloud process logs when it takes the lease
SLOW = 30.0
STARTUP = 120.0  # importing the cloud takes seconds, more on a busy machine


@pytest.fixture
def pg() -> Iterator[ThrowawayPostgres]:
    try:
        server = ThrowawayPostgres().start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


class FakeGate:
    """A gate's uplink, reduced: publishes passage events, keeps the acknowledged ids, sends again what stays
    unconfirmed (as `sync.gate.uplink` does after `ack_timeout_s`), and reads the feed."""

    def __init__(self, broker: MosquittoProcess, gate: str, login: tuple[str, str]) -> None:
        self.gate = gate
        self.client: BrokerClient = connect_client(broker, *login, client_id=f"gate-{gate}")
        self.client.subscribe(topics.acks(SITE, gate), topics.feed(SITE))
        self.sent: list[PassageEvent] = []

    def send(self, n: int) -> None:
        now = datetime.now(UTC)
        fresh = [
            PassageEvent(
                gate_id=self.gate,
                site_id=SITE,
                at=now,
                direction=Direction.IN,
                outcome=Outcome.DENY,
                code="unknown",
                passed=False,
            )
            for _ in range(n)
        ]
        self.sent += fresh
        for e in fresh:  # one message each: the shared subscription spreads them over both processes
            self.client.publish(topics.events(SITE, self.gate), event_batch_json([e.model_dump_json()]))

    def acked(self) -> set[uuid.UUID]:
        return {
            i
            for m in self.client.received(topics.acks(SITE, self.gate))
            for i in EventAck.model_validate_json(m.payload).event_ids
        }

    def resend_unconfirmed(self) -> None:
        acked = self.acked()
        for e in self.sent:
            if e.event_id not in acked:
                self.client.publish(topics.events(SITE, self.gate), event_batch_json([e.model_dump_json()]))

    def feed(self) -> list[FeedMessage]:
        return [FeedMessage.model_validate_json(m.payload) for m in self.client.received(topics.feed(SITE))]


def test_the_surviving_process_takes_the_feed_over_gapless_and_every_event_is_stored_once(
    tmp_path: Path, pg: ThrowawayPostgres, mosquitto_factory: MosquittoFactory
) -> None:
    url = pg.create_database("scaleout")
    secrets = {
        "STARFISH_ENVIRONMENT": "test",
        "STARFISH_JWT_SECRET": base64.b64encode(os.urandom(32)).decode(),
        "STARFISH_SIGNING_KEY_B64": base64.b64encode(os.urandom(32)).decode(),
        "STARFISH_KEYSET_ROOT_KEY_B64": KEYSET_ROOT_B64,
    }
    settings = Settings(
        environment="test",
        database_url=url,
        jwt_secret=secrets["STARFISH_JWT_SECRET"],
        signing_key_b64=secrets["STARFISH_SIGNING_KEY_B64"],
        keyset_root_key_b64=KEYSET_ROOT_B64,
    )
    seeded = seed_cloud(settings, SITE, GATES, PRODUCTS)
    registry = SiteRegistry(
        SITE,
        [GateAccount(g, *seeded.gates[g]) for g in GATES],
        *CLOUD_LOGIN,
        cloud_logins=tuple(logins(CLOUD_LOGIN[0], ["a", "b"], 1)),  # each process its own login: cloud-a, cloud-b
    )
    broker = mosquitto_factory(registry, role="cloud", name="cloud")
    with ExitStack() as on_exit:
        gates = {g: FakeGate(broker, g, seeded.gates[g]) for g in GATES}  # on the feed from its first change
        for gate in gates.values():
            on_exit.callback(gate.client.close)
        clouds = {}
        for name in ("a", "b"):
            env = {
                **secrets,
                "STARFISH_DATABASE_URL": url,
                "STARFISH_MQTT_HOST": "127.0.0.1",
                "STARFISH_MQTT_PORT": str(broker.port),
                "STARFISH_MQTT_USERNAME": CLOUD_LOGIN[0],
                "STARFISH_MQTT_PASSWORD": CLOUD_LOGIN[1],
                "STARFISH_CLOUD_INSTANCE": name,
                "STARFISH_CLOUD_RUN_DIR": str(tmp_path / "run"),
                "STARFISH_METRICS_TOKEN": "metrics-token",
            }
            clouds[name] = CloudServer(env, tmp_path / f"cloud-{name}.log")
            on_exit.callback(clouds[name].stop)
            on_exit.callback(_print_tail, clouds[name].log)
            clouds[name].launch()
        for cloud in clouds.values():
            cloud.wait_until(cloud.answers, "answering", STARTUP)
        leader: str = wait_until(lambda: next((n for n, c in clouds.items() if c.said(LEADS)), ""), "one leads", SLOW)
        survivor = "b" if leader == "a" else "a"
        cashiers = {n: Cashier(c.base, seeded.cashier_token, seeded.site_id) for n, c in clouds.items()}
        for cashier in cashiers.values():
            on_exit.callback(cashier.close)
        day = seeded.products["day"]

        # Both processes sell and both store events; neither stores one the other stored.
        sold = [t["id"] for n in ("a", "b", "a", "b") for t in cashiers[n].sell(day)[1]]
        for gate in gates.values():
            gate.send(10)
        wait_until(lambda: all(len(g.acked()) == 10 for g in gates.values()), "the first events acknowledged", SLOW)
        stored = {n: _events_counted(c, "stored") for n, c in clouds.items()}
        assert stored["a"] > 0 and stored["b"] > 0 and stored["a"] + stored["b"] == 20, stored
        assert all(_events_counted(c, "duplicate") == 0 for c in clouds.values())

        # The leader is killed while it sells and the gates send events.
        selling = threading.Event()
        sold_by_leader: list[int] = []

        def sell_at_the_leader() -> None:
            while True:
                try:
                    sold_by_leader.extend(t["id"] for t in cashiers[leader].sell(day)[1])
                except (httpx.HTTPError, RuntimeError):
                    return  # killed
                selling.set()

        seller = threading.Thread(target=sell_at_the_leader, daemon=True)
        seller.start()
        selling.wait(SLOW)
        for gate in gates.values():
            gate.send(10)
        clouds[leader].kill()
        seller.join(SLOW)
        sold += sold_by_leader
        for _ in range(5):
            sold += [t["id"] for t in cashiers[survivor].sell(day)[1]]
        wait_until(lambda: clouds[survivor].said(LEADS), "the survivor took the feed lease over", SLOW)
        for gate in gates.values():
            gate.send(5)

        # The feed a gate received: 1..N without a gap, N the database's head, every sold ticket on it.
        head = _feed_head(url)
        wait_until(lambda: {m.seq for m in gates["g1"].feed()} >= set(range(1, head + 1)), "the whole feed", SLOW)
        messages = gates["g1"].feed()
        assert {m.seq for m in messages} == set(range(1, head + 1))
        on_feed = {m.change.ticket.ticket_id for m in messages if isinstance(m.change, TicketUpsert)}
        assert {str(t) for t in sold} <= on_feed

        # Every event stored exactly once and acknowledged: what the dead process held, its gate sent again.
        def all_acked() -> bool:
            for gate in gates.values():
                gate.resend_unconfirmed()
            return all(len(g.acked()) == len(g.sent) for g in gates.values())

        wait_until(all_acked, "every event acknowledged", SLOW, interval=2.0)
        sent = {e.event_id for g in gates.values() for e in g.sent}
        with psycopg.connect(_libpq(url)) as conn:
            rows = conn.execute("SELECT event_id, count(*) FROM gate_passages GROUP BY event_id").fetchall()
        assert {uuid.UUID(str(i)) for i, _ in rows} == sent
        assert all(n == 1 for _, n in rows)


def _print_tail(log: Path) -> None:
    print(f"--- {log}\n{tail(log, 40)}")


def _events_counted(cloud: CloudServer, result: str) -> int:
    text = httpx.get(f"{cloud.base}/metrics", headers={"Authorization": "Bearer metrics-token"}, timeout=5).text
    line = next((x for x in text.splitlines() if x.startswith(f'starfish_cloud_events_total{{result="{result}"}}')), "")
    return int(float(line.split()[-1])) if line else 0


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _feed_head(url: str) -> int:
    with psycopg.connect(_libpq(url)) as conn:
        row = conn.execute("SELECT seq FROM site_feed_heads").fetchone()
    assert row is not None
    return int(row[0])
