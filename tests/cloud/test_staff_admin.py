"""Staff administration: a member's detail, forced logout, sign-ins in the audit log, rotating refresh tokens."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.db import utcnow
from cloud.deps import Role
from cloud.errors import DomainError
from cloud.settings import Settings
from cloud.staff import service, sessions
from harness.api import Api
from models.api import API_PREFIX

PASSWORD = "correct horse battery"
TOKEN, REFRESH, LOGOUT = f"{API_PREFIX}/auth/token", f"{API_PREFIX}/auth/refresh", f"{API_PREFIX}/auth/logout"


@pytest.fixture
def cashier_id(api: Api) -> int:
    r = api.as_(Role.ADMIN).post(
        f"{API_PREFIX}/staff", json={"username": "wang.cashier", "password": PASSWORD, "role": "cashier"}
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


@pytest.fixture
def other_process(settings: Settings) -> Iterator[TestClient]:
    """A second cloud process on the same database that reads a staff account back on every request."""
    with TestClient(create_app(settings.model_copy(update={"staff_recheck_s": 0.0}), expiry_every_s=0)) as c:
        yield c


def sign_in(client: TestClient, password: str = PASSWORD, username: str = "wang.cashier") -> dict[str, Any]:
    r = client.post(TOKEN, data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return dict(r.json())


def bearer(signed: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {signed['access_token']}"}


def refresh(client: TestClient, signed: dict[str, Any]) -> Any:
    return client.post(REFRESH, json={"refresh_token": signed["refresh_token"]})


def code(r: Any) -> str:
    return str(r.json()["error"]["code"])


def audit(api: Api, action: str) -> list[dict[str, Any]]:
    rows = api.as_(Role.ADMIN).get(f"{API_PREFIX}/audit", params={"entity": "staff", "limit": 1000}).json()
    return [e for e in rows if e["action"] == action]


def test_the_detail_shows_role_state_last_sign_ins_and_live_refresh_sessions(api: Api, cashier_id: int) -> None:
    url = f"{API_PREFIX}/staff/{cashier_id}"
    fresh = api.as_(Role.ADMIN).get(url).json()
    assert fresh["username"] == "wang.cashier" and fresh["role"] == "cashier" and fresh["active"] is True
    assert fresh["last_login_at"] is None and fresh["refresh_sessions"] == 0 and fresh["created_at"]
    api.client.post(TOKEN, data={"username": "wang.cashier", "password": "not the password"})
    sign_in(api.client)
    sign_in(api.client)  # a second device
    seen = api.as_(Role.ADMIN).get(url).json()
    assert seen["last_login_at"] and seen["last_failed_login_at"] and seen["refresh_sessions"] == 2
    assert seen["failed_logins"] == 0  # cleared by the sign-in that followed
    assert api.as_(Role.ADMIN).get(f"{API_PREFIX}/staff/999999").status_code == 404
    assert api.as_(Role.CASHIER).get(url).status_code == 403


def test_a_forced_logout_ends_every_session_in_every_process_and_a_new_sign_in_works(
    api: Api, cashier_id: int, other_process: TestClient
) -> None:
    laptop, handheld = sign_in(api.client), sign_in(api.client)
    for client in (api.client, other_process):
        assert client.get(f"{API_PREFIX}/sites", headers=bearer(laptop)).status_code == 200
    r = api.as_(Role.ADMIN).post(f"{API_PREFIX}/staff/{cashier_id}/logout")
    assert r.status_code == 200 and r.json()["refresh_sessions"] == 0 and r.json()["sessions_ended_at"]
    for client in (api.client, other_process):  # this process forgets at once; the other reads it back
        for device in (laptop, handheld):
            refused = client.get(f"{API_PREFIX}/sites", headers=bearer(device))
            assert refused.status_code == 401 and code(refused) == "staff_disabled"
    assert code(refresh(api.client, handheld)) == "refresh_revoked"
    again = sign_in(other_process)
    for client in (api.client, other_process):
        assert client.get(f"{API_PREFIX}/sites", headers=bearer(again)).status_code == 200
    assert refresh(api.client, again).status_code == 200
    assert [e["actor"] for e in audit(api, "staff.force_logout")] == ["admin:admin-user"]


def test_an_admin_signs_out_rather_than_forcing_their_own_logout(api: Api) -> None:
    admin = api.as_(Role.ADMIN)
    me = next(s for s in admin.get(f"{API_PREFIX}/staff").json() if s["username"] == "admin-user")
    r = admin.post(f"{API_PREFIX}/staff/{me['id']}/logout")
    assert r.status_code == 409 and code(r) == "own_sessions"
    assert admin.get(f"{API_PREFIX}/staff").status_code == 200  # still signed in


def test_a_password_reset_by_an_admin_ends_the_members_sessions(
    api: Api, cashier_id: int, other_process: TestClient
) -> None:
    old = sign_in(api.client)
    api.as_(Role.ADMIN).patch(
        f"{API_PREFIX}/staff/{cashier_id}", json={"password": "a brand new password"}
    ).raise_for_status()
    assert other_process.get(f"{API_PREFIX}/sites", headers=bearer(old)).status_code == 401
    assert code(refresh(other_process, old)) == "refresh_revoked"
    assert api.client.post(TOKEN, data={"username": "wang.cashier", "password": PASSWORD}).status_code == 401
    new = sign_in(api.client, "a brand new password")
    assert other_process.get(f"{API_PREFIX}/sites", headers=bearer(new)).status_code == 200


def test_a_member_signs_themselves_out_everywhere(api: Api, cashier_id: int, other_process: TestClient) -> None:
    one, two = sign_in(api.client), sign_in(api.client)
    assert api.client.post(LOGOUT, headers=bearer(one)).status_code == 204
    assert other_process.get(f"{API_PREFIX}/sites", headers=bearer(two)).status_code == 401
    assert code(refresh(api.client, two)) == "refresh_revoked"
    assert [e["actor"] for e in audit(api, "staff.logout")] == ["cashier:wang.cashier"]
    assert api.as_(Role.CUSTOMER).post(LOGOUT).status_code == 403  # customers have no staff session
    assert api.client.post(LOGOUT).status_code == 401


def test_refreshing_rotates_and_a_reused_refresh_token_ends_every_session(
    api: Api, cashier_id: int, other_process: TestClient
) -> None:
    first = sign_in(api.client)
    elsewhere = sign_in(api.client)  # another sign-in (family) of the member
    assert first["expires_in"] == api.app.state.settings.jwt_ttl_minutes * 60
    r = refresh(api.client, first)
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"] and second["role"] == "cashier"
    assert second["refresh_expires_at"] == first["refresh_expires_at"]  # a refresh never extends the sign-in
    assert api.client.get(f"{API_PREFIX}/sites", headers=bearer(second)).status_code == 200

    stolen = refresh(api.client, first)  # the used-up token again: someone else holds a copy
    assert stolen.status_code == 401 and code(stolen) == "refresh_reused"
    assert code(refresh(api.client, second)) == "refresh_revoked"  # the whole family is ended
    # ... and the access token whoever refreshed first got (within staff_recheck_s in every process, like any
    # end of sessions): every session of the member ends, the other device's too
    assert other_process.get(f"{API_PREFIX}/sites", headers=bearer(second)).status_code == 401
    assert code(refresh(api.client, elsewhere)) == "refresh_revoked"
    assert refresh(api.client, sign_in(api.client)).status_code == 200  # the password signs in again
    reuse = audit(api, "staff.refresh_reuse")
    assert len(reuse) == 1 and reuse[0]["entity_id"] == str(cashier_id)
    bogus = api.client.post(REFRESH, json={"refresh_token": "not-a-token"})
    assert bogus.status_code == 401 and code(bogus) == "invalid_refresh_token"


def test_refresh_is_refused_while_the_member_is_disabled(api: Api, cashier_id: int) -> None:
    signed = sign_in(api.client)
    api.as_(Role.ADMIN).patch(f"{API_PREFIX}/staff/{cashier_id}", json={"active": False}).raise_for_status()
    r = refresh(api.client, signed)
    assert r.status_code == 401 and code(r) == "staff_disabled"
    api.as_(Role.ADMIN).patch(f"{API_PREFIX}/staff/{cashier_id}", json={"active": True}).raise_for_status()
    assert refresh(api.client, signed).status_code == 200  # a suspension, not a logout


def test_a_sign_in_can_be_refreshed_until_refresh_ttl_hours_after_the_password(
    api: Api, app: FastAPI, cashier_id: int
) -> None:
    settings: Settings = app.state.settings
    now = utcnow()
    with app.state.sessionmaker() as s:
        signed = sessions.login(s, settings, "wang.cashier", PASSWORD, client="test", now=now)
        later = sessions.refresh(s, settings, signed.refresh_token, client="test", now=now + timedelta(days=6))
        with pytest.raises(DomainError) as exc:
            sessions.refresh(s, settings, later.refresh_token, client="test", now=now + timedelta(days=7, seconds=1))
    assert exc.value.code == "refresh_expired"


def test_every_sign_in_is_audited_with_the_username_tried_and_the_address_never_the_password(
    api: Api, cashier_id: int
) -> None:
    sign_in(api.client)
    tries = [("nobody", "a password one", "unknown_user"), ("wang.cashier", "a password two", "wrong_password")]
    for username, password, _ in tries:
        r = api.client.post(TOKEN, data={"username": username, "password": password})
        assert r.status_code == 401 and code(r) == "bad_credentials"  # the same answer, whatever the reason
    api.as_(Role.ADMIN).patch(f"{API_PREFIX}/staff/{cashier_id}", json={"active": False}).raise_for_status()
    r = api.client.post(TOKEN, data={"username": "wang.cashier", "password": PASSWORD})
    assert r.status_code == 401 and code(r) == "bad_credentials"

    ok = audit(api, "staff.login")
    assert len(ok) == 1 and ok[0]["actor"] == "cashier:wang.cashier" and ok[0]["entity_id"] == str(cashier_id)
    assert ok[0]["detail"] == {"username": "wang.cashier", "client": "testclient"}
    failed = sorted(audit(api, "staff.login_failed"), key=lambda e: e["id"])
    assert [(e["detail"]["username"], e["detail"]["reason"]) for e in failed] == [
        ("nobody", "unknown_user"),
        ("wang.cashier", "wrong_password"),
        ("wang.cashier", "disabled"),
    ]
    assert {e["actor"] for e in failed} == {"anonymous"} and {e["detail"]["client"] for e in failed} == {"testclient"}
    everything = json.dumps(api.as_(Role.ADMIN).get(f"{API_PREFIX}/audit", params={"limit": 1000}).json())
    assert PASSWORD not in everything and "a password one" not in everything and "a password two" not in everything


def test_five_wrong_passwords_in_a_row_slow_that_username_down_to_a_try_a_minute(
    api: Api, app: FastAPI, cashier_id: int
) -> None:
    for _ in range(sessions.LOCK_AFTER):
        assert api.client.post(TOKEN, data={"username": "wang.cashier", "password": "guess guess"}).status_code == 401
    for _ in range(3):
        r = api.client.post(TOKEN, data={"username": "wang.cashier", "password": PASSWORD})  # right, but too soon
        assert r.status_code == 429 and code(r) == "too_many_attempts" and r.json()["error"]["message_zh"]
    reasons = [e["detail"]["reason"] for e in sorted(audit(api, "staff.login_failed"), key=lambda e: e["id"])]
    assert reasons == ["wrong_password"] * sessions.LOCK_AFTER + ["locked"]  # one audit row per lock window
    api.as_(Role.ADMIN).post(
        f"{API_PREFIX}/staff", json={"username": "li.finance", "password": PASSWORD, "role": "finance"}
    ).raise_for_status()
    assert sign_in(api.client, username="li.finance")["role"] == "finance"  # another username is not slowed
    with app.state.sessionmaker() as s:
        later = utcnow() + timedelta(seconds=sessions.LOCK_S + 1)
        signed = sessions.login(s, app.state.settings, "wang.cashier", PASSWORD, client="test", now=later)
    assert signed.role is Role.CASHIER
    detail = api.as_(Role.ADMIN).get(f"{API_PREFIX}/staff/{cashier_id}").json()
    assert detail["failed_logins"] == 0


def attempt(app: FastAPI, password: str, *, client: str, at: datetime) -> str:
    """One sign-in as wang.cashier straight through the service, from `client` at `at`: "ok" or the error code."""
    with app.state.sessionmaker() as s:
        try:
            sessions.login(s, app.state.settings, "wang.cashier", password, client=client, now=at)
        except DomainError as exc:
            return exc.code
    return "ok"


def test_a_guesser_cannot_keep_the_member_locked_out_of_their_own_counter_pc(
    api: Api, app: FastAPI, cashier_id: int
) -> None:
    start, guesser, counter = utcnow(), "203.0.113.9", "10.20.0.7"
    for _ in range(sessions.LOCK_AFTER):
        assert attempt(app, "guess guess", client=guesser, at=start) == "bad_credentials"
    for window in range(1, 4):  # one wrong guess just after each window keeps the guesser's address locked
        at = start + window * timedelta(seconds=sessions.LOCK_S + 1)
        assert attempt(app, "guess guess", client=guesser, at=at) == "bad_credentials"
        assert attempt(app, PASSWORD, client=guesser, at=at + timedelta(seconds=1)) == "too_many_attempts"
        assert attempt(app, PASSWORD, client=counter, at=at + timedelta(seconds=1)) == "ok"  # the member gets in
    counts = [e["detail"]["reason"] for e in audit(api, "staff.login_failed") if e["detail"]["client"] == guesser]
    assert counts.count("wrong_password") == sessions.LOCK_AFTER + 3 and counts.count("locked") == 3
    # a password reset clears every address's count: the guesser's address may try the new one at once
    api.as_(Role.ADMIN).patch(f"{API_PREFIX}/staff/{cashier_id}", json={"password": "a brand new password"})
    assert attempt(app, "a brand new password", client=guesser, at=start + timedelta(seconds=250)) == "ok"


def test_parallel_wrong_guesses_are_counted_before_any_is_checked(api: Api, app: FastAPI, cashier_id: int) -> None:
    extra = 3
    start = threading.Barrier(sessions.LOCK_AFTER + extra)
    now = utcnow()

    def guess(_: int) -> str:
        start.wait()
        return attempt(app, "guess guess", client="203.0.113.9", at=now)

    with ThreadPoolExecutor(sessions.LOCK_AFTER + extra) as pool:
        codes = list(pool.map(guess, range(sessions.LOCK_AFTER + extra)))
    assert codes.count("bad_credentials") == sessions.LOCK_AFTER and codes.count("too_many_attempts") == extra
    assert attempt(app, PASSWORD, client="10.20.0.7", at=now) == "ok"


def test_the_old_password_does_not_sign_in_once_a_reset_lands_while_it_is_checked(
    api: Api, app: FastAPI, cashier_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = sessions.password_matches

    def reset_meanwhile(password_hash: str | None, password: str) -> bool:
        matches = check(password_hash, password)
        with app.state.sessionmaker() as s:  # an admin's reset commits while argon2 runs
            service.update_staff(s, "admin:admin-user", cashier_id, password="a brand new password")
        return matches

    monkeypatch.setattr(sessions, "password_matches", reset_meanwhile)
    assert attempt(app, PASSWORD, client="10.20.0.7", at=utcnow()) == "bad_credentials"
    monkeypatch.undo()
    assert audit(api, "staff.login") == []
    assert [e["detail"]["reason"] for e in audit(api, "staff.login_failed")] == ["wrong_password"]
    assert attempt(app, "a brand new password", client="10.20.0.7", at=utcnow()) == "ok"


@pytest.mark.parametrize(
    ("method", "path", "role", "status"),
    [
        pytest.param("GET", "/staff/{id}", Role.FINANCE, 403, id="detail-admin-only"),
        pytest.param("POST", "/staff/{id}/logout", Role.CASHIER, 403, id="forced-logout-admin-only"),
        pytest.param("POST", "/staff/{id}/logout", None, 401, id="forced-logout-signed-in"),
        pytest.param("GET", "/staff/{id}", Role.CUSTOMER, 403, id="customers-no"),
    ],
)
def test_who_may_look_at_staff_and_log_them_out(
    api: Api, cashier_id: int, method: str, path: str, role: Role | None, status: int
) -> None:
    signed = sign_in(api.client)
    url = API_PREFIX + path.replace("{id}", str(cashier_id))
    assert api.as_(role).request(method, url).status_code == status
    assert api.client.get(f"{API_PREFIX}/sites", headers=bearer(signed)).status_code == 200  # still signed in
