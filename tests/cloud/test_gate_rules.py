"""A gate's rules set from the cloud: stored, audited, on the site's feed as a `GateConfigChange` (the whole config),
withdrawn with a `GateConfigChange` without one, and in the asking gate's snapshot header."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cloud.deps import Role
from cloud.sync.models import FeedChange
from harness.api import Api
from models import Direction, GateConfig, ProductKind
from models.sync import GateConfigChange, SnapshotHeader
from tests.cloud.api import make_product

RULES = {
    "allowed_kinds": ["day", "punch"],
    "rescan_seconds": 2.5,
    "passback_seconds": 600,
    "daily_limit": 4,
    "emergency_open": False,
}


@pytest.fixture
def gates(api: Api, site: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Two gates of the site: the north entry and the south exit."""
    out = {}
    for code, direction in (("north-1", "in"), ("south-1", "out")):
        body = {"code": code, "name": code.upper(), "direction": direction}
        r = api.as_(Role.ADMIN).post(f"/api/v1/sites/{site['id']}/gates", json=body)
        assert r.status_code == 201, r.text
        out[code] = dict(r.json())
    return out


def config_changes(app: FastAPI, site_id: int) -> list[tuple[int, GateConfigChange]]:
    with app.state.sessionmaker() as session:
        rows = session.execute(
            select(FeedChange.seq, FeedChange.body)
            .where(FeedChange.site_id == site_id, FeedChange.kind == "gate_config")
            .order_by(FeedChange.seq)
        )
        return [(seq, GateConfigChange.model_validate(body)) for seq, body in rows]


def put(api: Api, gate_id: int, body: dict[str, Any], role: Role = Role.ADMIN) -> Any:
    return api.as_(role).put(f"/api/v1/gates/{gate_id}/rules", json=body)


def test_rules_set_in_the_cloud_go_down_the_feed_as_the_gates_whole_config_and_are_audited(
    app: FastAPI, api: Api, site: dict[str, Any], gates: dict[str, dict[str, Any]], day_product: dict[str, Any]
) -> None:
    south = gates["south-1"]
    assert api.as_(Role.GATE_TECH).get(f"/api/v1/gates/{south['id']}/rules").json()["source"] == "local"

    r = put(api, south["id"], {**RULES, "allowed_products": [day_product["id"], day_product["id"]]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["source"], out["updated_by"], out["rules"]["allowed_products"]) == (
        "cloud",
        "admin:admin-user",
        [day_product["id"]],
    )
    [(seq, change)] = config_changes(app, site["id"])
    assert out["feed_seq"] == seq
    assert change == GateConfigChange(
        gate_id="south-1",
        config=GateConfig(
            gate_id="south-1",
            site_id="nanshan",
            direction=Direction.OUT,
            timezone="Asia/Shanghai",
            allowed_kinds=frozenset({ProductKind.DAY, ProductKind.PUNCH}),
            allowed_products=frozenset({str(day_product["id"])}),
            rescan_seconds=2.5,
            passback_seconds=600,
            daily_limit=4,
            emergency_open=False,
        ),
    )
    seen = api.as_(Role.GATE_TECH).get(f"/api/v1/gates/{south['id']}/rules").json()
    assert seen == out

    audit = api.as_(Role.ADMIN).get("/api/v1/audit", params={"entity": "gate"}).json()
    [entry] = [a for a in audit if a["action"] == "gate.rules_set"]
    assert (entry["entity_id"], entry["detail"]["rules"]["daily_limit"], entry["detail"]["feed_seq"]) == (
        str(south["id"]),
        4,
        seq,
    )


def test_a_field_left_out_takes_the_gates_default_and_a_second_put_replaces_the_first(
    app: FastAPI, api: Api, site: dict[str, Any], gates: dict[str, dict[str, Any]]
) -> None:
    north = gates["north-1"]
    assert put(api, north["id"], RULES).status_code == 200
    r = put(api, north["id"], {"emergency_open": True})
    assert r.status_code == 200, r.text
    [_, (_, last)] = config_changes(app, site["id"])
    assert last.config is not None
    default = GateConfig(gate_id="x", site_id="y")
    assert (last.config.allowed_kinds, last.config.passback_seconds, last.config.daily_limit) == (
        default.allowed_kinds,
        default.passback_seconds,
        None,
    )
    assert last.config.emergency_open is True


def test_withdrawing_the_rules_sends_a_config_change_without_config_and_the_gate_is_back_on_its_file(
    app: FastAPI, api: Api, site: dict[str, Any], gates: dict[str, dict[str, Any]]
) -> None:
    north = gates["north-1"]
    assert put(api, north["id"], RULES).status_code == 200
    r = api.as_(Role.ADMIN).delete(f"/api/v1/gates/{north['id']}/rules")
    assert r.status_code == 200, r.text
    assert (r.json()["source"], r.json()["rules"]) == ("local", None)
    [_, (seq, withdrawal)] = config_changes(app, site["id"])
    assert withdrawal == GateConfigChange(gate_id="north-1", config=None) and r.json()["feed_seq"] == seq
    assert api.as_(Role.ADMIN).get(f"/api/v1/gates/{north['id']}/rules").json()["source"] == "local"

    again = api.as_(Role.ADMIN).delete(f"/api/v1/gates/{north['id']}/rules")
    assert again.status_code == 404 and again.json()["error"]["code"] == "gate_rules_not_found"
    assert len(config_changes(app, site["id"])) == 2
    audit = api.as_(Role.ADMIN).get("/api/v1/audit", params={"entity": "gate"}).json()
    assert [a["action"] for a in audit if a["action"].startswith("gate.rules")] == [
        "gate.rules_withdrawn",
        "gate.rules_set",
    ]


def test_products_of_another_site_are_refused_and_nothing_goes_down_the_feed(
    app: FastAPI, api: Api, site: dict[str, Any], gates: dict[str, dict[str, Any]]
) -> None:
    r = api.as_(Role.ADMIN).post("/api/v1/sites", json={"code": "beidahu", "name": "北大湖"})
    other = make_product(api, r.json()["id"])
    refused = put(api, gates["north-1"]["id"], {**RULES, "allowed_products": [other["id"], 2**31 - 1]})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"]["product_ids"] == [other["id"], 2**31 - 1]
    assert config_changes(app, site["id"]) == []
    assert put(api, 999_999, RULES).status_code == 404


def test_the_snapshot_header_carries_the_asking_gates_rules_and_no_other_gates(
    api: Api, site: dict[str, Any], gates: dict[str, dict[str, Any]]
) -> None:
    north, south = gates["north-1"], gates["south-1"]
    assert put(api, north["id"], RULES).status_code == 200

    def header(gate: dict[str, Any]) -> SnapshotHeader:
        auth = (gate["username"], gate["secret"])
        r = api.client.get(f"/api/v1/sync/sites/{site['code']}/snapshot", auth=auth)
        assert r.status_code == 200, r.text
        return SnapshotHeader.model_validate_json(r.text.splitlines()[0])

    north_config = header(north).gate_config
    assert north_config is not None and (north_config.gate_id, north_config.daily_limit) == ("north-1", 4)
    assert header(south).gate_config is None
    api.as_(Role.ADMIN).delete(f"/api/v1/gates/{north['id']}/rules")
    assert header(north).gate_config is None


def test_only_admins_set_rules_and_technicians_may_read_them(api: Api, gates: dict[str, dict[str, Any]]) -> None:
    gate_id = gates["north-1"]["id"]
    for role in (Role.CASHIER, Role.FINANCE, Role.GATE_TECH, Role.CUSTOMER):
        assert put(api, gate_id, RULES, role=role).status_code == 403, role
        assert api.as_(role).delete(f"/api/v1/gates/{gate_id}/rules").status_code == 403, role
    assert api.as_(Role.CASHIER).get(f"/api/v1/gates/{gate_id}/rules").status_code == 403
    assert put(api, gate_id, {**RULES, "allowed_kinds": []}).status_code == 422
