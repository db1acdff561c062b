"""The cloud's /metrics: numbers move with orders, payments and requests; the token decides who may scrape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cloud.app import create_app
from cloud.deps import Role
from cloud.settings import Settings
from harness.api import Api
from harness.keys import cloud_settings
from tests.cloud.api import build_schema, next_weekday

TOKEN = "scrape-me-" + "x" * 20
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def settings(db_url: str) -> Settings:
    return cloud_settings(db_url, metrics_token=TOKEN)


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def counter_order(api: Api, product: dict[str, Any]) -> dict[str, Any]:
    body = {
        "site_id": product["site_id"],
        "channel": "counter",
        "items": [{"product_id": product["id"], "visit_date": next_weekday().isoformat(), "quantity": 2}],
    }
    r = api.as_(Role.CASHIER).post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def pay(api: Api, order: dict[str, Any], amount_fen: int) -> int:
    r = api.as_(Role.CASHIER).post(
        f"/api/v1/orders/{order['id']}/payments/counter", json={"method": "cash", "amount_fen": amount_fen}
    )
    return r.status_code


def test_an_order_paid_at_the_window_moves_orders_payments_requests_and_the_feed_head(
    api: Api, client: TestClient, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    before = scrape(client)

    order = counter_order(api, day_product)
    assert pay(api, order, order["total_fen"]) == 201
    after = scrape(client)

    assert moved(before, after, "starfish_cloud_orders_total", channel="counter", status="created") == 1
    assert moved(before, after, "starfish_cloud_orders_total", channel="counter", status="paid") == 1
    assert moved(before, after, "starfish_cloud_orders_total", channel="counter", status="issued") == 1
    assert moved(before, after, "starfish_cloud_payments_total", provider="counter", result="succeeded") == 1
    route = {"route": "/api/v1/orders", "method": "POST"}
    assert moved(before, after, "starfish_cloud_requests_total", **route, status="201") == 1
    assert moved(before, after, "starfish_cloud_request_seconds_count", **route) == 1
    pay_route = "/api/v1/orders/{order_id}/payments/counter"
    assert moved(before, after, "starfish_cloud_requests_total", route=pay_route, method="POST", status="201") == 1
    # Two tickets issued: the site's feed carries them to the gates.
    assert moved(before, after, "starfish_cloud_feed_head", site=site["code"]) >= 2


def test_a_payment_refused_and_rolled_back_counts_nothing(
    api: Api, client: TestClient, day_product: dict[str, Any]
) -> None:
    order = counter_order(api, day_product)
    before = scrape(client)

    assert pay(api, order, order["total_fen"] - 1) != 201
    after = scrape(client)

    assert moved(before, after, "starfish_cloud_payments_total", provider="counter", result="succeeded") == 0
    assert moved(before, after, "starfish_cloud_orders_total", channel="counter", status="paid") == 0


def test_requests_are_labelled_by_route_template_never_by_the_raw_path(api: Api, client: TestClient) -> None:
    for order_id in (101, 102, 103):
        api.as_(Role.ADMIN).get(f"/api/v1/orders/{order_id}")
    client.get("/no/such/page/4711")

    routes = {dict(labels).get("route") for name, labels in scrape(client) if name == "starfish_cloud_requests_total"}

    assert "/api/v1/orders/{order_id}" in routes and "unmatched" in routes
    assert not any(r and ("101" in r or "4711" in r) for r in routes)


def test_metrics_need_the_bearer_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer " + TOKEN[:-1] + "y"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "metrics_token"
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


def _client(tmp_path: Path, **overrides: Any) -> TestClient:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    build_schema(url)
    return TestClient(create_app(cloud_settings(url, **overrides), expiry_every_s=0))


def test_without_a_token_metrics_are_off_outside_development(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        r = client.get("/metrics")

    assert r.status_code == 404
    assert r.json()["error"]["code"] == "metrics_off"


def test_without_a_token_metrics_are_open_in_development(tmp_path: Path) -> None:
    with _client(tmp_path, environment="development") as client:
        r = client.get("/metrics")

    assert r.status_code == 200
    assert "starfish_cloud_requests_total" in r.text


def test_the_token_file_wins_over_the_variable(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics.token"
    token_file.write_text("from-the-file\n")
    with _client(tmp_path, metrics_token="from-the-variable", metrics_token_file=str(token_file)) as client:
        by_file = client.get("/metrics", headers={"Authorization": "Bearer from-the-file"})
        by_variable = client.get("/metrics", headers={"Authorization": "Bearer from-the-variable"})

    assert (by_file.status_code, by_variable.status_code) == (200, 401)


def test_json_log_lines_of_the_cloud_parse_as_json() -> None:
    script = (
        "import logging, logging.config\n"
        "from cloud.logs import uvicorn_log_config\n"
        "logging.config.dictConfig(uvicorn_log_config())\n"
        "logging.getLogger('starfish.cloud').info('expired %d unpaid order(s)', 3)\n"
        "logging.getLogger('uvicorn.error').warning('Invalid HTTP request received.')\n"
        "try:\n    1 / 0\n"
        "except ZeroDivisionError:\n    logging.getLogger('starfish.cloud').exception('face sweep failed')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)

    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(x["level"], x["logger"], x["message"]) for x in lines] == [
        ("INFO", "starfish.cloud", "expired 3 unpaid order(s)"),
        ("WARNING", "uvicorn.error", "Invalid HTTP request received."),
        ("ERROR", "starfish.cloud", "face sweep failed"),
    ]
    assert "ZeroDivisionError" in lines[2]["exc_info"]
    assert all("time" in x for x in lines)
