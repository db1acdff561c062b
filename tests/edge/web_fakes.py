"""A `GatePanel` for the web app's logic tests: technicians, decisions and action results set by the test,
and everything the app asks of it recorded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher

from edge.vitals import ActionName, DeviceVitals, GateVitals
from edge.web.port import ActionResult, DecisionView, JournalPage, TechActionView

# cheap parameters for tests; verify reads them from the hash itself
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
T0 = datetime(2025, 1, 18, 9, 30, tzinfo=UTC)


def fast_hash(password: str) -> str:
    return FAST_HASHER.hash(password)


def vitals() -> GateVitals:
    ok = DeviceVitals("ok")
    return GateVitals(
        site_id="nanshan",
        gate_id="g1",
        direction="in",
        version="1.2.3",
        started_at=T0,
        uptime_s=61.5,
        sync_configured=True,
        broker_connected=True,
        last_message_age_s=0.4,
        feed_epoch="e1",
        feed_seq=40,
        feed_head=42,
        feed_lag=2,
        feed_stale=False,
        resyncing=False,
        problem=None,
        outbox_depth=3,
        outbox_oldest_age_s=12.0,
        tickets=1200,
        faces=None,
        face_counts=None,
        checksum="abc",
        checksum_seq=40,
        in_step=True,
        trusted_keys=[1, 2],
        technicians=1,
        barrier=ok,
        keep_open=False,
        fire_alarm=False,
        passage_sensor=True,
        fire_alarm_input=False,
        camera=DeviceVitals("error", "no frame for 5 s", T0),
        scanner=ok,
        disk_free_bytes=10**9,
        journal_bytes=4096,
    )


def decision(event_id: str = "ev-1", *, ticket: str = "T-100", ended: str | None = None) -> DecisionView:
    return DecisionView(
        event_id=event_id,
        at=T0,
        input="scanner",
        credential="qr",
        ticket_id=ticket,
        outcome="admit",
        code="ok",
        reason_en="Welcome",
        reason_zh="欢迎",
        passed=None if ended is None else ended == "sensor",
        ended=ended,
    )


@dataclass(frozen=True)
class Act:
    action: ActionName
    username: str
    justification: str
    on: bool | None


@dataclass
class FakePanel:
    technicians: dict[str, str] = field(default_factory=dict)  # username -> argon2 hash
    received_list: bool = True
    camera: bool = True
    frame: bytes | None = b"\xff\xd8fake-jpeg\xff\xd9"
    results: dict[str, ActionResult] = field(default_factory=dict)  # action -> result (default: done)
    recent_views: list[DecisionView] = field(default_factory=list)
    page: JournalPage = field(default_factory=lambda: JournalPage([], []))
    queues: list[asyncio.Queue[DecisionView]] = field(default_factory=list)
    journal: list[tuple[str, str, str, bool, str]] = field(default_factory=list)
    acts: list[Act] = field(default_factory=list)
    searches: list[dict[str, Any]] = field(default_factory=list)
    recent_limits: list[int] = field(default_factory=list)

    def vitals(self) -> GateVitals:
        return vitals()

    def subscribe(self) -> asyncio.Queue[DecisionView]:
        q: asyncio.Queue[DecisionView] = asyncio.Queue(maxsize=100)
        self.queues.append(q)
        return q

    def unsubscribe(self, queue: asyncio.Queue[DecisionView]) -> None:
        self.queues.remove(queue)

    def publish(self, view: DecisionView) -> None:
        for q in self.queues:
            q.put_nowait(view)

    async def recent(self, limit: int) -> list[DecisionView]:
        self.recent_limits.append(limit)
        return self.recent_views[:limit]

    async def search(
        self, *, ticket: str | None, since: datetime | None, until: datetime | None, limit: int
    ) -> JournalPage:
        self.searches.append({"ticket": ticket, "since": since, "until": until, "limit": limit})
        return self.page

    async def camera_jpeg(self) -> bytes | None:
        return self.frame

    def has_camera(self) -> bool:
        return self.camera

    def technician_hash(self, username: str) -> str | None:
        return self.technicians.get(username)

    def has_cloud_technicians(self) -> bool:
        return self.received_list

    async def journal_action(self, username: str, action: str, justification: str, ok: bool, detail: str) -> None:
        self.journal.append((username, action, justification, ok, detail))

    async def act(
        self, action: ActionName, *, username: str, justification: str, on: bool | None = None
    ) -> ActionResult:
        self.acts.append(Act(action, username, justification, on))
        return self.results.get(action, ActionResult(True, "done", "Done", "完成"))

    def config_view(self) -> dict[str, Any]:
        return {"gate": {"gate_id": "g1"}, "web": {"break_glass": {"password_hash": "••••"}}}

    def metrics(self) -> tuple[bytes, str]:
        return b"starfish_gate_uptime_seconds 61.5\n", "text/plain; version=0.0.4; charset=utf-8"

    def actions_journaled(self) -> list[str]:
        return [a for _u, a, _j, _ok, _d in self.journal]


def tech_action(action: str = "test_open") -> TechActionView:
    return TechActionView(1, T0, "li.wei", action, "barrier sticks", True, "sensor")


class Clock:
    """The sessions' and lockouts' monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
