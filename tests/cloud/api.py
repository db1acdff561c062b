"""Cloud test helpers: a visit date in the future, a product created through the API, the schema."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cloud.deps import Role
from cloud.migrate import upgrade
from harness.api import Api
from models.api import API_PREFIX


def build_schema(url: str) -> None:
    """The schema, as production gets it: the Alembic migrations."""
    upgrade(url)


def fresh_sqlite(template: Path, folder: Path) -> str:
    """A fresh cloud database: a copy of a migrated template (the `sqlite_template` fixture); migrating again for
    every test took seconds."""
    shutil.copyfile(template, folder / "cloud.db")
    return f"sqlite:///{folder / 'cloud.db'}"


def next_weekday(start: date | None = None, weekday: int = 2) -> date:
    """The next given weekday (Wednesday by default) at least 2 days ahead: a visit date in the future."""
    d = (start or date.today()) + timedelta(days=2)
    while d.weekday() != weekday:
        d += timedelta(days=1)
    return d


def make_product(api: Api, site_id: int, **overrides: Any) -> dict[str, Any]:
    """A day product (28,000 / 38,000 / 45,000 fen, 100 a day) created by an admin, with any field overridden."""
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
    r = api.as_(Role.ADMIN).post(f"{API_PREFIX}/sites/{site_id}/products", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())
