"""Cloud test fixtures: every cloud test runs on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.deps import Role
from cloud.settings import Settings
from harness.api import Api
from harness.keys import cloud_settings
from harness.postgres import PostgresUnavailable, ThrowawayPostgres
from models.api import API_PREFIX
from tests.cloud.api import build_schema, fresh_sqlite, make_product

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    try:
        pg = ThrowawayPostgres().start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    try:
        template = "starfish_template"
        build_schema(pg.create_database(template))
        pg.template = template  # type: ignore[attr-defined]
        yield pg
    finally:
        pg.stop()


class ReadyDatabases:
    """Databases copied from the template by a background thread, a couple ahead of the tests that take them.

    A CREATE DATABASE ... TEMPLATE takes 0.2-0.5 s of the server's time here; some 500 tests take one each.
    Made while the previous test runs (on the other core), it is waiting when the next test asks. A used one
    is dropped the same way (else the server's directory holds some 150,000 files to delete at the end).
    """

    def __init__(self, pg: ThrowawayPostgres, template: str, ahead: int = 2) -> None:
        self._pg, self._template = pg, template
        self._ready: queue.Queue[str | BaseException] = queue.Queue(maxsize=ahead)
        self._used: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._fill, name="ready-databases", daemon=True).start()
        threading.Thread(target=self._drop, name="used-databases", daemon=True).start()

    def _drop(self) -> None:
        import psycopg

        while True:
            name = self._used.get()
            try:  # FORCE: a test's pool may still hold a connection
                with psycopg.connect(self._pg.url(name).replace(f"/{name}", "/postgres").replace("+psycopg", "")) as c:
                    c.autocommit = True
                    c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception:  # the server stopped: its directory goes as a whole
                return

    def give_back(self, url: str) -> None:
        self._used.put(url.rsplit("/", 1)[1])

    def _fill(self) -> None:
        while True:
            try:
                url = self._pg.create_database(f"t{os.getpid()}_{next(_db_counter)}", template=self._template)
            except BaseException as exc:  # the server stopped, or cannot copy: the next taker says why
                self._ready.put(exc)
                return
            self._ready.put(url)

    def take(self) -> str:
        got = self._ready.get(timeout=120)
        if isinstance(got, BaseException):
            raise RuntimeError("could not make a test database from the template") from got
        return got


@pytest.fixture(scope="session")
def ready_databases(postgres: ThrowawayPostgres) -> ReadyDatabases:
    return ReadyDatabases(postgres, postgres.template)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite database built once by the Alembic migrations, as production gets it; each test copies it."""
    path = tmp_path_factory.mktemp("schema") / "template.db"
    build_schema(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield fresh_sqlite(request.getfixturevalue("sqlite_template"), tmp_path)
        return
    ready: ReadyDatabases = request.getfixturevalue("ready_databases")
    url = ready.take()
    yield url
    ready.give_back(url)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return cloud_settings(db_url, jwt_secret="test-secret-" + "x" * 40)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings, expiry_every_s=0)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=True) as c:
        yield c


@pytest.fixture
def api(client: TestClient, app: FastAPI) -> Api:
    return Api(client, app)


@pytest.fixture
def site(api: Api) -> dict[str, Any]:
    r = api.as_(Role.ADMIN).post(f"{API_PREFIX}/sites", json={"code": "nanshan", "name": "南山滑雪场"})
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.fixture
def day_product(api: Api, site: dict[str, Any]) -> dict[str, Any]:
    return make_product(api, site["id"])
