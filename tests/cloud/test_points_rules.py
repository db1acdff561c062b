"""Points rules in the database: admins change them, every cloud process earns by them at once, audited."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.deps import Role
from cloud.settings import Settings
from harness.api import Api
from models.api import API_PREFIX
from tests.cloud.api import next_weekday
from tests.cloud.paid_orders import pay, sell

RULES = f"{API_PREFIX}/points/rules"


def earned(api: Api, order_id: int) -> int:
    entries = api.as_(Role.CUSTOMER).get(f"{API_PREFIX}/points", params={"limit": 200}).json()["entries"]
    return sum(e["delta"] for e in entries if e["kind"] == "earn" and e["ref"] == f"order:{order_id}")


def test_the_rules_start_as_the_settings_and_an_admins_change_is_in_force_and_audited(
    api: Api, settings: Settings
) -> None:
    start = api.as_(Role.FINANCE).get(RULES).json()
    assert start["version"] == 0 and start["changed_by"] is None
    assert (start["points_per_yuan"], start["signin_points"], start["signin_streak_bonus"]) == (
        settings.points_per_yuan,
        settings.signin_points,
        settings.signin_streak_bonus,
    )
    new = {"points_per_yuan": 3, "signin_points": 8, "signin_streak_bonus": 20}
    r = api.as_(Role.ADMIN).put(RULES, json=new)
    assert r.status_code == 200, r.text
    assert r.json()["version"] >= 1 and r.json()["changed_by"] == "admin:admin-user"
    assert {k: api.as_(Role.ADMIN).get(RULES).json()[k] for k in new} == new

    again = api.as_(Role.ADMIN).put(RULES, json=new)  # the rules already in force: nothing changes
    assert again.json()["version"] == r.json()["version"]
    audit = [e for e in api.as_(Role.ADMIN).get(f"{API_PREFIX}/audit").json() if e["action"] == "points.rules"]
    assert len(audit) == 1 and audit[0]["actor"] == "admin:admin-user"
    assert audit[0]["detail"]["before"] == {"points_per_yuan": 1, "signin_points": 5, "signin_streak_bonus": 10}
    assert audit[0]["detail"]["after"] == new


def test_a_new_points_per_yuan_applies_to_the_next_paid_order_in_every_cloud_process(
    api: Api, app: FastAPI, settings: Settings, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    day = next_weekday()  # a weekday: 280 yuan
    before = sell(api, site["id"], day_product["id"], day, role=Role.CUSTOMER)
    pay(app, before["id"])
    assert earned(api, before["id"]) == 280  # the settings' 1 per yuan

    rules = {"points_per_yuan": 3, "signin_points": 5, "signin_streak_bonus": 10}
    api.as_(Role.ADMIN).put(RULES, json=rules).raise_for_status()
    after = sell(api, site["id"], day_product["id"], day, role=Role.CUSTOMER)
    pay(app, after["id"])
    assert earned(api, after["id"]) == 840
    assert earned(api, before["id"]) == 280  # points already booked stay as they were

    # Another cloud process on the same database, its settings still saying 1 per yuan.
    other = create_app(settings, expiry_every_s=0)
    assert other.state.settings.points_per_yuan == 1
    with TestClient(other):
        elsewhere = sell(api, site["id"], day_product["id"], day, role=Role.CUSTOMER)
        pay(other, elsewhere["id"])
        assert earned(api, elsewhere["id"]) == 840
        api.as_(Role.ADMIN).put(RULES, json={**rules, "points_per_yuan": 0}).raise_for_status()
        free = sell(api, site["id"], day_product["id"], day, role=Role.CUSTOMER)
        pay(other, free["id"])
        assert earned(api, free["id"]) == 0


def test_a_sign_in_earns_the_sign_in_points_in_force(api: Api) -> None:
    api.as_(Role.ADMIN).put(
        RULES, json={"points_per_yuan": 1, "signin_points": 7, "signin_streak_bonus": 0}
    ).raise_for_status()
    r = api.as_(Role.CUSTOMER).post(f"{API_PREFIX}/points/signin")
    assert r.status_code == 201 and r.json()["points"] == 7 and r.json()["balance"] == 7


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"points_per_yuan": -1, "signin_points": 5, "signin_streak_bonus": 10}, id="negative"),
        pytest.param({"points_per_yuan": 101, "signin_points": 5, "signin_streak_bonus": 10}, id="per-yuan-too-high"),
        pytest.param({"points_per_yuan": 1, "signin_points": 10_001, "signin_streak_bonus": 10}, id="signin-too-high"),
        pytest.param({"points_per_yuan": 1, "signin_points": 5, "signin_streak_bonus": 100_001}, id="bonus-too-high"),
        pytest.param({"points_per_yuan": 1, "signin_points": 5}, id="incomplete"),
        pytest.param({"points_per_yuan": 1.5, "signin_points": 5, "signin_streak_bonus": 10}, id="not-whole"),
        pytest.param({"points_per_yuan": 1, "signin_points": 5, "signin_streak_bonus": 10, "x": 1}, id="unknown-field"),
    ],
)
def test_rules_out_of_bounds_or_incomplete_are_refused_and_change_nothing(api: Api, body: dict[str, Any]) -> None:
    assert api.as_(Role.ADMIN).put(RULES, json=body).status_code == 422
    assert api.as_(Role.ADMIN).get(RULES).json()["version"] == 0


@pytest.mark.parametrize(
    ("role", "method", "status"),
    [
        pytest.param(Role.FINANCE, "PUT", 403, id="finance-reads-only"),
        pytest.param(Role.CASHIER, "GET", 403, id="cashier-no"),
        pytest.param(Role.CUSTOMER, "GET", 403, id="customer-no"),
        pytest.param(None, "GET", 401, id="anonymous-no"),
    ],
)
def test_who_may_see_and_change_the_rules(api: Api, role: Role | None, method: str, status: int) -> None:
    body = {"points_per_yuan": 9, "signin_points": 5, "signin_streak_bonus": 10}
    assert api.as_(role).request(method, RULES, json=body if method == "PUT" else None).status_code == status
    assert api.as_(Role.ADMIN).get(RULES).json()["points_per_yuan"] == 1
