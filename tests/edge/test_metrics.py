"""The gate's Prometheus metrics: counters move with decisions and passages, gauges read the vitals at scrape."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.metrics import GateMetrics, ended_label, face_results, intake_drops
from edge.store import JournalEntry
from edge.vitals import DeviceVitals, GateVitals
from models.messages import Direction, Outcome
from tests.edge import web_fakes

NOW = datetime(2026, 1, 10, 9, 30, tzinfo=UTC)


def vitals(**changes: object) -> GateVitals:
    """The page tests' gate (tests.edge.web_fakes), with the figures these tests read."""
    v = replace(
        web_fakes.vitals(),
        site_id="alpine",
        gate_id="lift-1",
        version="0.11.0",
        started_at=NOW,
        uptime_s=120.0,
        last_message_age_s=1.5,
        outbox_oldest_age_s=12.5,
        tickets=1500,
        faces=20,
        trusted_keys=[1],
        technicians=2,
        camera=DeviceVitals("ok"),
        scanner=DeviceVitals("absent"),
        journal_bytes=10**6,
    )
    return replace(v, **changes)  # type: ignore[arg-type]


def entry(outcome: Outcome, code: str, credential: str = "signed", resolution: str | None = None) -> JournalEntry:
    return JournalEntry(
        gate_id="lift-1",
        site_id="alpine",
        at=NOW,
        direction=Direction.IN,
        outcome=outcome,
        code=code,
        ticket_id="T-1",
        passed=None if resolution is None else True,
        credential=credential,
        resolution=resolution,
    )


def scrape(metrics: GateMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


class Live:
    """The daemon's vitals, changing between scrapes."""

    def __init__(self) -> None:
        self.now = vitals()
        self.faces: dict[str, int] | None = None

    def __call__(self) -> GateVitals:
        return self.now


def test_decisions_are_counted_by_outcome_reason_and_credential_with_their_latency() -> None:
    live = Live()
    metrics = GateMetrics(live, lambda: live.faces)

    metrics.decided(entry(Outcome.ADMIT, "ok"), "camera", 0.003)
    metrics.decided(entry(Outcome.ADMIT, "ok"), "scanner", 0.004)
    metrics.decided(entry(Outcome.DENY, "expired", "plain"), "scanner", 0.002)
    got = scrape(metrics)

    admit = (("credential", "signed"), ("outcome", "admit"), ("reason", "ok"))
    deny = (("credential", "plain"), ("outcome", "deny"), ("reason", "expired"))
    assert got[("starfish_gate_decisions_total", admit)] == 2
    assert got[("starfish_gate_decisions_total", deny)] == 1
    assert got[("starfish_gate_decision_seconds_count", (("input", "scanner"),))] == 2
    assert got[("starfish_gate_decision_seconds_bucket", (("input", "scanner"), ("le", "0.002")))] == 1
    assert got[("starfish_gate_decision_seconds_bucket", (("input", "scanner"), ("le", "0.005")))] == 2
    assert got[("starfish_gate_decision_seconds_count", (("input", "camera"),))] == 1


def test_passages_are_counted_by_how_they_ended_and_barrier_faults_on_their_own() -> None:
    metrics = GateMetrics(vitals, lambda: None)

    metrics.ended(entry(Outcome.ADMIT, "ok", resolution="sensor"))
    metrics.ended(entry(Outcome.ADMIT, "ok", resolution="timeout"))
    metrics.ended(entry(Outcome.ADMIT, "ok", resolution="barrier_fault: board at 10.0.0.9 did not answer"))
    metrics.barrier_fault()
    got = scrape(metrics)

    assert got[("starfish_gate_passages_total", (("ended", "sensor"),))] == 1
    assert got[("starfish_gate_passages_total", (("ended", "timeout"),))] == 1
    assert got[("starfish_gate_passages_total", (("ended", "barrier_fault"),))] == 1
    assert got[("starfish_gate_barrier_faults_total", ())] == 1


def test_gauges_are_read_from_the_vitals_at_each_scrape() -> None:
    live = Live()
    metrics = GateMetrics(live, lambda: live.faces)
    first = scrape(metrics)

    live.now = vitals(feed_seq=42, feed_lag=0, outbox_depth=0, outbox_oldest_age_s=None, broker_connected=False)
    second = scrape(metrics)

    assert (first[("starfish_gate_feed_lag", ())], second[("starfish_gate_feed_lag", ())]) == (2, 0)
    assert (first[("starfish_gate_feed_seq", ())], second[("starfish_gate_feed_seq", ())]) == (40, 42)
    assert (first[("starfish_gate_outbox_depth", ())], second[("starfish_gate_outbox_depth", ())]) == (3, 0)
    assert first[("starfish_gate_outbox_oldest_seconds", ())] == 12.5
    assert second[("starfish_gate_outbox_oldest_seconds", ())] == 0  # nothing waiting
    assert (first[("starfish_gate_broker_connected", ())], second[("starfish_gate_broker_connected", ())]) == (1, 0)
    assert second[("starfish_gate_tickets", ())] == 1500
    assert second[("starfish_gate_face_templates", ())] == 20
    assert second[("starfish_gate_uptime_seconds", ())] == 120
    info = (("direction", "in"), ("gate", "lift-1"), ("site", "alpine"), ("version", "0.11.0"))
    assert second[("starfish_gate_info", info)] == 1


def test_a_gate_without_sync_or_faces_leaves_those_gauges_out() -> None:
    metrics = GateMetrics(
        lambda: vitals(sync_configured=False, broker_connected=None, feed_lag=None, faces=None), lambda: None
    )
    names = {name for name, _ in scrape(metrics)}

    assert "starfish_gate_tickets" in names
    assert not names & {
        "starfish_gate_broker_connected",
        "starfish_gate_feed_lag",
        "starfish_gate_feed_seq",
        "starfish_gate_face_templates",
        "starfish_gate_face_frames_total",
    }


def test_face_frames_are_exported_by_result_with_a_skipped_label_per_quality_gate() -> None:
    live = Live()
    metrics = GateMetrics(live, lambda: live.faces)
    counts = {"frames": 30, "no_face": 10, "unknown": 4, "ambiguous": 1, "offered": 2}
    live.faces = {**counts, "skipped": {"blurry": 3, "face_too_small": 5}}  # type: ignore[dict-item]

    got = scrape(metrics)

    def frames(result: str) -> float:
        return got[("starfish_gate_face_frames_total", (("result", result),))]

    assert [frames(r) for r in ("matched", "unknown", "ambiguous", "no_face")] == [2, 4, 1, 10]
    assert (frames("skipped_blurry"), frames("skipped_face_too_small")) == (3, 5)
    by_result = {"matched": 1, "unknown": 2, "ambiguous": 0, "no_face": 3, "skipped_too_dark": 7}  # the panel's
    assert face_results(by_result) == by_result


def test_intake_drops_are_exported_by_input_and_reason() -> None:
    dropped = {"camera:rate_limited": 4, "scanner/not_a_credential": 9, "too_old": 1}
    metrics = GateMetrics(lambda: vitals(intake_dropped=dropped), lambda: None)

    got = scrape(metrics)

    assert got[("starfish_gate_intake_dropped_total", (("input", "camera"), ("reason", "rate_limited")))] == 4
    assert got[("starfish_gate_intake_dropped_total", (("input", "scanner"), ("reason", "not_a_credential")))] == 9
    assert got[("starfish_gate_intake_dropped_total", (("input", "all"), ("reason", "too_old")))] == 1
    assert list(intake_drops({})) == []


def test_vitals_that_fail_to_read_leave_the_counters_served() -> None:
    def broken() -> GateVitals:
        raise RuntimeError("store is locked")

    metrics = GateMetrics(broken, lambda: None)
    metrics.decided(entry(Outcome.DENY, "revoked"), "camera", 0.001)

    got = scrape(metrics)

    revoked = (("credential", "signed"), ("outcome", "deny"), ("reason", "revoked"))
    assert got[("starfish_gate_decisions_total", revoked)] == 1
    assert ("starfish_gate_tickets", ()) not in got


def test_two_gates_in_one_process_keep_their_own_numbers() -> None:
    a, b = GateMetrics(vitals, lambda: None), GateMetrics(vitals, lambda: None)

    a.barrier_fault()

    assert scrape(a)[("starfish_gate_barrier_faults_total", ())] == 1
    assert scrape(b)[("starfish_gate_barrier_faults_total", ())] == 0


@pytest.mark.parametrize(
    ("resolution", "label"),
    [
        pytest.param("sensor", "sensor", id="sensor"),
        pytest.param("on_open", "on_open", id="no-sensor"),
        pytest.param("barrier_fault: timeout", "barrier_fault", id="fault-with-detail"),
        pytest.param(None, "unknown", id="unresolved"),
    ],
)
def test_ended_label_keeps_the_resolution_without_its_detail(resolution: str | None, label: str) -> None:
    assert ended_label(resolution) == label


def test_json_log_lines_of_the_gate_parse_as_json() -> None:
    script = (
        "import logging\n"
        "from edge.logs import configure\n"
        "configure('INFO', 'json')\n"
        "log = logging.getLogger('starfish.gate')\n"
        "log.info('gate %s running', 'lift-1')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('failed to handle a camera read')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)

    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(x["level"], x["logger"], x["message"]) for x in lines] == [
        ("INFO", "starfish.gate", "gate lift-1 running"),
        ("ERROR", "starfish.gate", "failed to handle a camera read"),
    ]
    assert "ZeroDivisionError" in lines[1]["exc_info"]
    assert datetime.fromisoformat(lines[0]["time"]).tzinfo is not None
