"""The gate's Prometheus metrics (`/metrics` on the technician page): one `GateMetrics` per daemon.

Counters move on events, called by the daemon after the journal has the entry: `decided` for every
decision, `ended` when an admission's passage is known, `barrier_fault` for each barrier fault (an
admission's or a test-open's). Everything else is read from `GateVitals` when Prometheus scrapes (a
custom collector), so a gauge is never stale and nothing runs between scrapes.

Each daemon has its own `CollectorRegistry` (tests and the demo run several gates in one process).
`render` may run in a worker thread: the counters are thread-safe, and `vitals` must be cheap and
safe to call from there (the panel's is: cached counts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edge.store import JournalEntry
    from edge.vitals import GateVitals

log = logging.getLogger("starfish.gate")

# Scan read -> journal committed: ~1-5 ms on a gate; 1 s is a gate in trouble.
DECISION_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

# edge.face.matcher.FaceCounts field -> the `result` label (`frames` is their total and is left out).
_FACE_RESULTS = {"offered": "matched", "unknown": "unknown", "ambiguous": "ambiguous", "no_face": "no_face"}


def ended_label(resolution: str | None) -> str:
    """How a passage ended, as a label: its resolution without the detail ("barrier_fault: x" -> barrier_fault)."""
    if not resolution:
        return "unknown"
    return resolution.split(":", 1)[0].strip() or "unknown"


def face_results(counts: Mapping[str, object]) -> dict[str, int]:
    """Face counts -> result label -> count: `FaceCounts` as a dict (`offered`, `skipped` nested) or as the panel
    gives them (matched, unknown, ambiguous, no_face, skipped_<gate>)."""
    out: dict[str, int] = {}
    for key, value in counts.items():
        if key == "skipped" and isinstance(value, dict):
            out.update({f"skipped_{gate}": int(n) for gate, n in value.items()})
        elif key.startswith("skipped_") and isinstance(value, int):
            out[key] = value
        elif key in _FACE_RESULTS and isinstance(value, int):
            out[_FACE_RESULTS[key]] = value
        elif key in _FACE_RESULTS.values() and isinstance(value, int):
            out[key] = value  # already named by result (the panel's `face_counts`)
    return out


def intake_drops(dropped: dict[str, int]) -> Iterator[tuple[str, str, int]]:
    """`GateVitals.intake_dropped` -> (input, reason, count). Keys are "input:reason" (or "input/reason");
    a bare reason (drops summed over the inputs) gets the input ``all``."""
    for key, n in sorted(dropped.items()):
        for sep in (":", "/"):
            if sep in key:
                source, reason = key.split(sep, 1)
                yield source, reason, n
                break
        else:
            yield "all", key, n


class _VitalsCollector(Collector):
    """The gauges (and the counters the gate keeps elsewhere), read from the vitals at scrape time."""

    def __init__(self, vitals: Callable[[], GateVitals], face_counts: Callable[[], dict[str, int] | None]) -> None:
        self._vitals = vitals
        self._face_counts = face_counts

    def describe(self) -> list[Metric]:
        return []  # families depend on what the gate has (sync, faces): described by collecting

    def collect(self) -> Iterator[Metric]:
        try:
            v = self._vitals()
        except Exception:
            log.exception("metrics: the gate's vitals could not be read; gauges left out of this scrape")
            return
        yield from _vitals_metrics(v)
        try:
            counts = self._face_counts()
        except Exception:
            log.exception("metrics: the face counts could not be read")
            counts = None
        if counts is not None:
            frames = CounterMetricFamily(
                "starfish_gate_face_frames", "Camera frames the face matcher judged, by result", labels=["result"]
            )
            for result, n in sorted(face_results(dict(counts)).items()):
                frames.add_metric([result], n)
            yield frames


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(name, doc, value=value)


def _vitals_metrics(v: GateVitals) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "starfish_gate_info",
        "This gate: site, gate, direction, version",
        labels=["site", "gate", "direction", "version"],
    )
    info.add_metric([v.site_id, v.gate_id, v.direction, v.version], 1)
    yield info
    yield from _gauge("starfish_gate_uptime_seconds", "Seconds since the daemon started", v.uptime_s)
    if v.sync_configured:
        connected = None if v.broker_connected is None else float(v.broker_connected)
        yield from _gauge("starfish_gate_broker_connected", "1 while connected to the site's broker", connected)
        yield from _gauge("starfish_gate_feed_seq", "Last ticket-feed sequence number applied", v.feed_seq)
        yield from _gauge("starfish_gate_feed_lag", "Feed changes the cloud has and this gate has not", v.feed_lag)
    yield from _gauge(
        "starfish_gate_outbox_depth", "Passage events waiting for the cloud's acknowledgement", v.outbox_depth
    )
    yield from _gauge(
        "starfish_gate_outbox_oldest_seconds",
        "Age of the oldest unacknowledged event (0: outbox empty)",
        v.outbox_oldest_age_s if v.outbox_oldest_age_s is not None else 0.0,
    )
    yield from _gauge("starfish_gate_tickets", "Tickets in the gate's cache", v.tickets)
    yield from _gauge("starfish_gate_face_templates", "Face templates in the gate's gallery", v.faces)
    dropped = CounterMetricFamily(
        "starfish_gate_intake_dropped",
        "Reads dropped before a decision, by input and reason",
        labels=["input", "reason"],
    )
    for source, reason, n in intake_drops(v.intake_dropped):
        dropped.add_metric([source, reason], n)
    yield dropped


class GateMetrics:
    """One gate's metrics: event counters, and gauges read from `vitals` at scrape time."""

    def __init__(self, vitals: Callable[[], GateVitals], face_counts: Callable[[], dict[str, int] | None]) -> None:
        self.registry = CollectorRegistry()
        self._decisions = Counter(
            "starfish_gate_decisions",
            "Decisions by outcome, reason code and credential kind",
            ["outcome", "reason", "credential"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "starfish_gate_decision_seconds",
            "Scan read to journal committed, by input (camera, scanner, face)",
            ["input"],
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self._passages = Counter(
            "starfish_gate_passages",
            "Admissions whose passage is known, by how it ended",
            ["ended"],
            registry=self.registry,
        )
        self._faults = Counter("starfish_gate_barrier_faults", "Barrier faults", registry=self.registry)
        self.registry.register(_VitalsCollector(vitals, face_counts))

    def decided(self, entry: JournalEntry, source: str, seconds: float) -> None:
        """A decision is journaled (pending or final): `seconds` from the read to the commit."""
        self._decisions.labels(entry.outcome.value, entry.code, entry.credential).inc()
        self._seconds.labels(source).observe(max(0.0, seconds))

    def ended(self, entry: JournalEntry) -> None:
        """An admission's passage is known (sensor, on_open, timeout, barrier_fault, ...)."""
        self._passages.labels(ended_label(entry.resolution)).inc()

    def barrier_fault(self) -> None:
        self._faults.inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition (body, content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
