"""Customers: mini-program login against a local WeChat stand-in, window accounts by phone, holders.

The WeChat login is exercised end to end: the app is built with Settings whose
`wechat_login_url` points at a real HTTP server on loopback that answers jscode2session.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from cloud.app import create_app
from cloud.audit.models import AuditEntry
from cloud.customers.models import Customer, Holder
from cloud.customers.routes import get_wechat_login
from cloud.customers.wechat import (
    HttpWeChatLogin,
    StaticWeChatLogin,
    WeChatCodeInvalid,
    WeChatNotConfigured,
    WeChatUnavailable,
)
from cloud.deps import Role
from cloud.settings import Settings
from harness.api import Api
from harness.processes import free_port

APPID = "wx-starfish-test"
APP_SECRET = "stand-in-app-secret"


class WeChatStandIn:
    """Plays api.weixin.qq.com's jscode2session on loopback: known codes log in, others get errcode 40029."""

    def __init__(self) -> None:
        self.codes: dict[str, str] = {}  # code -> openid
        self.busy_codes: set[str] = set()
        self.session_keys: list[str] = []
        self.requests: list[dict[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if path != "/sns/jscode2session":
            return 404, {"errcode": 404, "errmsg": "not found"}
        self.requests.append(query)
        if query.get("appid") != APPID or query.get("secret") != APP_SECRET:
            return 200, {"errcode": 40125, "errmsg": "invalid appsecret"}
        if query.get("grant_type") != "authorization_code":
            return 200, {"errcode": 40002, "errmsg": "invalid grant_type"}
        code = query.get("js_code", "")
        if code in self.busy_codes:
            return 200, {"errcode": -1, "errmsg": "system error"}
        if code not in self.codes:
            return 200, {"errcode": 40029, "errmsg": "invalid code, rid: 1234"}
        session_key = secrets.token_urlsafe(16)
        self.session_keys.append(session_key)
        return 200, {"openid": self.codes.pop(code), "session_key": session_key}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                status, body = stand_in._answer(url.path, query)
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")  # as WeChat does
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def issue_code(self, openid: str) -> str:
        """What wx.login() would hand the mini-program: a one-time code for this user."""
        code = secrets.token_hex(16)
        self.codes[code] = openid
        return code

    def __enter__(self) -> WeChatStandIn:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def wechat() -> Iterator[WeChatStandIn]:
    with WeChatStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def settings(settings: Settings, wechat: WeChatStandIn) -> Settings:
    return settings.model_copy(
        update={"wechat_login_url": wechat.url, "wechat_appid": APPID, "wechat_app_secret": SecretStr(APP_SECRET)}
    )


def login(client: TestClient, code: str) -> Any:
    return client.post("/api/v1/customers/login/wechat", json={"code": code})


def test_first_wechat_login_creates_the_customer_and_the_next_finds_it(
    client: TestClient, wechat: WeChatStandIn
) -> None:
    first = login(client, wechat.issue_code("o-skier-1"))
    assert first.status_code == 200, first.text
    assert first.json()["created"] is True
    customer = first.json()["customer"]
    assert customer["wechat_linked"] is True
    assert "openid" not in json.dumps(first.json())

    again = login(client, wechat.issue_code("o-skier-1"))
    assert again.status_code == 200, again.text
    assert again.json()["created"] is False
    assert again.json()["customer"]["id"] == customer["id"]

    me = client.get("/api/v1/customers/me", headers={"Authorization": f"Bearer {again.json()['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["id"] == customer["id"]
    assert wechat.requests[-1]["appid"] == APPID


def test_the_session_key_is_never_stored(client: TestClient, app: FastAPI, wechat: WeChatStandIn) -> None:
    assert login(client, wechat.issue_code("o-skier-2")).status_code == 200
    with app.state.sessionmaker() as s:
        stored = json.dumps([[str(v) for v in row] for row in s.execute(select(Customer.__table__)).all()])
    assert wechat.session_keys
    assert not any(key in stored for key in wechat.session_keys)


def test_a_bad_code_is_refused_with_wechat_code_invalid(client: TestClient) -> None:
    r = login(client, "not-a-code-wechat-knows")
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "wechat_code_invalid"
    assert r.json()["error"]["message_zh"]


def test_a_code_works_only_once(client: TestClient, wechat: WeChatStandIn) -> None:
    code = wechat.issue_code("o-skier-3")
    assert login(client, code).status_code == 200
    assert login(client, code).json()["error"]["code"] == "wechat_code_invalid"


def test_wechat_busy_is_503_wechat_unavailable(client: TestClient, wechat: WeChatStandIn) -> None:
    wechat.busy_codes.add("busy-code")
    r = login(client, "busy-code")
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "wechat_unavailable"


def test_login_without_wechat_credentials_is_wechat_not_configured(settings: Settings, wechat: WeChatStandIn) -> None:
    unconfigured = settings.model_copy(update={"wechat_appid": "", "wechat_app_secret": SecretStr("")})
    asked = len(wechat.requests)
    with TestClient(create_app(unconfigured, expiry_every_s=0)) as client:
        r = login(client, "any-code")
        assert login(client, "").status_code == 422  # a malformed request is still the client's fault
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "wechat_not_configured"
    assert len(wechat.requests) == asked


def test_a_fake_wechat_can_replace_the_real_one(app: FastAPI, client: TestClient) -> None:
    app.dependency_overrides[get_wechat_login] = lambda: StaticWeChatLogin({"demo-code": "o-demo"})
    r = login(client, "demo-code")
    assert r.status_code == 200, r.text
    assert r.json()["created"] is True
    assert login(client, "other-code").json()["error"]["code"] == "wechat_code_invalid"


def test_the_login_code_is_validated(client: TestClient) -> None:
    assert login(client, "").status_code == 422
    assert login(client, "has spaces&x=1").status_code == 422


def test_http_client_maps_wechat_answers_to_its_errors(wechat: WeChatStandIn) -> None:
    client = HttpWeChatLogin(base_url=wechat.url, appid=APPID, secret=APP_SECRET)
    assert client.code2session(wechat.issue_code("o-direct"))[0] == "o-direct"
    with pytest.raises(WeChatCodeInvalid):
        client.code2session("unknown")
    with pytest.raises(WeChatUnavailable):  # errcode 40125: our secret is wrong, not the user's code
        HttpWeChatLogin(base_url=wechat.url, appid=APPID, secret="wrong").code2session(wechat.issue_code("o-x"))
    with pytest.raises(WeChatNotConfigured):
        HttpWeChatLogin(base_url=wechat.url, appid="", secret="").code2session("c")
    with pytest.raises(WeChatUnavailable):
        HttpWeChatLogin(base_url=f"http://127.0.0.1:{free_port()}", appid=APPID, secret=APP_SECRET).code2session("c")


def test_cashier_creates_a_customer_by_phone_and_finds_it(api: Api, app: FastAPI) -> None:
    cashier = api.as_(Role.CASHIER)
    created = cashier.post("/api/v1/customers", json={"phone": "13912345678", "nickname": "王小二"})
    assert created.status_code == 201, created.text
    assert created.json()["wechat_linked"] is False

    found = cashier.get("/api/v1/customers", params={"phone": "13912345678"})
    assert found.status_code == 200, found.text
    assert [c["id"] for c in found.json()] == [created.json()["id"]]
    assert cashier.get("/api/v1/customers", params={"phone": "13900000000"}).json() == []
    with app.state.sessionmaker() as s:
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "customer.create")).one()
    assert audit.actor == "cashier:cashier-user"


def test_a_phone_is_registered_once(api: Api) -> None:
    admin = api.as_(Role.ADMIN)
    first = admin.post("/api/v1/customers", json={"phone": "13712345678"})
    second = admin.post("/api/v1/customers", json={"phone": "13712345678"})
    assert second.status_code == 409, second.text
    assert second.json()["error"]["code"] == "phone_taken"
    assert second.json()["error"]["details"]["customer_id"] == first.json()["id"]


@pytest.mark.parametrize(
    "phone",
    [
        pytest.param("12012345678", id="second-digit-2"),
        pytest.param("1381234567", id="ten-digits"),
        pytest.param("138123456789", id="twelve-digits"),
        pytest.param("+8613812345678", id="country-code"),
        pytest.param("1381234567a", id="letter"),
    ],
)
def test_only_mainland_mobile_numbers_are_accepted(api: Api, phone: str) -> None:
    cashier = api.as_(Role.CASHIER)
    assert cashier.post("/api/v1/customers", json={"phone": phone}).status_code == 422
    assert cashier.get("/api/v1/customers", params={"phone": phone}).status_code == 422


@pytest.mark.parametrize(
    ("role", "method", "url", "status"),
    [
        pytest.param(Role.CUSTOMER, "GET", "/api/v1/customers?phone=13800000000", 403, id="customer-lookup"),
        pytest.param(Role.FINANCE, "POST", "/api/v1/customers", 403, id="finance-create"),
        pytest.param(Role.GATE_TECH, "GET", "/api/v1/customers?phone=13800000000", 403, id="gate-tech-lookup"),
        pytest.param(Role.CASHIER, "GET", "/api/v1/customers/me", 403, id="staff-me"),
        pytest.param(None, "GET", "/api/v1/customers/me", 401, id="anonymous-me"),
        pytest.param(None, "POST", "/api/v1/customers/me/holders", 401, id="anonymous-holder"),
    ],
)
def test_who_may_call_what(api: Api, role: Role | None, method: str, url: str, status: int) -> None:
    r = api.as_(role).request(method, url, json={"phone": "13612345678"} if method == "POST" else None)
    assert r.status_code == status, r.text


def test_holders_keep_only_the_last_four_id_characters(api: Api, app: FastAPI) -> None:
    me = api.as_(Role.CUSTOMER)
    r = me.post("/api/v1/customers/me/holders", json={"name": " 张三 ", "id_number": "11010519491231002x"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "张三"
    assert r.json()["id_number_last4"] == "002X"
    assert "id_number" not in r.json()
    with app.state.sessionmaker() as s:
        row = s.execute(select(Holder.__table__)).one()
    assert "110105" not in json.dumps([str(v) for v in row])

    listed = me.get("/api/v1/customers/me/holders")
    assert [h["id_number_last4"] for h in listed.json()] == ["002X"]


@pytest.mark.parametrize(
    "id_number",
    [
        pytest.param("110105194912310021", id="resident-id-bad-check-digit"),
        pytest.param("12345", id="too-short"),
        pytest.param("1101-0519-4912", id="punctuation"),
    ],
)
def test_bad_id_numbers_are_refused(api: Api, id_number: str) -> None:
    r = api.as_(Role.CUSTOMER).post("/api/v1/customers/me/holders", json={"name": "李四", "id_number": id_number})
    assert r.status_code == 422, r.text


def test_a_holder_name_with_control_characters_is_refused(api: Api) -> None:
    body = {"name": "李\x00四", "id_number": "E12345678"}
    assert api.as_(Role.CUSTOMER).post("/api/v1/customers/me/holders", json=body).status_code == 422


def test_a_passport_number_is_accepted(api: Api) -> None:
    r = api.as_(Role.CUSTOMER).post("/api/v1/customers/me/holders", json={"name": "Anna", "id_number": "E12345678"})
    assert r.status_code == 201, r.text
    assert r.json()["id_number_last4"] == "5678"


def test_customers_see_only_their_own_holders(api: Api, client: TestClient, wechat: WeChatStandIn) -> None:
    assert (
        api.as_(Role.CUSTOMER)
        .post("/api/v1/customers/me/holders", json={"name": "张三", "id_number": "440308199901011234"})
        .status_code
        == 201
    )
    other = login(client, wechat.issue_code("o-other")).json()["access_token"]
    r = client.get("/api/v1/customers/me/holders", headers={"Authorization": f"Bearer {other}"})
    assert r.json() == []
