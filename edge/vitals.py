"""One reading of a running gate's health: what the technician page shows, the metrics export and the
status tells the cloud (`GateVitals.health`). Built by `edge.panel.DaemonPanel.vitals` from the daemon,
its sync client and its store, cheaply (counts are cached, never a scan per request).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from models.ops import ERROR_MAX, DeviceState, GateHealth


@dataclass(frozen=True, slots=True)
class DeviceVitals:
    """A device: `ok`, `error` (its last error, and when), or `absent` (not configured)."""

    state: DeviceState
    last_error: str | None = None
    last_error_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class GateVitals:
    site_id: str
    gate_id: str
    direction: str
    version: str
    started_at: datetime
    uptime_s: float
    # sync (None where the gate runs without sync)
    sync_configured: bool
    broker_connected: bool | None
    last_message_age_s: float | None  # since the last MQTT message of any kind from the broker
    feed_epoch: str | None
    feed_seq: int
    feed_head: int | None  # the cloud's retained head, as last heard
    feed_lag: int | None  # head - seq, never below 0
    feed_stale: bool  # decisions refuse codes that need a fresh feed (`stale_feed`)
    resyncing: bool
    problem: str | None  # what the sync client says is wrong with this gate's name or rights
    outbox_depth: int
    outbox_oldest_age_s: float | None
    tickets: int
    faces: int | None  # None: face admission off
    face_counts: dict[str, int] | None  # edge.face.matcher.FaceCounts as a dict
    checksum: str | None
    checksum_seq: int | None
    in_step: bool | None  # against the cloud's checksum in the feed head; None: not comparable yet
    trusted_keys: list[int]
    technicians: int  # cloud accounts the gate holds
    barrier: DeviceVitals
    keep_open: bool
    fire_alarm: bool
    passage_sensor: bool  # a passage input is configured
    fire_alarm_input: bool  # a fire-alarm input is configured
    camera: DeviceVitals
    scanner: DeviceVitals
    disk_free_bytes: int | None
    journal_bytes: int  # the store file and its WAL
    intake_dropped: dict[str, int] = field(default_factory=dict)  # reads dropped, by reason
    # Whose gate rules are in force (`edge.gate.RulesSource`): "cloud" since `rules_since`, or "local" (the file).
    rules_source: str = "local"
    rules_since: datetime | None = None
    rules_problem: str | None = None  # cloud rules this gate refused (another site's or gate's)

    def as_json(self) -> dict[str, Any]:
        """For the page's /api/status: datetimes as ISO 8601 text."""
        out = asdict(self)
        out["started_at"] = self.started_at.isoformat()
        out["rules_since"] = self.rules_since.isoformat() if self.rules_since is not None else None
        for name in ("barrier", "camera", "scanner"):
            at = out[name]["last_error_at"]
            out[name]["last_error_at"] = at.isoformat() if at is not None else None
        return out

    def health(self) -> GateHealth:
        """What the status tells the cloud."""

        def err(d: DeviceVitals) -> str | None:
            return d.last_error[:ERROR_MAX] if d.last_error else None

        return GateHealth(
            version=self.version[:40],
            uptime_s=int(self.uptime_s),
            barrier=self.barrier.state,
            barrier_error=err(self.barrier),
            keep_open=self.keep_open,
            fire_alarm=self.fire_alarm,
            camera=self.camera.state,
            camera_error=err(self.camera),
            scanner=self.scanner.state,
            scanner_error=err(self.scanner),
            oldest_unacked_s=None if self.outbox_oldest_age_s is None else int(self.outbox_oldest_age_s),
            disk_free_mb=None if self.disk_free_bytes is None else self.disk_free_bytes // (1024 * 1024),
            tickets=self.tickets,
            faces=self.faces,
            in_step=self.in_step,
        )


ActionName = Literal["test_open", "keep_open", "resync", "reload_config"]
