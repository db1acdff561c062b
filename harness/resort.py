"""The whole resort on one machine: cloud, cloud broker, site broker with bridge, gates with simulated hardware.

Each piece runs as in production, in its own process where the real system has one: the cloud
(uvicorn serving `cloud.app:create_app` on SQLite, with its MQTT loop), the cloud broker and the
site broker bridged to it (Mosquitto, `sync.mosquitto`), and one `starfish gate run` per gate,
connected to the site broker only. The hardware is simulated in this process: per gate a relay
board (Modbus TCP on loopback, `harness.relay_sim`) and a serial scanner (a pty the gate opens as
its scanner port). The resort is set up, and tickets are sold and refunded, through the cloud's
API (`harness.cloud_api`).

Cutting the cloud link stops the cloud broker (its persistence saved); restoring starts it again
on the same port with the same data, and the bridge and the cloud reconnect by themselves.

    with Resort(workdir) as resort:
        sale = resort.sell("day")
        resort.scan("north-1", sale.token)      # the Decision, read back from the gate's journal
        resort.cut_link(); ...; resort.restore_link()
        resort.wait_drained(60)
        print(resort.exactly_once().line())

The views it returns (each gate's, the cloud's) and the exactly-once check are `harness.resort_views`.
Used by `starfish demo` and by whole-stack tests. Everything it starts stops on `stop()` (or
leaving the `with`), also when `start()` fails half-way.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from cloud.settings import Settings
from edge.store import GateStoreReader, JournalEntry
from harness.cloud import CloudServer
from harness.cloud_api import GATES, DemoCloud, Sale, resort_today
from harness.gates import GateProcess, RelayBoards, ScannerPty
from harness.keys import production_env, settings_of
from harness.mosquitto import MosquittoProcess
from harness.processes import free_port, poll_until
from harness.resort_views import CloudView, Decision, ExactlyOnce, GateView, cloud_passages, stored_per_gate
from models.credential import public_key_b64
from sync.mosquitto import BridgeTo, GateAccount, SiteRegistry


@dataclass
class _Gate:
    login: GateAccount
    process: GateProcess
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def db(self) -> Path:
        return self.process.db

    @property
    def scanner(self) -> ScannerPty:
        return self.process.scanner

    def ready(self) -> bool:
        """Synced from the cloud once, and reading its scanner."""
        synced = GateStoreReader(self.db).has_feed_position()
        return synced and f"scanner {self.scanner.path} opened" in self.process.log_text()


class Resort:
    """Cloud, brokers and gates of one site, started for real; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        *,
        site: str = "demo",
        gates: tuple[tuple[str, str], ...] = GATES,
        passback_seconds: float = 10.0,
        season_holders: int = 8,
        startup_timeout: float = 60.0,
        web: bool = False,
        cloud_env: Mapping[str, str] | None = None,
    ) -> None:
        """`web`: every gate also serves its technician page on a free loopback port (`page_url`). `cloud_env`:
        more STARFISH_ settings for the cloud process (e.g. channel secrets)."""
        self.workdir = workdir
        self.site = site
        self.gate_names = gates
        self.passback_seconds = passback_seconds
        self.season_holders = season_holders
        self.startup_timeout = startup_timeout
        self.web = web
        self.cloud_env = dict(cloud_env or {})
        self.metrics_token = secrets.token_urlsafe(24)  # the gates' (with `web`) and the cloud's /metrics
        # With `web`: a gate technician in the cloud, whose account reaches the gates down the feed.
        self.technician = ("demo.tech", secrets.token_urlsafe(12))
        self.url = f"sqlite:///{workdir / 'cloud.db'}"
        self._stack = ExitStack()
        self._gates: dict[str, _Gate] = {}
        self._holders: list[int] = []
        self._link = threading.Lock()
        self.link_up = True
        self._cloud_base = ""
        self._key_root = ""
        self.api: DemoCloud
        self.cloud: CloudServer
        self.cloud_broker: MosquittoProcess
        self.site_broker: MosquittoProcess

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Set up the cloud, start both brokers, the cloud process and the gates; return once every gate synced."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything this resort started (gates first, brokers last)."""
        self._stack.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def gates(self) -> list[str]:
        return list(self._gates)

    def _start(self) -> None:
        from cloud.migrate import upgrade

        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**production_env(self.url), **self.cloud_env}
        settings = settings_of(env)
        self._key_root = public_key_b64(settings.keyset_root_key.public_key())
        upgrade(self.url)
        cloud_port, mqtt_password, bridge_password = free_port(), secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        # The cloud process boots (seconds) while this one sets the resort up; its MQTT loop waits for the broker.
        self._start_cloud(env, cloud_port, mqtt_password)
        setup = self._set_up_cloud(settings)
        registry = SiteRegistry(
            self.site,
            list(setup.gates.values()),
            "cloud",
            mqtt_password,
            bridge=BridgeTo("127.0.0.1", cloud_port, f"bridge-{self.site}", bridge_password),
        )
        self.cloud_broker = MosquittoProcess(
            registry, role="cloud", workdir=self.workdir / "cloud-broker", port=cloud_port
        )
        self._stack.callback(self.cloud_broker.close)
        self.cloud_broker.start()
        self.site_broker = MosquittoProcess(registry, role="site", workdir=self.workdir / "site-broker")
        self._stack.callback(self.site_broker.close)
        self.site_broker.start()
        self.cloud.wait_until(self.cloud.answers, "health check", self.startup_timeout)
        self.api = setup.at(self._cloud_base)
        self._stack.callback(self.api.close)
        boards = RelayBoards()
        self._stack.callback(boards.close)
        for login in setup.gates.values():
            # A skier through the turnstile 200 ms after it opens, the passage signal high for 150 ms.
            board = boards.add(passage_delay_s=0.2, passage_hold_s=0.15)
            assert board.port is not None
            self._start_gate(login, board.port)
        for gate in self._gates.values():
            gate.process.wait_until(gate.ready, "snapshot applied and scanner port opened", self.startup_timeout)

    def _set_up_cloud(self, settings: Settings) -> DemoCloud:
        """Admin, site, gates, products, cashier and season-pass holders, through a short-lived server here."""
        from cloud.app import create_app
        from cloud.customers.service import add_holder
        from cloud.deps import Role
        from cloud.staff.service import create_staff
        from harness.cloud import live_server

        app = create_app(settings, expiry_every_s=0)
        with live_server(app) as base:
            setup = DemoCloud.bootstrap(app, base)
            try:
                setup.set_up_resort(self.site, self.gate_names)
                assert setup.customer_id is not None
                with app.state.sessionmaker() as session:
                    if self.web:
                        create_staff(session, None, *self.technician, Role.GATE_TECH)
                    for i in range(self.season_holders):
                        holder = add_holder(session, setup.customer_id, f"季卡会员{i + 1:02d}", f"E{1000000 + i}")
                        self._holders.append(holder.id)
            finally:
                setup.close()
        return setup

    def _start_cloud(self, secrets_env: dict[str, str], broker_port: int, mqtt_password: str) -> None:
        env = {
            **secrets_env,
            "STARFISH_MQTT_HOST": "127.0.0.1",
            "STARFISH_MQTT_PORT": str(broker_port),
            "STARFISH_MQTT_USERNAME": "cloud",
            "STARFISH_MQTT_PASSWORD": mqtt_password,
            "STARFISH_SYNC_POLL_SECONDS": "0.5",
            "STARFISH_METRICS_TOKEN": self.metrics_token,
        }
        self.cloud = CloudServer(env, self.workdir / "cloud.log", own_session=True)
        self._cloud_base = self.cloud.base
        self._stack.callback(self.cloud.stop)
        self.cloud.launch()

    def _start_gate(self, login: GateAccount, board_port: int) -> None:
        from edge.config import parse_config

        folder = self.workdir / "gates" / login.gate
        folder.mkdir(parents=True, exist_ok=True)
        password = folder / "password"
        password.touch(mode=0o600)
        password.write_text(login.password)
        config: dict[str, Any] = {
            "gate": {
                "gate_id": login.gate,
                "site_id": self.site,
                "passback_seconds": self.passback_seconds,
                "rescan_seconds": 3,
            },
            "barrier": {
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": board_port,
                "passage_input": 0,
                "fire_alarm_input": 1,
                "passage_timeout_s": 3,
            },
            "sync": {
                "site": self.site,
                "gate": login.gate,
                "broker_host": "127.0.0.1",
                "broker_port": self.site_broker.port,
                "username": login.username,
                "password_file": str(password),
                "snapshot_url": self._cloud_base,
                "key_root": self._key_root,
                "ack_timeout_s": 5,
                "status_interval_s": 2,
                "reconnect_max_s": 2,
            },
            "input_debounce_s": 0,
            "log_level": "INFO",
        }
        if self.web:
            token = folder / "metrics.token"
            token.write_text(self.metrics_token)
            config["web"] = {"bind": "127.0.0.1", "port": free_port(), "metrics_token_file": str(token)}
        process = GateProcess(folder, config, own_session=True)  # it adds the store and the scanner's pty
        self._stack.callback(process.close)
        parse_config(process.config, f"gate {login.gate}")  # a mistake here is ours: say so before starting it
        self._gates[login.gate] = _Gate(login, process)
        process.launch()

    def stop_gates(self) -> None:
        """Stop the gate daemons (SIGTERM: each finishes the passage in progress and says `offline`)."""
        for gate in self._gates.values():
            gate.process.stop()

    # --- the cloud link --------------------------------------------------------------------------

    def cut_link(self) -> None:
        """Cut the site off the cloud: the cloud broker stops, saving what it holds."""
        with self._link:
            if self.link_up:
                self.cloud_broker.stop()
                self.link_up = False

    def restore_link(self) -> None:
        """Start the cloud broker again, same port and data; the bridge and the cloud reconnect by themselves."""
        with self._link:
            if not self.link_up:
                self.cloud_broker.start()
                self.link_up = True

    # --- skiers ----------------------------------------------------------------------------------

    def sell(self, product: str, visit: date | None = None) -> Sale:
        """Sell one ticket at the ticket window (a season pass goes to the next registered holder)."""
        holder = None
        if product == "season":
            if not self._holders:
                raise RuntimeError("every season-pass holder already has a pass")
            holder = self._holders.pop(0)
        return self.api.sell(product, visit, holder_id=holder)

    def sell_refunded(self) -> Sale:
        """A ticket for tomorrow, refunded (refunds close when the visit day starts): it joins the revocations."""
        sale = self.api.sell("day", resort_today() + timedelta(days=1))
        self.api.refund(sale)
        return sale

    def scan(self, gate: str, code: str, timeout: float = 10.0) -> Decision | None:
        """Present a code at a gate's scanner; its decision from the journal once final (None: none in time)."""
        g = self._gates[gate]
        with g.lock:
            journal = GateStoreReader(g.db)
            before = journal.journal_mark()
            g.scanner.scan(code)
            found: list[JournalEntry] = []

            def decided() -> bool:
                found[:] = journal.decisions_since(before)[:1]
                return bool(found) and found[0].passed is not None  # an admission is final once the passage is

            if not poll_until(decided, timeout, interval=0.02):
                return None
            return Decision.of(gate, found[0])

    # --- what each side knows --------------------------------------------------------------------

    def gate_view(self, gate: str) -> GateView:
        g = self._gates[gate]
        return GateView.of(gate, g.process.running, GateStoreReader(g.db))

    def page_url(self, gate: str) -> str:
        """A gate's technician page (a resort started with `web=True`), once it is served."""
        return self._gates[gate].process.wait_page(self.startup_timeout)

    def gate_faces(self, gate: str) -> list[str]:
        """The pass ids whose (sealed) face template the gate's store holds."""
        return [ticket_id for ticket_id, _, _ in GateStoreReader(self._gates[gate].db).face_templates()]

    def cloud_view(self) -> CloudView:
        stored = stored_per_gate(self.workdir / "cloud.db")
        try:
            status = self.api.sync_status()
        except (httpx.HTTPError, RuntimeError):
            return CloudView(stored, None, {})
        return CloudView(stored, int(status["feed_seq"]), {g["code"]: g for g in status["gates"]})

    def wait_drained(self, timeout: float) -> bool:
        """Until every gate's outbox is empty and the cloud stored as many passages as each gate journaled."""

        def drained() -> bool:
            stored = stored_per_gate(self.workdir / "cloud.db")
            views = [self.gate_view(g) for g in self._gates]
            return all(v.outbox == 0 and stored.get(v.gate, 0) == v.journaled for v in views)

        return poll_until(drained, timeout, interval=0.25)

    def exactly_once(self) -> ExactlyOnce:
        """Compare every gate's journal with the passages the cloud stored, by the gate-made event id."""
        stores = {code: GateStoreReader(g.db) for code, g in self._gates.items()}
        return ExactlyOnce.compare(stores, cloud_passages(self.workdir / "cloud.db"))
