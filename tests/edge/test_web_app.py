"""The technician page's API against a fake gate: logins, sessions, CSRF and origin, actions, reads,
/metrics and headers; then the real server on a loopback port (session, the live stream, a taken port)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from edge.config import BreakGlassConfig, WebConfig
from edge.web.app import STATIC_DIR, build_app
from edge.web.port import ActionResult, JournalPage
from edge.web.server import WebServer, WebServerError
from harness.processes import eventually
from tests.edge.web_fakes import Clock, FakePanel, decision, fast_hash, tech_action

PW = "snow-on-the-pass"
BG_PW = "break-the-glass-now"
MIN = 60.0


@pytest.fixture
def panel() -> FakePanel:
    return FakePanel(technicians={"li.wei": fast_hash(PW), "zhang.san": fast_hash(PW)})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def static(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text("<!doctype html><title>gate</title>")
    (tmp_path / "login.html").write_text("<!doctype html><title>login</title>")
    (tmp_path / "app.css").write_text("body{}")
    return tmp_path


GATE = "http://gate-7.resort.lan"  # as web.hostnames names the gate in these tests


def _client(panel: FakePanel, clock: Clock, static: Path, address: str = "10.0.0.5", **web: Any) -> TestClient:
    app = build_app(panel, WebConfig(hostnames=["gate-7.resort.lan"], **web), static_dir=static, monotonic=clock)
    return TestClient(app, base_url=GATE, client=(address, 50000))


@pytest.fixture
def client(panel: FakePanel, clock: Clock, static: Path) -> Iterator[TestClient]:
    with _client(panel, clock, static) as c:
        yield c


def login(client: TestClient, name: str = "li.wei", password: str = PW) -> str:
    r = client.post("/api/login", json={"username": name, "password": password})
    assert r.status_code == 200, r.text
    csrf: str = r.json()["csrf"]
    return csrf


def code(r: httpx.Response) -> str:
    body: dict[str, Any] = r.json()
    assert set(body) == {"code", "en", "zh", "details"}
    return str(body["code"])


# -- logging in --------------------------------------------------------------------------------------------


def test_a_cloud_technician_logs_in_and_gets_a_strict_http_only_cookie_and_a_csrf_token(
    client: TestClient, panel: FakePanel
) -> None:
    assert code(client.get("/api/session")) == "login_required"
    r = client.post("/api/login", json={"username": "li.wei", "password": PW})
    assert r.status_code == 200
    body = r.json()
    assert body["username"] == "li.wei" and body["source"] == "cloud" and body["lang"] == "zh-CN"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("sf_gate_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert client.get("/api/session").json() == body
    assert panel.journal == [("li.wei", "login", "", True, "cloud from 10.0.0.5")]


def test_a_session_cookie_is_secure_when_the_page_is_served_over_tls(
    panel: FakePanel, clock: Clock, static: Path, tmp_path: Path
) -> None:
    with _client(panel, clock, static, tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem") as c:
        r = c.post("/api/login", json={"username": "li.wei", "password": PW})
    assert "Secure" in r.headers["set-cookie"]


@pytest.mark.parametrize(
    ("name", "password"),
    [pytest.param("li.wei", PW + "x", id="wrong-password"), pytest.param("nobody", PW, id="unknown-name")],
)
def test_a_wrong_password_and_an_unknown_name_get_the_same_answer_and_are_journaled(
    client: TestClient, panel: FakePanel, name: str, password: str
) -> None:
    r = client.post("/api/login", json={"username": name, "password": password})
    assert r.status_code == 401 and code(r) == "bad_login"
    assert "set-cookie" not in r.headers
    assert panel.journal == [(name, "login_failed", "", False, "from 10.0.0.5")]
    assert code(client.get("/api/session")) == "login_required"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"username": "li.wei"}, id="no-password"),
        pytest.param({"username": "", "password": PW}, id="empty-name"),
        pytest.param({"username": "x" * 65, "password": PW}, id="long-name"),
        pytest.param({"username": ["li.wei"], "password": PW}, id="name-not-text"),
    ],
)
def test_a_malformed_login_is_refused_before_any_password_check(
    client: TestClient, panel: FakePanel, body: dict[str, Any]
) -> None:
    r = client.post("/api/login", json=body)
    assert r.status_code == 422 and code(r) == "bad_request"
    assert panel.journal == []


def test_a_login_must_be_json(client: TestClient) -> None:
    r = client.post("/api/login", content="username=li.wei&password=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and code(r) == "json_required"
    r = client.post("/api/login", content=b"{" + b" " * 20000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413 and code(r) == "too_large"


def test_a_name_is_locked_out_after_its_failures_even_for_the_right_password_until_the_time_passes(
    panel: FakePanel, clock: Clock, static: Path
) -> None:
    with _client(panel, clock, static, lockout_after=3, lockout_min=15) as c:
        for _ in range(2):
            assert code(c.post("/api/login", json={"username": "li.wei", "password": "guess"})) == "bad_login"
        r = c.post("/api/login", json={"username": "li.wei", "password": "guess"})
        assert r.status_code == 429 and code(r) == "locked_out"
        assert r.json()["details"] == {"retry_after_s": 900} and r.headers["retry-after"] == "900"
        clock.advance(5 * MIN)
        r = c.post("/api/login", json={"username": "li.wei", "password": PW})
        assert r.status_code == 429 and r.json()["details"] == {"retry_after_s": 600}
        login(c, "zhang.san")  # another name logs in meanwhile
        clock.advance(10 * MIN)
        login(c, "li.wei")
    assert panel.actions_journaled() == ["login_failed"] * 3 + ["locked_out", "login", "login"]
    assert panel.journal[3] == ("li.wei", "locked_out", "", False, "name li.wei locked for 15 min")


def test_an_address_trying_fifty_wrong_passwords_is_locked_out_but_other_addresses_are_not(
    panel: FakePanel, clock: Clock, static: Path
) -> None:
    with _client(panel, clock, static, address="10.0.0.66", lockout_after=100) as c:
        answers = [c.post("/api/login", json={"username": "li.wei", "password": f"guess{i}"}) for i in range(50)]
        assert [code(r) for r in answers] == ["bad_login"] * 49 + ["locked_out"]
        r = c.post("/api/login", json={"username": "zhang.san", "password": PW})
        assert r.status_code == 429
    assert panel.journal[-1] == ("li.wei", "locked_out", "", False, "address 10.0.0.66 locked for 15 min")
    app = c.app
    with TestClient(app, base_url=GATE, client=("10.0.0.5", 50000)) as other:
        login(other, "zhang.san")


# -- sessions ------------------------------------------------------------------------------------------------


def test_a_session_ends_after_its_idle_time(panel: FakePanel, clock: Clock, static: Path) -> None:
    with _client(panel, clock, static, session_idle_min=30) as c:
        login(c)
        clock.advance(29 * MIN)
        assert c.get("/api/status").status_code == 200
        clock.advance(29 * MIN)
        assert c.get("/api/status").status_code == 200
        clock.advance(30 * MIN)
        assert code(c.get("/api/status")) == "login_required"


def test_a_session_ends_after_its_absolute_age_even_when_used(panel: FakePanel, clock: Clock, static: Path) -> None:
    with _client(panel, clock, static, session_idle_min=30, session_max_h=2) as c:
        login(c)
        for _ in range(11):
            clock.advance(10 * MIN)
            assert c.get("/api/session").status_code == 200
        clock.advance(10 * MIN)
        assert code(c.get("/api/session")) == "login_required"


def test_a_technician_removed_from_the_gates_list_loses_the_session_at_the_next_request(
    client: TestClient, panel: FakePanel
) -> None:
    login(client)
    assert client.get("/api/status").status_code == 200
    removed = panel.technicians.pop("li.wei")
    assert code(client.get("/api/status")) == "login_required"
    panel.technicians["li.wei"] = removed  # the session is gone for good, not suspended
    assert code(client.get("/api/status")) == "login_required"
    assert panel.journal[-1] == ("li.wei", "logout", "", False, "session ended: account withdrawn")


def test_a_technician_whose_password_changed_in_the_cloud_loses_the_session(
    client: TestClient, panel: FakePanel
) -> None:
    login(client)
    panel.technicians["li.wei"] = fast_hash("a new password")
    assert code(client.get("/api/decisions")) == "login_required"


def test_logging_out_ends_the_session_and_clears_the_cookie(client: TestClient, panel: FakePanel) -> None:
    csrf = login(client)
    assert code(client.post("/api/logout")) == "csrf"
    r = client.post("/api/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and 'sf_gate_session=""' in r.headers["set-cookie"]
    assert code(client.get("/api/session")) == "login_required"
    assert panel.actions_journaled() == ["login", "logout"]


# -- break glass ------------------------------------------------------------------------------------------


@pytest.fixture
def break_glass() -> BreakGlassConfig:
    return BreakGlassConfig(username="gate-admin", password_hash=fast_hash(BG_PW))


def test_the_break_glass_account_works_while_the_gate_has_never_received_the_cloud_list(
    panel: FakePanel, clock: Clock, static: Path, break_glass: BreakGlassConfig
) -> None:
    panel.received_list = False
    with _client(panel, clock, static, break_glass=break_glass) as c:
        r = c.post("/api/login", json={"username": "gate-admin", "password": BG_PW})
        assert r.status_code == 200 and r.json()["source"] == "break_glass"
        assert c.get("/api/status").status_code == 200
        panel.received_list = True  # the first sync brought the cloud's technicians
        assert code(c.get("/api/status")) == "login_required"
        r = c.post("/api/login", json={"username": "gate-admin", "password": BG_PW})
        assert r.status_code == 401 and code(r) == "bad_login"


def test_the_break_glass_account_is_refused_once_the_cloud_list_arrived_even_if_it_is_empty(
    panel: FakePanel, clock: Clock, static: Path, break_glass: BreakGlassConfig
) -> None:
    panel.technicians.clear()
    with _client(panel, clock, static, break_glass=break_glass) as c:
        r = c.post("/api/login", json={"username": "gate-admin", "password": BG_PW})
    assert r.status_code == 401 and code(r) == "bad_login"


# -- CSRF and origin ----------------------------------------------------------------------------------------


def test_an_action_needs_the_sessions_csrf_token(client: TestClient, panel: FakePanel) -> None:
    csrf = login(client)
    body = {"justification": "barrier sticks"}
    assert code(client.post("/api/actions/resync", json=body)) == "csrf"
    assert code(client.post("/api/actions/resync", json=body, headers={"X-CSRF-Token": csrf[:-1] + "x"})) == "csrf"
    assert panel.acts == []
    assert client.post("/api/actions/resync", json=body, headers={"X-CSRF-Token": csrf}).status_code == 200


def test_an_action_without_a_session_needs_a_login(client: TestClient) -> None:
    r = client.post("/api/actions/resync", json={"justification": "barrier sticks"}, headers={"X-CSRF-Token": "x"})
    assert r.status_code == 401 and code(r) == "login_required"


def test_a_post_from_another_site_is_refused(client: TestClient, panel: FakePanel) -> None:
    evil = {"Origin": "http://evil.example"}
    r = client.post("/api/login", json={"username": "li.wei", "password": PW}, headers=evil)
    assert r.status_code == 403 and code(r) == "origin"
    csrf = login(client)
    r = client.post(
        "/api/actions/test-open", json={"justification": "testing it"}, headers={**evil, "X-CSRF-Token": csrf}
    )
    assert r.status_code == 403 and code(r) == "origin"
    assert panel.acts == []
    same = {"Origin": GATE, "X-CSRF-Token": csrf}
    assert client.post("/api/actions/test-open", json={"justification": "testing it"}, headers=same).status_code == 200


# -- actions -----------------------------------------------------------------------------------------------

ACTIONS = [
    pytest.param("test-open", "test_open", {}, id="test-open"),
    pytest.param("keep-open", "keep_open", {"on": True}, id="keep-open"),
    pytest.param("resync", "resync", {}, id="resync"),
    pytest.param("reload-config", "reload_config", {}, id="reload-config"),
]


@pytest.mark.parametrize(("path", "action", "extra"), ACTIONS)
def test_each_action_is_carried_out_with_the_technicians_name_and_justification(
    client: TestClient, panel: FakePanel, path: str, action: str, extra: dict[str, Any]
) -> None:
    csrf = login(client)
    r = client.post(
        f"/api/actions/{path}", json={"justification": "  barrier\n sticks  ", **extra}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200
    assert r.json() == {"ok": True, "code": "done", "en": "Done", "zh": "完成", "details": {}}
    assert [(a.action, a.username, a.justification) for a in panel.acts] == [(action, "li.wei", "barrier sticks")]
    assert panel.acts[0].on is extra.get("on")


@pytest.mark.parametrize(("path", "action", "extra"), ACTIONS)
@pytest.mark.parametrize(
    "why",
    [
        pytest.param(None, id="missing"),
        pytest.param("    okay    ", id="four-after-trimming"),
        pytest.param("x" * 501, id="501"),
        pytest.param(42, id="not-text"),
        pytest.param("coil check\x1b[2J\x00", id="control-characters"),
    ],
)
def test_an_action_without_a_proper_justification_is_refused_and_not_carried_out(
    client: TestClient, panel: FakePanel, path: str, action: str, extra: dict[str, Any], why: object
) -> None:
    csrf = login(client)
    body = {**extra, **({} if why is None else {"justification": why})}
    r = client.post(f"/api/actions/{path}", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and code(r) == "justification"
    assert panel.acts == []


@pytest.mark.parametrize("why", [pytest.param("x" * 5, id="5"), pytest.param("x" * 500, id="500")])
def test_justifications_of_five_and_five_hundred_characters_are_accepted(
    client: TestClient, panel: FakePanel, why: str
) -> None:
    csrf = login(client)
    r = client.post("/api/actions/resync", json={"justification": why}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and panel.acts[0].justification == why


@pytest.mark.parametrize("on", [pytest.param(None, id="missing"), pytest.param("yes", id="text")])
def test_keep_open_needs_on_as_true_or_false(client: TestClient, panel: FakePanel, on: object) -> None:
    csrf = login(client)
    body = {"justification": "fire drill"} | ({} if on is None else {"on": on})
    r = client.post("/api/actions/keep-open", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and r.json()["details"] == {"field": "on"}
    assert panel.acts == []


@pytest.mark.parametrize(("path", "action", "extra"), ACTIONS)
def test_an_action_the_gate_refuses_answers_409_with_the_gates_result(
    client: TestClient, panel: FakePanel, path: str, action: str, extra: dict[str, Any]
) -> None:
    refused = ActionResult(False, "busy", "A passage is in progress", "通行进行中", {"ticket": "T-1"})
    panel.results[action] = refused
    csrf = login(client)
    r = client.post(f"/api/actions/{path}", json={"justification": "checking", **extra}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 409 and r.json() == refused.as_json()


def test_an_unknown_action_is_not_found(client: TestClient) -> None:
    csrf = login(client)
    r = client.post("/api/actions/open-forever", json={"justification": "because"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 404 and code(r) == "not_found"


# -- reads ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/api/status", "/api/decisions", "/api/journal", "/api/camera.jpg", "/api/config", "/api/decisions/stream"],
)
def test_every_read_needs_a_session(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 401 and code(r) == "login_required"


def test_status_and_config_are_the_panels(client: TestClient, panel: FakePanel) -> None:
    login(client)
    status = client.get("/api/status").json()
    assert status["gate_id"] == "g1" and status["feed_lag"] == 2
    assert status["camera"] == {
        "state": "error",
        "last_error": "no frame for 5 s",
        "last_error_at": "2025-01-18T09:30:00+00:00",
    }
    assert client.get("/api/config").json() == panel.config_view()


def test_recent_decisions_with_a_limit_of_one_to_five_hundred(client: TestClient, panel: FakePanel) -> None:
    panel.recent_views = [decision("ev-2", ended="sensor"), decision("ev-1")]
    login(client)
    body = client.get("/api/decisions").json()
    assert [d["event_id"] for d in body["decisions"]] == ["ev-2", "ev-1"]
    assert body["decisions"][0] == decision("ev-2", ended="sensor").as_json()
    assert client.get("/api/decisions?limit=1").json()["decisions"][0]["event_id"] == "ev-2"
    for bad in ("0", "501", "many"):
        r = client.get(f"/api/decisions?limit={bad}")
        assert r.status_code == 422 and r.json()["details"] == {"field": "limit"}
    assert panel.recent_limits == [50, 1]


def test_the_journal_search_passes_ticket_and_times_on_in_utc(client: TestClient, panel: FakePanel) -> None:
    panel.page = JournalPage([decision()], [tech_action()])
    login(client)
    r = client.get(
        "/api/journal?ticket=%20T-100%20&since=2025-01-18T08:00:00%2B08:00&until=2025-01-18T10:00:00Z&limit=20"
    )
    assert r.json() == {"decisions": [decision().as_json()], "actions": [tech_action().as_json()]}
    assert panel.searches[-1] == {
        "ticket": "T-100",
        "since": datetime(2025, 1, 18, 0, 0, tzinfo=UTC),
        "until": datetime(2025, 1, 18, 10, 0, tzinfo=UTC),
        "limit": 20,
    }
    client.get("/api/journal?since=2025-01-18T08:00")  # no zone: the gate's local time
    local = datetime(2025, 1, 18, 8, 0).astimezone()
    assert panel.searches[-1] == {"ticket": None, "since": local.astimezone(UTC), "until": None, "limit": 100}
    assert panel.searches[-1]["since"].utcoffset() == timedelta(0)
    r = client.get("/api/journal?until=yesterday")
    assert r.status_code == 422 and r.json()["details"] == {"field": "until"}
    assert code(client.get("/api/journal?ticket=" + "T" * 129)) == "bad_request"
    assert len(panel.searches) == 2


def test_the_camera_frame_is_a_jpeg_and_no_camera_or_no_frame_say_so(client: TestClient, panel: FakePanel) -> None:
    login(client)
    r = client.get("/api/camera.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content == panel.frame
    panel.frame = None
    r = client.get("/api/camera.jpg")
    assert r.status_code == 503 and code(r) == "no_frame"
    panel.camera = False
    r = client.get("/api/camera.jpg")
    assert r.status_code == 404 and code(r) == "no_camera"


# -- /metrics ------------------------------------------------------------------------------------------------


def test_metrics_need_the_configured_bearer_token_and_no_session(
    panel: FakePanel, clock: Clock, static: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATE_METRICS_TOKEN", "s3cret-scraper-token\n")
    with _client(panel, clock, static, metrics_token_env="GATE_METRICS_TOKEN") as c:
        r = c.get("/metrics", headers={"Authorization": "Bearer s3cret-scraper-token"})
        assert r.status_code == 200 and r.text == "starfish_gate_uptime_seconds 61.5\n"
        assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        for auth in ("Bearer s3cret-scraper-tokeN", "Basic s3cret-scraper-token", "s3cret-scraper-token"):
            r = c.get("/metrics", headers={"Authorization": auth})
            assert r.status_code == 401 and code(r) == "metrics_token" and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/metrics").status_code == 401


def test_metrics_token_from_a_file(panel: FakePanel, clock: Clock, static: Path, tmp_path: Path) -> None:
    token = tmp_path / "metrics.token"
    token.write_text("from-a-file-token\n")
    with _client(panel, clock, static, metrics_token_file=token) as c:
        assert c.get("/metrics", headers={"Authorization": "Bearer from-a-file-token"}).status_code == 200


@pytest.mark.parametrize(
    "web",
    [
        pytest.param({}, id="none-configured"),
        pytest.param({"metrics_token_env": "GATE_METRICS_TOKEN_UNSET"}, id="env-unset"),
        pytest.param({"metrics_token_file": Path("/nonexistent/metrics.token")}, id="file-missing"),
    ],
)
def test_without_a_token_metrics_are_off(
    panel: FakePanel, clock: Clock, static: Path, web: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATE_METRICS_TOKEN_UNSET", raising=False)
    with _client(panel, clock, static, **web) as c:
        login(c)  # not even a technician's session opens them
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
            r = c.get("/metrics", headers=headers)
            assert r.status_code == 404 and code(r) == "metrics_off"


# -- pages and headers --------------------------------------------------------------------------------------

CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


@pytest.mark.parametrize(
    ("path", "status", "no_store"),
    [
        pytest.param("/", 200, False, id="index"),
        pytest.param("/login", 200, False, id="login-page"),
        pytest.param("/static/app.css", 200, False, id="static"),
        pytest.param("/static/missing.js", 404, False, id="static-missing"),
        pytest.param("/api/session", 401, True, id="api-401"),
        pytest.param("/api/nothing", 404, True, id="api-404"),
        pytest.param("/metrics", 404, True, id="metrics"),
    ],
)
def test_every_response_carries_the_security_headers(
    client: TestClient, path: str, status: int, no_store: bool
) -> None:
    r = client.get(path)
    assert r.status_code == status
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert (r.headers.get("cache-control") == "no-store") is no_store


def test_the_pages_are_html_and_a_wrong_method_is_json(client: TestClient) -> None:
    r = client.get("/")
    assert r.headers["content-type"].startswith("text/html") and "<title>gate</title>" in r.text
    assert "<title>login</title>" in client.get("/login").text
    r = client.get("/api/login")
    assert r.status_code == 405 and code(r) == "method_not_allowed"


def test_the_shipped_page_files_are_in_the_package() -> None:
    assert (STATIC_DIR / "index.html").is_file() and (STATIC_DIR / "login.html").is_file()


def test_a_failing_panel_answers_a_json_500_with_the_headers(client: TestClient, panel: FakePanel) -> None:
    login(client)

    def broken() -> dict[str, Any]:
        raise RuntimeError("store is gone")

    panel.config_view = broken  # type: ignore[method-assign]
    r = client.get("/api/config")
    assert r.status_code == 500 and code(r) == "internal_error" and "store" not in r.text
    assert r.headers["content-security-policy"] == CSP


# -- the real server ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _read_event(lines: Any) -> dict[str, Any]:
    """The next `event: decision` of an SSE stream (pings and other lines skipped)."""
    event = None
    async for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "decision":
            data: dict[str, Any] = json.loads(line[6:])
            return data
    raise AssertionError("the stream ended")


def test_the_server_serves_the_page_on_a_loopback_port_and_streams_live_decisions(
    panel: FakePanel, static: Path
) -> None:
    config = WebConfig(bind="127.0.0.1", port=_free_port())
    app = build_app(panel, config, static_dir=static, ping_s=0.2)

    async def scenario() -> None:
        server = WebServer(app, config)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                assert (await http.get("/api/session")).status_code == 401
                r = await http.post("/api/login", json={"username": "li.wei", "password": PW})
                assert r.status_code == 200
                assert (await http.get("/api/session")).json()["username"] == "li.wei"
                async with http.stream("GET", "/api/decisions/stream") as stream:
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    lines = stream.aiter_lines()
                    assert await anext(lines) == "retry: 3000"
                    await eventually(lambda: panel.queues, "the stream subscribed", 10)
                    panel.publish(decision("ev-9"))
                    assert await _read_event(lines) == decision("ev-9").as_json()
                    panel.publish(decision("ev-9", ended="sensor"))
                    assert (await _read_event(lines))["ended"] == "sensor"
                    async for line in lines:  # a quiet stream pings
                        if line == ": ping":
                            break
                    panel.technicians.pop("li.wei")  # withdrawn: the stream ends at the next ping
                    async for _line in lines:
                        pass
            assert panel.queues == []
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_stopping_the_server_ends_an_open_live_stream(panel: FakePanel, static: Path) -> None:
    config = WebConfig(bind="127.0.0.1", port=_free_port())
    app = build_app(panel, config, static_dir=static)  # pings every 15 s: only the stop can end it soon

    async def scenario() -> None:
        server = WebServer(app, config)
        await server.start()
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await http.post("/api/login", json={"username": "li.wei", "password": PW})
            async with http.stream("GET", "/api/decisions/stream") as stream:
                lines = stream.aiter_lines()
                await anext(lines)
                await server.stop()
                rest = [line async for line in lines]
        assert rest == [""] or rest == []
        assert panel.queues == []
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.port}") as again:
                await again.get("/api/session")

    asyncio.run(scenario())


def test_a_port_already_taken_is_a_clear_error_and_leaves_nothing_running(panel: FakePanel, static: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = WebConfig(bind="127.0.0.1", port=taken.getsockname()[1])
        server = WebServer(build_app(panel, config, static_dir=static), config)

        async def scenario() -> None:
            with pytest.raises(WebServerError, match=rf"127\.0\.0\.1:{config.port}: Address already in use"):
                await server.start()
            await server.stop()  # harmless after a failed start

        asyncio.run(scenario())
        assert server.port is None


def test_a_page_that_closes_its_live_stream_unsubscribes(panel: FakePanel, static: Path) -> None:
    config = WebConfig(bind="127.0.0.1", port=_free_port())
    app = build_app(panel, config, static_dir=static)

    async def scenario() -> None:
        server = WebServer(app, config)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                await http.post("/api/login", json={"username": "li.wei", "password": PW})
                async with http.stream("GET", "/api/decisions/stream") as stream:
                    await anext(stream.aiter_lines())
                    assert len(panel.queues) == 1
            for _ in range(500):  # the server notices the closed connection
                if not panel.queues:
                    break
                await asyncio.sleep(0.01)
            assert panel.queues == []
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_the_page_over_tls_with_a_secure_cookie(panel: FakePanel, static: Path, tmp_path: Path) -> None:
    import ssl

    from harness.pki import make_pki

    tls = make_pki(tmp_path / "pki")
    config = WebConfig(bind="127.0.0.1", port=_free_port(), tls_cert=tls.certfile, tls_key=tls.keyfile)
    app = build_app(panel, config, static_dir=static)

    async def scenario() -> None:
        server = WebServer(app, config)
        await server.start()
        assert server.url.startswith("https://127.0.0.1:")
        try:
            trust = ssl.create_default_context(cafile=str(tls.cafile))
            async with httpx.AsyncClient(base_url=server.url, verify=trust, timeout=10) as http:
                r = await http.post("/api/login", json={"username": "li.wei", "password": PW})
                assert "Secure" in r.headers["set-cookie"]
                assert (await http.get("/api/session")).json()["username"] == "li.wei"
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as untrusting:
                with pytest.raises(httpx.ConnectError):
                    await untrusting.get("/api/session")
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_an_unreadable_tls_key_is_a_clear_error(panel: FakePanel, static: Path, tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    config = WebConfig(bind="127.0.0.1", port=_free_port(), tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "no.key")
    server = WebServer(build_app(panel, config, static_dir=static), config)
    with pytest.raises(WebServerError, match="TLS certificate or key"):
        asyncio.run(server.start())
    assert server.port is None


def test_the_server_leaves_the_daemons_signal_handlers_alone(panel: FakePanel, static: Path) -> None:
    import signal

    config = WebConfig(bind="127.0.0.1", port=_free_port())
    server = WebServer(build_app(panel, config, static_dir=static), config)

    def daemons_handler(_sig: int, _frame: object) -> None:
        pass

    async def scenario() -> None:
        await server.start()
        try:
            assert signal.getsignal(signal.SIGTERM) is daemons_handler
            assert signal.getsignal(signal.SIGINT) is daemons_handler
        finally:
            await server.stop()

    before = signal.signal(signal.SIGTERM, daemons_handler), signal.signal(signal.SIGINT, daemons_handler)
    try:
        asyncio.run(scenario())
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])


def test_logins_sent_all_at_once_are_counted_one_after_another_and_the_lockout_holds(
    panel: FakePanel, clock: Clock, static: Path
) -> None:
    """Two hundred guesses and then the right password, all in flight together (attack run, issue 11)."""
    app = build_app(panel, WebConfig(lockout_after=5), static_dir=static, monotonic=clock)  # Host: 127.0.0.1

    async def storm() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("10.0.0.66", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as c:
            guesses = [f"guess{i}" for i in range(200)] + [PW]
            return await asyncio.gather(
                *[c.post("/api/login", json={"username": "li.wei", "password": p}) for p in guesses]
            )

    answers = asyncio.run(storm())
    assert [r.status_code for r in answers].count(401) <= 5  # never more password checks than the lockout allows
    assert answers[-1].status_code == 429  # the right password, sent among the guesses: refused
    assert panel.actions_journaled().count("login_failed") <= 5
    assert "login" not in panel.actions_journaled()


@pytest.mark.parametrize(
    ("host", "answered"),
    [
        pytest.param("gate-7.resort.lan", True, id="a-listed-name"),
        pytest.param("GATE-7.resort.lan:8080", True, id="its-case-and-port"),
        pytest.param("127.0.0.1:8080", True, id="the-bind-address"),
        pytest.param("evil.example:8080", False, id="a-rebound-name"),
        pytest.param("", False, id="none"),
    ],
)
def test_a_request_naming_another_host_is_refused_so_dns_rebinding_finds_nothing(
    panel: FakePanel, clock: Clock, static: Path, host: str, answered: bool
) -> None:
    with _client(panel, clock, static) as c:
        r = c.post(
            "/api/login",
            json={"username": "li.wei", "password": PW},
            headers={"host": host, "origin": f"http://{host}"},
        )
    assert (r.status_code == 200) is answered
    if not answered:
        assert r.status_code == 421 and code(r) == "host"


def test_web_cert_makes_a_pair_the_page_serves_https_with_for_the_gates_names(
    panel: FakePanel, static: Path, tmp_path: Path
) -> None:
    import ssl

    from typer.testing import CliRunner

    from starfish.cli import app as starfish

    out = CliRunner().invoke(
        starfish, ["gate", "web-cert", "--out", str(tmp_path / "web"), "--host", "127.0.0.1", "--host", "gate.lan"]
    )
    assert out.exit_code == 0, out.output
    assert "SHA-256 fingerprint" in out.output
    assert (tmp_path / "web.key").stat().st_mode & 0o077 == 0
    again = CliRunner().invoke(starfish, ["gate", "web-cert", "--out", str(tmp_path / "web"), "--host", "127.0.0.1"])
    assert again.exit_code == 2 and "refusing to overwrite" in again.output
    config = WebConfig(bind="127.0.0.1", port=_free_port(), tls_cert=tmp_path / "web.pem", tls_key=tmp_path / "web.key")

    async def scenario() -> None:
        server = WebServer(build_app(panel, config, static_dir=static), config)
        await server.start()
        try:
            trust = ssl.create_default_context(cafile=str(tmp_path / "web.pem"))  # what a technician's laptop pins
            async with httpx.AsyncClient(base_url=server.url, verify=trust, timeout=10) as http:
                assert code(await http.get("/api/session")) == "login_required"
        finally:
            await server.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("web", "error"),
    [
        pytest.param({"bind": "10.0.0.20"}, "is a LAN address", id="lan-without-tls"),
        pytest.param({"bind": "10.0.0.20", "plain_http": True}, None, id="lan-plain-http-by-choice"),
        pytest.param({"bind": "10.0.0.20", "tls_cert": "/c.pem", "tls_key": "/k.pem"}, None, id="lan-with-tls"),
        pytest.param({"bind": "0.0.0.0", "plain_http": True}, "listens everywhere", id="wildcard-without-names"),
        pytest.param({"bind": "0.0.0.0", "plain_http": True, "hostnames": ["gate.lan"]}, None, id="wildcard-named"),
        pytest.param({"bind": "127.0.0.1"}, None, id="loopback"),
    ],
)
def test_the_page_on_a_lan_address_needs_tls_unless_plain_http_is_chosen(
    web: dict[str, Any], error: str | None
) -> None:
    from pydantic import ValidationError

    if error is None:
        WebConfig.model_validate(web)
    else:
        with pytest.raises(ValidationError, match=error):
            WebConfig.model_validate(web)
