"""The whole stack's pieces for sync tests, each for real and in its own process where production has one.

`seed_cloud` migrates a cloud database and creates a site, its gates and products through the API;
`CloudServer` runs the cloud service (uvicorn, its MQTT loop) in its own process and restarts it on
the same port; `GateProcess` runs a gate daemon (`starfish gate run`) fed through a pty, as from a
serial scanner (relay boards come from `sync.resort.RelayBoards`); `Cashier` sells at the ticket
window through the API, and keeps trying across a cloud restart without selling twice; `read_rows`
reads another process's SQLite file without taking a lock.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import tty
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Self
from zoneinfo import ZoneInfo

import httpx
import yaml
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.db import utcnow
from cloud.deps import Role
from cloud.migrate import upgrade
from cloud.settings import Settings
from harness.processes import free_port, wait_until
from harness.resort import query
from tests.cloud.conftest import Api

REPO = Path(__file__).resolve().parents[2]
API = "/api/v1"

# uvicorn as `python -m uvicorn --factory` runs it, with the app's own INFO logs kept (sync connects, sessions).
_SERVE = (
    "import logging, sys, uvicorn; "
    "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s'); "
    "uvicorn.run('cloud.app:create_app', factory=True, host='127.0.0.1', port=int(sys.argv[1]), "
    "log_level='warning', access_log=False)"
)


def read_rows(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows from a SQLite file another process writes, opened read-only (WAL: the writer is not held up)."""
    return query(db, sql, tuple(params))


def tail(path: Path, lines: int = 40, *, skip: Sequence[str] = ()) -> str:
    """The end of a log file, but for lines holding any of `skip`: for a failure message."""
    try:
        kept = [line for line in path.read_text(errors="replace").splitlines() if not any(s in line for s in skip)]
    except FileNotFoundError:
        return f"(no {path.name})"
    return "\n".join(kept[-lines:])


# --- the cloud ------------------------------------------------------------------------------------


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
    with TestClient(app) as c:
        api = Api(c, app)
        admin = api.as_(Role.ADMIN)
        site_row = _created(admin.post(f"{API}/sites", json={"code": site, "name": site.title()}))
        logins = {}
        for code in gates:
            gate = _created(admin.post(f"{API}/sites/{site_row['id']}/gates", json={"code": code, "name": code}))
            logins[code] = (gate["username"], gate["secret"])
        ids = {
            p["code"]: _created(admin.post(f"{API}/sites/{site_row['id']}/products", json=p))["id"] for p in products
        }
        return Seeded(site_row["id"], logins, ids, api.token(Role.CASHIER))


def _created(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


class ChildProcess:
    """A command in a child process, its output appended to a log file; each launch runs it again."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def alive(self) -> bool:
        """True while it runs; an AssertionError with the end of its log once it has exited."""
        assert self._proc is not None, f"{self.name} was never started"
        if self._proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self._proc.returncode}:\n{tail(self.log)}")
        return True

    def said(self, text: str) -> int:
        """How often `text` appears in its log."""
        return self.log.read_text(errors="replace").count(text)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (SIGKILL if it hangs)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash, whatever it was doing."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals, timeout: float = 20.0) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class CloudServer(ChildProcess):
    """The cloud service in its own process (uvicorn), as deployed; it keeps its port across restarts."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        super().__init__("the cloud server", [sys.executable, "-c", _SERVE, str(self.port)], log, env)

    def start(self, timeout: float = 30.0) -> Self:
        self.launch()
        wait_until(lambda: self.alive() and self._answers(), f"cloud server on {self.base}", timeout, interval=0.1)
        return self

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.base}{API}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


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
        self, product_id: int, quantity: int = 1, *, days_ahead: int = 0, patience: float = 0.0
    ) -> tuple[int, list[dict[str, Any]]]:
        """(order id, its tickets); retries for `patience` seconds while the cloud does not answer."""
        day = (utcnow().astimezone(ZoneInfo("Asia/Shanghai")) + timedelta(days=days_ahead)).date()
        body = {
            "site_id": self.site_id,
            "channel": "counter",
            "items": [{"product_id": product_id, "visit_date": day.isoformat(), "quantity": quantity}],
        }
        key = f"sale-{uuid.uuid4()}"
        deadline = time.monotonic() + patience
        while True:
            try:
                return self._sell_once(body, key)
            except (httpx.TransportError, _Unavailable):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _sell_once(self, body: dict[str, Any], key: str) -> tuple[int, list[dict[str, Any]]]:
        order = _ok(self.http.post(f"{API}/orders", json=body, headers={"Idempotency-Key": key}))
        if order["status"] == "pending":
            paid = self.http.post(
                f"{API}/orders/{order['id']}/payments/counter",
                json={"method": "cash", "amount_fen": order["total_fen"]},
            )
            if paid.status_code != 409:  # 409: paid by the attempt whose answer was lost
                _ok(paid)
        tickets: list[dict[str, Any]] = _ok(self.http.get(f"{API}/orders/{order['id']}/tickets"))
        assert len(tickets) == body["items"][0]["quantity"], tickets
        return order["id"], tickets

    def refund(self, order_id: int, ticket_ids: Sequence[int]) -> None:
        _ok(self.http.post(f"{API}/orders/{order_id}/refunds", json={"ticket_ids": list(ticket_ids)}))


class _Unavailable(Exception):
    """The cloud answered 5xx (it is starting or stopping): try again."""


def _ok(r: httpx.Response) -> Any:
    if r.status_code >= 500:
        raise _Unavailable(f"{r.status_code}: {r.text[:200]}")
    assert r.status_code in (200, 201), f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json()


# --- the gate -------------------------------------------------------------------------------------


class GateProcess(ChildProcess):
    """A gate daemon (`starfish gate run`) in its own process; scans go in through a pty, as from a serial scanner.

    `config` is the gate's YAML tree but for `store` and `scanner`, which live in `folder`.
    """

    def __init__(self, folder: Path, config: Mapping[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.db = folder / "gate.db"
        self._master, self._slave = os.openpty()  # the slave end stays open here: no hang-up between runs
        tty.setraw(self._slave)  # no echo into the master before the gate opens its end
        os.set_blocking(self._master, False)
        tree = {**config, "store": {"path": str(self.db)}, "scanner": {"port": os.ttyname(self._slave)}}
        (folder / "gate.yaml").write_text(yaml.safe_dump(tree))
        argv = [sys.executable, "-m", "edge.cli", "gate", "run", "--config", str(folder / "gate.yaml")]
        super().__init__(f"gate {config['gate']['gate_id']}", argv, folder / "gate.log")
        self._runs = 0

    def launch(self) -> None:
        """Start the daemon and return at once (start several side by side, then `wait_running`)."""
        super().launch()
        self._runs += 1

    def start(self, timeout: float = 30.0) -> Self:
        self.launch()
        return self.wait_running(timeout)

    def wait_running(self, timeout: float = 30.0) -> Self:
        """Until the daemon runs: its inputs, barrier and sync started."""
        wait_until(
            lambda: self.alive() and self.said(") running") >= self._runs,
            f"{self.name} running",
            timeout,
            interval=0.05,
        )
        return self

    def scan(self, *codes: str, timeout: float = 30.0) -> None:
        """Present codes at the scanner, one line each, as fast as the gate reads them."""
        data = b"".join(code.encode() + b"\r" for code in codes)
        deadline = time.monotonic() + timeout
        while data:
            if select.select([], [self._master], [], 0.2)[1]:
                with contextlib.suppress(BlockingIOError):
                    data = data[os.write(self._master, data) :]
            elif self.alive() and time.monotonic() > deadline:
                raise AssertionError(f"{self.name} stopped reading its scanner")

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return read_rows(self.db, sql, params)

    def close(self) -> None:
        self.stop()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
