"""Gate technicians go down every site's feed: the cloud's active `gate_tech` staff, whole list at each change."""

from __future__ import annotations

import json
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import select

from cloud.deps import Role
from cloud.staff import technicians
from cloud.staff.models import Staff
from cloud.sync.models import FeedChange
from harness.api import Api
from models.sync import SnapshotHeader, Technicians

PASSWORD = "snow groomer 42"


@pytest.fixture
def sites(api: Api, site: dict[str, Any]) -> list[int]:
    """Two sites (the resort's two hills), each with a gate."""
    r = api.as_(Role.ADMIN).post("/api/v1/sites", json={"code": "beidahu", "name": "北大湖"})
    assert r.status_code == 201, r.text
    return [site["id"], r.json()["id"]]


def add_gate(api: Api, site_id: int, code: str = "g1") -> tuple[str, str]:
    r = api.as_(Role.ADMIN).post(f"/api/v1/sites/{site_id}/gates", json={"code": code, "name": code.upper()})
    assert r.status_code == 201, r.text
    return r.json()["username"], r.json()["secret"]


def lists(app: FastAPI, site_id: int) -> list[list[str]]:
    """The site's Technicians changes, oldest first, as the usernames each one lists."""
    with app.state.sessionmaker() as session:
        bodies = session.scalars(
            select(FeedChange.body)
            .where(FeedChange.site_id == site_id, FeedChange.kind == "technicians")
            .order_by(FeedChange.seq)
        )
        return [[a.username for a in Technicians.model_validate(b).accounts] for b in bodies]


def last_list(app: FastAPI, site_id: int) -> Technicians:
    with app.state.sessionmaker() as session:
        body = session.scalar(
            select(FeedChange.body)
            .where(FeedChange.site_id == site_id, FeedChange.kind == "technicians")
            .order_by(FeedChange.seq.desc())
            .limit(1)
        )
    return Technicians.model_validate(body)


def create(api: Api, username: str, role: str, password: str = PASSWORD) -> int:
    r = api.as_(Role.ADMIN).post("/api/v1/staff", json={"username": username, "password": password, "role": role})
    assert r.status_code == 201, r.text
    assert "password" not in r.text and "$argon2" not in r.text
    return int(r.json()["id"])


def patch(api: Api, staff_id: int, **body: Any) -> dict[str, Any]:
    r = api.as_(Role.ADMIN).request("PATCH", f"/api/v1/staff/{staff_id}", json=body)
    assert r.status_code == 200, r.text
    assert "$argon2" not in r.text and "password" not in r.text
    return dict(r.json())


def test_each_change_to_the_technicians_sends_every_site_one_list_and_other_staff_changes_send_none(
    app: FastAPI, api: Api, sites: list[int]
) -> None:
    zhao = create(api, "zhao.tech", "gate_tech")
    assert [lists(app, s) for s in sites] == [[["zhao.tech"]]] * 2
    cashier = create(api, "wang.cashier", "cashier")
    patch(api, cashier, password="a new cashier password")
    patch(api, cashier, active=False)
    assert [lists(app, s) for s in sites] == [[["zhao.tech"]]] * 2, "no list for staff who are not technicians"

    steps: list[tuple[int, dict[str, Any], list[str]]] = [
        (cashier, {"active": True, "role": "gate_tech"}, ["wang.cashier", "zhao.tech"]),  # sorted by username
        (zhao, {"active": False}, ["wang.cashier"]),
        (zhao, {"active": True}, ["wang.cashier", "zhao.tech"]),
        (zhao, {"password": "a fresh password"}, ["wang.cashier", "zhao.tech"]),
        (cashier, {"role": "finance"}, ["zhao.tech"]),
    ]
    for n, (who, body, expected) in enumerate(steps, start=2):
        patch(api, who, **body)
        for s in sites:
            got = lists(app, s)
            assert len(got) == n and got[-1] == expected, body
    patch(api, zhao, active=True)  # already active: nothing changes
    assert len(lists(app, sites[0])) == len(steps) + 1


def test_the_list_carries_the_argon2_hash_of_the_current_password_and_never_the_password(
    app: FastAPI, api: Api, sites: list[int]
) -> None:
    zhao = create(api, "zhao.tech", "gate_tech")
    (account,) = last_list(app, sites[0]).accounts
    assert account.password_hash.startswith("$argon2id$")
    assert PasswordHasher().verify(account.password_hash, PASSWORD)

    patch(api, zhao, password="a fresh password")
    (account,) = last_list(app, sites[1]).accounts
    assert PasswordHasher().verify(account.password_hash, "a fresh password")
    with app.state.sessionmaker() as session:
        feed = json.dumps(list(session.scalars(select(FeedChange.body))))
    assert PASSWORD not in feed and "a fresh password" not in feed


def test_staff_answers_and_the_audit_never_show_a_hash_or_a_password(api: Api, sites: list[int]) -> None:
    zhao = create(api, "zhao.tech", "gate_tech")
    patch(api, zhao, password="a fresh password", active=False)
    listed = api.as_(Role.ADMIN).get("/api/v1/staff")
    assert listed.status_code == 200 and "zhao.tech" in listed.text
    audit = api.as_(Role.ADMIN).get("/api/v1/audit", params={"entity": "staff"})
    for text in (listed.text, audit.text):
        assert "$argon2" not in text and "a fresh password" not in text and PASSWORD not in text
    update = audit.json()[0]
    assert (update["action"], update["actor"]) == ("staff.update", "admin:admin-user")
    assert update["detail"] == {"username": "zhao.tech", "active": False, "password": "changed"}


def test_a_changed_password_is_the_one_the_cloud_accepts(api: Api, sites: list[int]) -> None:
    zhao = create(api, "zhao.tech", "gate_tech")
    patch(api, zhao, password="a fresh password")

    def login(password: str) -> int:
        data = {"username": "zhao.tech", "password": password}
        return api.client.post("/api/v1/auth/token", data=data).status_code

    assert (login(PASSWORD), login("a fresh password")) == (401, 200)
    patch(api, zhao, active=False)
    assert login("a fresh password") == 401


def test_every_snapshot_header_carries_the_technicians_and_a_disabled_one_is_gone_from_the_next(
    api: Api, sites: list[int]
) -> None:
    gate = add_gate(api, sites[0])

    def header() -> SnapshotHeader:
        r = api.client.get("/api/v1/sync/sites/nanshan/snapshot", auth=gate)
        assert r.status_code == 200, r.text
        assert PASSWORD not in r.text
        return SnapshotHeader.model_validate_json(r.text.splitlines()[0])

    assert header().technicians == [], "always a list: the gate then knows it has none"
    zhao = create(api, "zhao.tech", "gate_tech")
    create(api, "li.tech", "gate_tech")
    got = header().technicians
    assert got is not None and [a.username for a in got] == ["li.tech", "zhao.tech"]
    assert PasswordHasher().verify(got[1].password_hash, PASSWORD)
    patch(api, zhao, active=False)
    got = header().technicians
    assert got is not None and [a.username for a in got] == ["li.tech"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="nothing-to-change"),
        pytest.param({"password": "short"}, id="short-password"),
        pytest.param({"role": "customer"}, id="not-a-staff-role"),
        pytest.param({"password_hash": "$argon2id$v=19$m=65536,t=3,p=4$x$y"}, id="a-hash-is-not-accepted"),
    ],
)
def test_a_staff_change_that_is_not_one_is_refused(api: Api, sites: list[int], body: dict[str, Any]) -> None:
    zhao = create(api, "zhao.tech", "gate_tech")
    r = api.as_(Role.ADMIN).request("PATCH", f"/api/v1/staff/{zhao}", json=body)
    assert r.status_code in (400, 422), r.text


def test_an_unknown_staff_member_is_404_and_the_last_admin_cannot_be_disabled_or_demoted(
    app: FastAPI, api: Api, sites: list[int]
) -> None:
    r = api.as_(Role.ADMIN).request("PATCH", "/api/v1/staff/9999", json={"active": False})
    assert r.status_code == 404
    with app.state.sessionmaker() as session:
        me = session.scalar(select(Staff.id).where(Staff.username == "admin-user"))
    for body in ({"active": False}, {"role": "gate_tech"}):
        r = api.as_(Role.ADMIN).request("PATCH", f"/api/v1/staff/{me}", json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "last_admin")
    assert lists(app, sites[0]) == [], "a refused change sends nothing"
    other = create(api, "chen.admin", "admin")
    assert patch(api, me, role="gate_tech")["role"] == "gate_tech"  # another admin remains
    assert lists(app, sites[0]) == [[]], "admin-user has no password the gates could check"
    r = api.as_(Role.ADMIN).request("PATCH", f"/api/v1/staff/{other}", json={"active": False})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "last_admin")


def test_startup_announces_technicians_that_no_feed_has_yet_and_only_once(
    app: FastAPI, api: Api, sites: list[int]
) -> None:
    add_gate(api, sites[0])  # the second site has no gates: nobody to tell
    with app.state.sessionmaker() as session:
        assert technicians.ensure(session) == [], "no technicians and no list yet: nothing to say"
        # An upgraded cloud: a technician who was created before lists went down the feed.
        session.add(Staff(username="zhao.tech", password_hash=PasswordHasher().hash(PASSWORD), role="gate_tech"))
        session.commit()
        assert technicians.ensure(session) == [sites[0]]
        assert technicians.ensure(session) == []
    assert (lists(app, sites[0]), lists(app, sites[1])) == ([["zhao.tech"]], [])
