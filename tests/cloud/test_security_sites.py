"""A ticket sold for one site opens no other site's gates; two sites never share a tag (issue 8)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from cloud.deps import Role
from cloud.sync.feed import trusted_keys
from edge.gate import GateService
from edge.store import GateStore
from harness.api import Api
from models import GateConfig
from models.credential import SignedCredential, load_public_key, parse, site_tag
from tests.cloud.api import make_product, next_weekday
from tests.cloud.paid_orders import sell_paid

pytestmark = pytest.mark.security


def _gate_at(site: str, app: FastAPI, tmp_path: Path) -> GateService:
    store = GateStore(tmp_path / f"{site}.db")
    store.set_keys(trusted_keys(app.state.settings))
    return GateService(store=store, config=GateConfig(gate_id="g1", site_id=site, passback_seconds=0))


def test_a_ticket_bought_for_one_site_is_refused_at_another_sites_gate(
    app: FastAPI, api: Api, site: dict[str, Any], tmp_path: Path
) -> None:
    other = api.as_(Role.ADMIN).post("/api/v1/sites", json={"code": "wanlong", "name": "万龙"}).json()
    product = make_product(api, site["id"])
    day = next_weekday()
    order = sell_paid(app, api, site["id"], product["id"], day)
    token = api.as_(Role.CASHIER).get(f"/api/v1/orders/{order['id']}/tickets").json()[0]["token"]
    keys = {k: load_public_key(v) for k, v in trusted_keys(app.state.settings).items()}
    cred = parse(token, keys)
    assert isinstance(cred, SignedCredential) and cred.site == site_tag(site["code"])

    visit = cred.valid_from
    assert _gate_at(other["code"], app, tmp_path).evaluate(token, visit).decision.code == "wrong_site"
    assert _gate_at(site["code"], app, tmp_path).evaluate(token, visit).decision.code == "ok"


def _clashing_codes() -> tuple[str, str]:
    seen: dict[int, str] = {}
    for i in itertools.count():
        code = f"s{i}"
        tag = site_tag(code)
        if tag in seen:
            return seen[tag], code
        seen[tag] = code
    raise AssertionError("unreachable")


def test_a_site_whose_code_has_another_sites_tag_is_refused(api: Api) -> None:
    first, second = _clashing_codes()
    admin = api.as_(Role.ADMIN)
    assert admin.post("/api/v1/sites", json={"code": first, "name": "A"}).status_code == 201
    r = admin.post("/api/v1/sites", json={"code": second, "name": "B"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "site_tag_clash"
