"""Channel tests run on SQLite, against a cloud served over a real socket (`channel_cloud`); the few races that
need PostgreSQL ask for `pg_channel_cloud`. Every test here is marked `ota`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.deps import Role
from harness.api import Api
from harness.cloud import live_server
from harness.keys import cloud_settings
from harness.postgres import ThrowawayPostgres
from models.api import API_PREFIX
from tests.cloud.api import fresh_sqlite, make_product
from tests.cloud.channels.kit import ChannelCloud, secrets_json


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cloud/channels/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.ota)


def _cloud(url: str) -> Iterator[ChannelCloud]:
    settings = cloud_settings(url, jwt_secret="test-secret-" + "x" * 40, channel_secrets_json=secrets_json())
    app = create_app(settings, expiry_every_s=0)
    with TestClient(app) as client, live_server(app) as base:
        api = Api(client, app)
        r = api.as_(Role.ADMIN).post(f"{API_PREFIX}/sites", json={"code": "nanshan", "name": "南山滑雪场"})
        assert r.status_code == 201, r.text
        yield ChannelCloud(url=base, api=api, settings=settings, sessions=app.state.sessionmaker, site=dict(r.json()))


@pytest.fixture
def channel_cloud(tmp_path: Path, sqlite_template: Path) -> Iterator[ChannelCloud]:
    yield from _cloud(fresh_sqlite(sqlite_template, tmp_path))


@pytest.fixture
def pg_channel_cloud(request: pytest.FixtureRequest) -> Iterator[ChannelCloud]:
    pg: ThrowawayPostgres = request.getfixturevalue("postgres")
    yield from _cloud(pg.create_database(f"ch_{request.node.name[:40]}".lower(), template=pg.template))  # type: ignore[attr-defined]


@pytest.fixture
def product(channel_cloud: ChannelCloud) -> dict[str, Any]:
    """A day ticket of the site, for any visit day."""
    return make_product(channel_cloud.api, channel_cloud.site["id"])
