"""What the technician page needs of the running gate: one narrow Protocol, `GatePanel`.

The web app (`edge.web.app`) sees the gate only through it; the daemon implements it
(`edge.panel.DaemonPanel`), and the web's logic tests use a fake. Methods run on the daemon's
event loop; the async ones move anything slow (store reads, JPEG encoding, argon2) off it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from edge.vitals import ActionName, GateVitals

Input = Literal["camera", "scanner", "face"]
LoginSource = Literal["cloud", "break_glass"]


@dataclass(frozen=True, slots=True)
class DecisionView:
    """One decision as the page lists it. Sent twice live: when decided (`ended` None for a pending
    admission) and again when its passage ended; the page replaces the row with the same `event_id`."""

    event_id: str
    at: datetime
    input: Input | None  # which reader (live decisions); None for rows read back from the journal
    credential: str  # models.CredentialKind: qr, face, none, ...
    ticket_id: str | None
    outcome: str  # admit | deny
    code: str  # the stable reason code (edge.reasons)
    reason_en: str
    reason_zh: str
    passed: bool | None  # None: waiting for the passage
    ended: str | None  # the journal's resolution: how the passage ended (sensor, timeout, barrier_fault: ...)
    face_distance: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "at": self.at.isoformat(),
            "input": self.input,
            "credential": self.credential,
            "ticket_id": self.ticket_id,
            "outcome": self.outcome,
            "code": self.code,
            "reason_en": self.reason_en,
            "reason_zh": self.reason_zh,
            "passed": self.passed,
            "ended": self.ended,
            "face_distance": self.face_distance,
        }


@dataclass(frozen=True, slots=True)
class TechActionView:
    """One technician action (or login) as the gate's store journals it."""

    id: int
    at: datetime
    username: str
    # test_open, keep_open_on, keep_open_off, resync, reload_config, login, login_failed, locked_out, logout
    action: str
    justification: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "username": self.username,
            "action": self.action,
            "justification": self.justification,
            "ok": self.ok,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class ActionResult:
    ok: bool
    code: str  # done, barrier_fault, busy, no_sync, invalid_config, restart_needed, ...
    en: str
    zh: str
    details: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "code": self.code, "en": self.en, "zh": self.zh, "details": self.details or {}}


@dataclass(frozen=True, slots=True)
class JournalPage:
    decisions: list[DecisionView]
    actions: list[TechActionView]


class GatePanel(Protocol):
    """The running gate as its technician page sees it."""

    def vitals(self) -> GateVitals:
        """The gate's health now (cheap: cached counts)."""
        ...

    def subscribe(self) -> asyncio.Queue[DecisionView]:
        """A queue of live decisions (bounded: when a slow page lets it fill, the oldest go)."""
        ...

    def unsubscribe(self, queue: asyncio.Queue[DecisionView]) -> None: ...

    async def recent(self, limit: int) -> list[DecisionView]:
        """This gate's latest decisions from the journal, newest first."""
        ...

    async def search(
        self, *, ticket: str | None, since: datetime | None, until: datetime | None, limit: int
    ) -> JournalPage:
        """Journal entries (own decisions) and technician actions, newest first, by ticket and/or time."""
        ...

    async def camera_jpeg(self) -> bytes | None:
        """The latest camera frame as JPEG with boxes where a QR code or a face was found; None: no frame."""
        ...

    def has_camera(self) -> bool: ...

    def technician_hash(self, username: str) -> str | None:
        """The argon2 hash of an active cloud technician, None if the gate holds no such account."""
        ...

    def has_cloud_technicians(self) -> bool:
        """Has the gate ever received the cloud's technician list (then the break-glass account is off)?"""
        ...

    async def journal_action(self, username: str, action: str, justification: str, ok: bool, detail: str) -> None:
        """Write one technician action (or login event) to the gate's journal, committed."""
        ...

    async def act(
        self, action: ActionName, *, username: str, justification: str, on: bool | None = None
    ) -> ActionResult:
        """Carry out one technician action and journal it with the name and the justification."""
        ...

    def config_view(self) -> dict[str, Any]:
        """The running configuration, secrets masked, with each field's description (read-only)."""
        ...

    def metrics(self) -> tuple[bytes, str]:
        """The Prometheus exposition of this gate (body, content type)."""
        ...
