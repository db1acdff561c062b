"""Staff sign-in (OAuth2 password + JWT), sites and gates with their own credentials, settings."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from cloud.deps import Role
from cloud.settings import DEV_JWT_SECRET, Settings
from cloud.sites.service import verify_gate
from cloud.staff.service import create_staff
from harness.api import Api


def test_staff_signs_in_with_password_and_gets_a_working_token(api: Api, app: FastAPI) -> None:
    with app.state.sessionmaker() as s:
        create_staff(s, None, "wang.cashier", "correct horse battery", Role.CASHIER)
    bad = api.client.post("/api/v1/auth/token", data={"username": "wang.cashier", "password": "wrong password!"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "bad_credentials"
    nobody = api.client.post("/api/v1/auth/token", data={"username": "nobody", "password": "whatever1234"})
    assert nobody.status_code == 401
    r = api.client.post("/api/v1/auth/token", data={"username": "wang.cashier", "password": "correct horse battery"})
    assert r.status_code == 200 and r.json()["role"] == "cashier"
    token = r.json()["access_token"]
    assert api.client.get("/api/v1/sites", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert api.client.get("/api/v1/staff", headers={"Authorization": f"Bearer {token}"}).status_code == 403


@pytest.mark.parametrize("token", ["", "not-a-jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.x"])
def test_missing_or_forged_tokens_are_401(api: Api, token: str) -> None:
    r = api.client.get("/api/v1/sites", headers={"Authorization": f"Bearer {token}"} if token else {})
    assert r.status_code == 401


def test_token_signed_with_another_secret_is_refused(api: Api, app: FastAPI) -> None:
    from cloud.staff.service import issue_token

    other = Settings(environment="development")
    forged = issue_token(other, role=Role.ADMIN, subject_id=1, name="mallory")
    assert api.client.get("/api/v1/staff", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_admin_creates_staff_and_it_is_audited(api: Api) -> None:
    r = api.as_(Role.ADMIN).post(
        "/api/v1/staff", json={"username": "li.finance", "password": "long enough pw", "role": "finance"}
    )
    assert r.status_code == 201
    dup = api.as_(Role.ADMIN).post(
        "/api/v1/staff", json={"username": "li.finance", "password": "long enough pw", "role": "finance"}
    )
    assert dup.status_code == 409
    audit = api.as_(Role.FINANCE).get("/api/v1/audit", params={"entity": "staff"}).json()
    assert audit[0]["action"] == "staff.create" and audit[0]["actor"] == "admin:admin-user"


def test_each_gate_gets_its_own_credentials_shown_once(api: Api, app: FastAPI, site: dict[str, Any]) -> None:
    a = (
        api.as_(Role.ADMIN)
        .post(f"/api/v1/sites/{site['id']}/gates", json={"code": "north-1", "name": "北门1号"})
        .json()
    )
    b = (
        api.as_(Role.ADMIN)
        .post(f"/api/v1/sites/{site['id']}/gates", json={"code": "north-2", "name": "北门2号"})
        .json()
    )
    assert a["username"] != b["username"] and a["secret"] != b["secret"]
    listed = api.as_(Role.GATE_TECH).get(f"/api/v1/sites/{site['id']}/gates").json()
    assert all("secret" not in g for g in listed)
    with app.state.sessionmaker() as s:
        gate = verify_gate(s, a["username"], a["secret"])
        assert gate is not None and gate.code == "north-1"
        assert verify_gate(s, a["username"], b["secret"]) is None
        assert verify_gate(s, "gate-999", a["secret"]) is None
    rotated = api.as_(Role.ADMIN).post(f"/api/v1/gates/{a['id']}/rotate-secret").json()
    with app.state.sessionmaker() as s:
        assert verify_gate(s, a["username"], a["secret"]) is None
        assert verify_gate(s, a["username"], rotated["secret"]) is not None


def test_unknown_time_zone_and_duplicate_site_are_clear_errors(api: Api, site: dict[str, Any]) -> None:
    r = api.as_(Role.ADMIN).post("/api/v1/sites", json={"code": "x", "name": "X", "timezone": "Mars/Olympus"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_timezone"
    r = api.as_(Role.ADMIN).post("/api/v1/sites", json={"code": "nanshan", "name": "again"})
    assert r.status_code == 409 and r.json()["error"]["message_zh"]


@pytest.mark.parametrize("environment", ["production", "test"])
def test_default_secrets_refuse_to_start_outside_development(environment: str) -> None:
    with pytest.raises(ValidationError, match="STARFISH_JWT_SECRET"):
        Settings(environment=environment)
    with pytest.raises(ValidationError, match="SIGNING_KEY"):
        Settings(environment=environment, jwt_secret="y" * 40)
    with pytest.raises(ValidationError, match="STARFISH_KEYSET_ROOT_KEY"):
        Settings(environment=environment, jwt_secret="y" * 40, signing_key_b64="E" * 43 + "=")


def test_development_defaults_work_for_the_demo() -> None:
    s = Settings(environment="development")
    assert s.jwt_secret.get_secret_value() == DEV_JWT_SECRET
    assert s.signing_key.public_key() is not None


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARFISH_ENVIRONMENT", "production")
    monkeypatch.setenv("STARFISH_JWT_SECRET", "z" * 48)
    monkeypatch.setenv("STARFISH_SIGNING_KEY_B64", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    monkeypatch.setenv("STARFISH_KEYSET_ROOT_KEY_B64", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    monkeypatch.setenv("STARFISH_FACE_KEY_B64", "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    monkeypatch.setenv("STARFISH_DATABASE_URL", "postgresql+psycopg://u@h/db")
    s = Settings()
    assert s.environment == "production" and s.database_url.startswith("postgresql")


def test_a_staff_member_disabled_or_given_another_role_loses_their_open_session(api: Api, app: FastAPI) -> None:
    from cloud.deps import _StaffCheck

    app.state.staff_check = _StaffCheck(recheck_s=0)  # read the account back on every request
    for name, role in (("wang.cashier", "cashier"), ("zhao.admin", "admin")):
        r = api.as_(Role.ADMIN).post(
            "/api/v1/staff", json={"username": name, "password": "long enough pw", "role": role}
        )
        assert r.status_code == 201
    ids = {s["username"]: s["id"] for s in api.as_(Role.ADMIN).get("/api/v1/staff").json()}

    def bearer(name: str) -> dict[str, str]:
        r = api.client.post("/api/v1/auth/token", data={"username": name, "password": "long enough pw"})
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    cashier, admin = bearer("wang.cashier"), bearer("zhao.admin")
    assert api.client.get("/api/v1/sites", headers=cashier).status_code == 200
    assert api.client.get("/api/v1/staff", headers=admin).status_code == 200
    api.as_(Role.ADMIN).patch(f"/api/v1/staff/{ids['wang.cashier']}", json={"active": False}).raise_for_status()
    api.as_(Role.ADMIN).patch(f"/api/v1/staff/{ids['zhao.admin']}", json={"role": "cashier"}).raise_for_status()
    r = api.client.get("/api/v1/sites", headers=cashier)
    assert r.status_code == 401 and r.json()["error"]["code"] == "staff_disabled"
    r = api.client.get("/api/v1/staff", headers=admin)  # a demoted admin's token no longer acts as admin
    assert r.status_code == 401 and r.json()["error"]["code"] == "staff_disabled"
    assert api.client.get("/api/v1/sites", headers=bearer("zhao.admin")).status_code == 200  # signed in again


def test_a_member_re_enabled_is_let_in_at_once_though_their_refusal_was_just_read(api: Api, app: FastAPI) -> None:
    r = api.as_(Role.ADMIN).post(
        "/api/v1/staff", json={"username": "wang.cashier", "password": "long enough pw", "role": "cashier"}
    )
    staff_id = r.json()["id"]
    r = api.client.post("/api/v1/auth/token", data={"username": "wang.cashier", "password": "long enough pw"})
    cashier = {"Authorization": f"Bearer {r.json()['access_token']}"}
    api.as_(Role.ADMIN).patch(f"/api/v1/staff/{staff_id}", json={"active": False}).raise_for_status()
    assert api.client.get("/api/v1/sites", headers=cashier).status_code == 401  # read now: the first use
    api.as_(Role.ADMIN).patch(f"/api/v1/staff/{staff_id}", json={"active": True}).raise_for_status()
    assert api.client.get("/api/v1/sites", headers=cashier).status_code == 200  # a "no" is never kept
