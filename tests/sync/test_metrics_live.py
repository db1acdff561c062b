"""Metrics of a running resort: a gate's /metrics (its technician page) and the cloud's, scraped before and
after a sale and a scan; the numbers move as they should (Prometheus scrapes them the same way)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.processes import poll_until
from harness.resort import Resort

pytestmark = pytest.mark.metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
GATE = "north-1"


@pytest.fixture(scope="module")
def resort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resort]:
    workdir = Path(tmp_path_factory.mktemp("metrics-resort"))
    with Resort(workdir, gates=((GATE, "北门1号"),), web=True) as r:
        yield r


def scrape(url: str, token: str) -> Samples:
    r = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_sale_and_its_scan_move_the_cloud_and_gate_numbers(resort: Resort) -> None:
    page = resort.page_url(GATE)
    token = resort.metrics_token
    gate_before, cloud_before = scrape(page, token), scrape(resort.cloud.base, token)

    sale = resort.sell("day")
    decision = resort.scan(GATE, sale.token)
    assert decision is not None and decision.admit and decision.passed

    def gate_counted() -> bool:
        now = scrape(page, token)
        return value(now, "starfish_gate_passages_total", ended="sensor") > value(
            gate_before, "starfish_gate_passages_total", ended="sensor"
        )

    assert poll_until(gate_counted, 10, interval=0.1)
    gate_after = scrape(page, token)
    admit = {"outcome": "admit", "reason": "ok", "credential": "signed"}
    assert value(gate_after, "starfish_gate_decisions_total", **admit) == (
        value(gate_before, "starfish_gate_decisions_total", **admit) + 1
    )
    assert value(gate_after, "starfish_gate_decision_seconds_count", input="scanner") == (
        value(gate_before, "starfish_gate_decision_seconds_count", input="scanner") + 1
    )
    # The sale's ticket came down the feed before the scan could admit it.
    assert value(gate_after, "starfish_gate_feed_seq") > value(gate_before, "starfish_gate_feed_seq")
    tickets = value(gate_before, "starfish_gate_tickets") + 1  # the page counts every ~2 s, in a thread
    assert poll_until(lambda: value(scrape(page, token), "starfish_gate_tickets") == tickets, 10, interval=0.2)
    assert value(gate_after, "starfish_gate_broker_connected") == 1

    def cloud_stored() -> bool:
        now = scrape(resort.cloud.base, token)
        return value(now, "starfish_cloud_events_total", result="stored") > value(
            cloud_before, "starfish_cloud_events_total", result="stored"
        )

    assert poll_until(cloud_stored, 20, interval=0.2)  # the passage reached the cloud through both brokers
    cloud_after = scrape(resort.cloud.base, token)
    for status in ("created", "paid", "issued"):
        assert value(cloud_after, "starfish_cloud_orders_total", channel="counter", status=status) == (
            value(cloud_before, "starfish_cloud_orders_total", channel="counter", status=status) + 1
        ), status
    assert value(cloud_after, "starfish_cloud_payments_total", provider="counter", result="succeeded") == (
        value(cloud_before, "starfish_cloud_payments_total", provider="counter", result="succeeded") + 1
    )
    assert value(cloud_after, "starfish_cloud_feed_head", site=resort.site) >= value(
        gate_after, "starfish_gate_feed_seq"
    )


def test_both_endpoints_refuse_a_scrape_without_the_token(resort: Resort) -> None:
    assert httpx.get(f"{resort.page_url(GATE)}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{resort.cloud.base}/metrics", timeout=10).status_code == 401
