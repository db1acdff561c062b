"""Cloud test fixtures: every cloud test runs on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.customers.models import Customer
from cloud.deps import Role
from cloud.migrate import upgrade
from cloud.settings import Settings
from cloud.staff.models import Staff
from cloud.staff.service import issue_token
from harness.postgres import PostgresUnavailable, ThrowawayPostgres
from tests.conftest import KEYSET_ROOT_B64

_db_counter = itertools.count()


def build_schema(url: str) -> None:
    """The schema, as production gets it: the Alembic migrations."""
    upgrade(url)


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


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cloud.db'}"
        build_schema(url)
        return url
    pg: ThrowawayPostgres = request.getfixturevalue("postgres")
    return pg.create_database(f"t{os.getpid()}_{next(_db_counter)}", template=pg.template)  # type: ignore[attr-defined]


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        environment="test",
        database_url=db_url,
        jwt_secret="test-secret-" + "x" * 40,
        signing_key_b64=base64.b64encode(os.urandom(32)).decode(),
        keyset_root_key_b64=KEYSET_ROOT_B64,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings, expiry_every_s=0)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=True) as c:
        yield c


class Api:
    """The API as a given role sees it: `api.as_(Role.CASHIER).post(...)`."""

    def __init__(self, client: TestClient, app: FastAPI) -> None:
        self.client = client
        self.app = app
        self._tokens: dict[Role, str] = {}
        self.customer_id: int | None = None

    def token(self, role: Role) -> str:
        if role not in self._tokens:
            settings: Settings = self.app.state.settings
            with self.app.state.sessionmaker() as s:
                if role is Role.CUSTOMER:
                    who: Any = Customer(phone="13800000000", nickname="test")
                else:
                    who = Staff(username=f"{role.value}-user", password_hash="!", role=role.value, active=True)
                s.add(who)
                s.commit()
                if role is Role.CUSTOMER:
                    self.customer_id = who.id
                name = who.nickname if role is Role.CUSTOMER else who.username
                self._tokens[role] = issue_token(settings, role=role, subject_id=who.id, name=name)
        return self._tokens[role]

    def as_(self, role: Role | None) -> AuthedClient:
        return AuthedClient(self.client, None if role is None else self.token(role))


class AuthedClient:
    def __init__(self, client: TestClient, token: str | None) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kw)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)


@pytest.fixture
def api(client: TestClient, app: FastAPI) -> Api:
    return Api(client, app)


def next_weekday(start: date | None = None, weekday: int = 2) -> date:
    """The next given weekday (Wednesday by default) at least 2 days ahead: a visit date in the future."""
    d = (start or date.today()) + timedelta(days=2)
    while d.weekday() != weekday:
        d += timedelta(days=1)
    return d


@pytest.fixture
def site(api: Api) -> dict[str, Any]:
    r = api.as_(Role.ADMIN).post("/api/v1/sites", json={"code": "nanshan", "name": "南山滑雪场"})
    assert r.status_code == 201, r.text
    return dict(r.json())


def make_product(api: Api, site_id: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": "day",
        "name": "全天票",
        "kind": "day",
        "weekday_price_fen": 28000,
        "weekend_price_fen": 38000,
        "holiday_price_fen": 45000,
        "daily_stock": 100,
        "refund_fee_fen": 1000,
    }
    body.update(overrides)
    r = api.as_(Role.ADMIN).post(f"/api/v1/sites/{site_id}/products", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.fixture
def day_product(api: Api, site: dict[str, Any]) -> dict[str, Any]:
    return make_product(api, site["id"])
