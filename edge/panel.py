"""`DaemonPanel`: the running gate as its technician page sees it (`edge.web.port.GatePanel`).

Everything here runs on the daemon's event loop, which the decision task shares: store reads for
the page (journal search, counts) go through a `GateStoreReader` in a thread, the camera's JPEG is
drawn in a thread, and the counts the status shows (tickets, outbox, disk...) are refreshed at
most every `refresh_s` in a thread and served from the cache in between. The few writes (the
technician journal) go through the daemon's own store, on the loop, committed.

Decisions made here for the resort's technicians:
- A technician's keep-open is what `gate.emergency_open` is: the barrier held open and free passage,
  nothing counted. It lasts until turned off or until the daemon restarts (a restarted gate closes).
  A keep-open set in the config cannot be turned off from the page: change the file and reload.
- A test-open is not a passage: no ticket, nothing sent to the cloud; only the technician journal
  says it happened, with how the passage ended (sensor, timeout, barrier_fault: ...).
- The live decision list is best effort: a page that reads too slowly loses its oldest rows, never
  holds up a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edge.reasons import reason
from edge.reload import config_view, reload_config
from edge.store import GateStoreReader, JournalEntry
from edge.vitals import ActionName, DeviceVitals, GateVitals
from edge.web.port import ActionResult, DecisionView, Input, JournalPage
from models.ops import GateHealth

if TYPE_CHECKING:
    from edge.config import WebConfig
    from edge.daemon import GateDaemon
    from edge.web.server import WebServer

log = logging.getLogger("starfish.gate")

QUEUE_SIZE = 100  # live decisions one page may have waiting
_INPUTS = ("camera", "scanner", "face")


def _version() -> str:
    try:
        return importlib.metadata.version("starfish-gate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()


STATUS_REFRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class _Counts:
    """What costs a query or a system call, read in a thread now and then."""

    tickets: int = 0
    feed_seq: int = 0
    feed_epoch: str | None = None
    outbox_depth: int = 0
    outbox_oldest_at: datetime | None = None
    technicians: int = 0
    keys: list[int] = field(default_factory=list)
    disk_free_bytes: int | None = None
    journal_bytes: int = 0


def _count(path: Path) -> _Counts:
    reader = GateStoreReader(path)
    try:
        disk: int | None = shutil.disk_usage(path.parent).free
    except OSError:
        disk = None
    size = 0
    for p in (path, Path(f"{path}-wal")):
        with contextlib.suppress(OSError):
            size += p.stat().st_size
    return _Counts(
        tickets=reader.ticket_count(),
        feed_seq=reader.feed_seq(),
        feed_epoch=reader.feed_epoch(),
        outbox_depth=reader.outbox_depth(),
        outbox_oldest_at=reader.outbox_oldest_at(),
        technicians=len(reader.technicians()),
        keys=sorted(reader.keys()),
        disk_free_bytes=disk,
        journal_bytes=size,
    )


def decision_view(entry: JournalEntry, source: str | None) -> DecisionView:
    """One journal entry as the page lists it (`source`: the input that read it, live; None from the journal)."""
    return DecisionView(
        event_id=str(entry.event_id),
        at=entry.at,
        input=cast(Input, source) if source in _INPUTS else None,
        credential=entry.credential,
        ticket_id=entry.ticket_id,
        outcome=entry.outcome.value,
        code=entry.code,
        reason_en=reason(entry.code, "en"),
        reason_zh=reason(entry.code, "zh"),
        passed=entry.passed,
        ended=entry.resolution,
        face_distance=entry.face_distance,
    )


def _result(ok: bool, code: str, en: str, zh: str, **details: Any) -> ActionResult:
    return ActionResult(ok, code, en, zh, details or None)


class DaemonPanel:
    """`GatePanel` over a running `GateDaemon`."""

    def __init__(self, daemon: GateDaemon, *, refresh_s: float = 2.0) -> None:
        self.daemon = daemon
        self.refresh_s = refresh_s
        self.reader = GateStoreReader(daemon.config.store.path)
        self.keep_open_by_technician = False
        self.served_web: WebConfig | None = None  # the settings the page was built with (reload changes them)
        self._subscribers: set[asyncio.Queue[DecisionView]] = set()
        self._acting: set[asyncio.Future[ActionResult]] = set()
        self._counts = _Counts()
        self._counted_at = -math.inf
        self._refresh: asyncio.Task[None] | None = None
        self._barrier_error: tuple[str, datetime] | None = None
        daemon.watchers.append(self._decided)

    # --- vitals ------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the counts now (in a thread)."""
        self._counted_at = time.monotonic()
        try:
            self._counts = await asyncio.to_thread(_count, Path(self.daemon.config.store.path))
        except Exception:
            log.exception("technician page: could not read the store's counts")

    def _maybe_refresh(self, every_s: float) -> None:
        if self._refresh is not None and not self._refresh.done():
            return
        if time.monotonic() - self._counted_at < every_s:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: keep the cache
            self._refresh = asyncio.get_running_loop().create_task(self.refresh(), name="panel-counts")

    def _barrier(self) -> DeviceVitals:
        controller = self.daemon.controller
        if controller.healthy:
            return DeviceVitals("ok", *self._barrier_error) if self._barrier_error else DeviceVitals("ok")
        error = controller.last_error or "not connected"
        if self._barrier_error is None or self._barrier_error[0] != error:
            self._barrier_error = (error, self.daemon.clock())
        return DeviceVitals("error", *self._barrier_error)

    def face_counts(self) -> dict[str, int] | None:
        """The face matcher's counts since start, by result (None: face admission off)."""
        face = self.daemon.face
        if face is None:
            return None
        c = face.matcher.counts
        out = {"matched": c.offered, "unknown": c.unknown, "ambiguous": c.ambiguous, "no_face": c.no_face}
        out.update({f"skipped_{gate}": n for gate, n in dict(c.skipped).items()})
        return out

    def vitals(self, *, refresh_s: float | None = None) -> GateVitals:
        """The gate's health now; the counts (tickets, outbox, disk...) are `refresh_s` old at most (the
        page's 2 s by default)."""
        self._maybe_refresh(self.refresh_s if refresh_s is None else refresh_s)
        d, c, sync = self.daemon, self._counts, self.daemon.sync
        now_mono = time.monotonic()
        feed_seq = sync.feed_seq if sync is not None else c.feed_seq
        head = sync.head_seq if sync is not None else None
        checksum = sync.checksum if sync is not None else None
        oldest = c.outbox_oldest_at
        return GateVitals(
            site_id=d.config.gate.site_id,
            gate_id=d.config.gate.gate_id,
            direction=d.config.gate.direction.value,
            version=VERSION,
            started_at=d.started_at,
            uptime_s=max(0.0, d.monotonic() - d.started_mono),
            sync_configured=sync is not None,
            broker_connected=sync.connected if sync is not None else None,
            last_message_age_s=sync.last_message_age_s(now_mono) if sync is not None else None,
            feed_epoch=sync.epoch if sync is not None else c.feed_epoch,
            feed_seq=feed_seq,
            feed_head=head,
            feed_lag=None if head is None else max(0, head - feed_seq),
            feed_stale=d.service.feed_stale(d.clock()) if d.service.feed_stale is not None else False,
            resyncing=sync.resyncing if sync is not None else False,
            problem=sync.problem if sync is not None else None,
            outbox_depth=c.outbox_depth,
            outbox_oldest_age_s=None if oldest is None else max(0.0, (d.clock() - oldest).total_seconds()),
            tickets=c.tickets,
            faces=len(d.face.gallery) if d.face is not None else None,
            face_counts=self.face_counts(),
            checksum=checksum[1] if checksum is not None else None,
            checksum_seq=checksum[0] if checksum is not None else None,
            in_step=sync.in_step if sync is not None else None,
            trusted_keys=list(c.keys),
            technicians=c.technicians,
            barrier=self._barrier(),
            keep_open=d.controller.keep_open,
            fire_alarm=d.controller.alarm,
            passage_sensor=d.controller.has_sensor,
            fire_alarm_input=d.controller.has_fire_alarm,
            camera=d.inputs["camera"].vitals if "camera" in d.inputs else DeviceVitals("absent"),
            scanner=d.inputs["scanner"].vitals if "scanner" in d.inputs else DeviceVitals("absent"),
            disk_free_bytes=c.disk_free_bytes,
            journal_bytes=c.journal_bytes,
            # "<input>:<reason>", e.g. "scanner:not_a_credential" (edge.intake)
            intake_dropped={f"{i}:{r}": n for i, reasons in d.intake.drops.items() for r, n in reasons.items()},
            rules_source=d.service.rules.source,
            rules_since=d.service.rules.since,
            rules_problem=d.service.rules.problem,
        )

    def health(self) -> GateHealth | None:
        """What the sync client's status tells the cloud of this gate (asked every second: its counts are
        read every `STATUS_REFRESH_S`, unless the page keeps them fresher; device states are live)."""
        return self.vitals(refresh_s=STATUS_REFRESH_S).health()

    # --- live decisions and the journal ------------------------------------------------------

    def _decided(self, entry: JournalEntry, source: str) -> None:
        if not self._subscribers:
            return
        view = decision_view(entry, source)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # the slow page loses its oldest row, the gate waits for nobody
            queue.put_nowait(view)

    def subscribe(self) -> asyncio.Queue[DecisionView]:
        queue: asyncio.Queue[DecisionView] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[DecisionView]) -> None:
        self._subscribers.discard(queue)

    async def recent(self, limit: int) -> list[DecisionView]:
        entries = await asyncio.to_thread(self.reader.search, limit=limit)
        return [decision_view(e, None) for e in entries]

    async def search(
        self, *, ticket: str | None, since: datetime | None, until: datetime | None, limit: int
    ) -> JournalPage:
        def read() -> JournalPage:
            entries = self.reader.search(ticket, since, until, limit)
            # Actions belong to no ticket: a search by ticket shows that ticket's decisions only.
            actions = [] if ticket else self.reader.actions(since, until, limit)
            return JournalPage([decision_view(e, None) for e in entries], actions)

        return await asyncio.to_thread(read)

    # --- camera --------------------------------------------------------------------------------

    def has_camera(self) -> bool:
        return self.daemon.camera is not None

    async def camera_jpeg(self) -> bytes | None:
        frames = self.daemon.frames
        return None if frames is None else await asyncio.to_thread(frames.jpeg)

    # --- technicians ---------------------------------------------------------------------------

    def technician_hash(self, username: str) -> str | None:
        return self.daemon.store.technicians().get(username)

    def has_cloud_technicians(self) -> bool:
        return self.daemon.store.has_technician_list()

    async def journal_action(self, username: str, action: str, justification: str, ok: bool, detail: str) -> None:
        self.daemon.store.record_action(username, action, justification, ok, detail, self.daemon.clock())

    # --- actions -------------------------------------------------------------------------------

    async def act(
        self, action: ActionName, *, username: str, justification: str, on: bool | None = None
    ) -> ActionResult:
        """Carried out in a task of its own: a request cut off (the page closed, the server stopping) never
        cuts an action between opening the barrier and journaling it; `finish_actions` waits for them."""
        task = asyncio.ensure_future(self._act(action, username=username, justification=justification, on=on))
        self._acting.add(task)
        task.add_done_callback(self._acted)
        return await asyncio.shield(task)

    def _acted(self, task: asyncio.Future[ActionResult]) -> None:
        self._acting.discard(task)
        if not task.cancelled() and task.exception() is not None:  # logged here, whoever still awaits it
            log.error("technician action failed", exc_info=task.exception())

    async def finish_actions(self) -> None:
        """Wait for technician actions still running (the gate is stopping)."""
        if self._acting:
            await asyncio.gather(*self._acting, return_exceptions=True)

    async def _act(
        self, action: ActionName, *, username: str, justification: str, on: bool | None = None
    ) -> ActionResult:
        name: str = action
        if action == "test_open":
            result, detail = await self._test_open()
        elif action == "keep_open":
            if on is None:
                return _result(False, "bad_request", "Say on or off", "请选择开启或关闭")
            name = "keep_open_on" if on else "keep_open_off"
            result = await self._keep_open(on)
            detail = result.code
        elif action == "resync":
            result = self._resync(justification)
            detail = result.code
        elif action == "reload_config":
            result = await reload_config(self.daemon, keep_open=self.keep_open_by_technician)
            detail = f"{result.code}: {result.details}" if result.details else result.code
        else:
            return _result(False, "unknown_action", f"No such action: {action}", f"没有这个操作：{action}")
        log.warning("technician %s: %s -> %s (%s)", username, name, result.code, justification)
        await self.journal_action(username, name, justification, result.ok, detail[:500])
        return result

    async def _test_open(self) -> tuple[ActionResult, str]:
        """Open the barrier for one passage as an admission would; the journal says how it ended."""
        if self.daemon.stop_event.is_set():
            return _result(False, "stopping", "The gate is stopping", "闸机正在停止"), "stopping"
        r = await self.daemon.controller.test_open()
        if r.how == "busy":
            return _result(False, "busy", "A passage is in progress: try again", "正在通行：请稍后再试"), "busy"
        if r.how == "held_open":
            en, zh = "The barrier is held open (keep-open or fire alarm)", "闸门处于常开状态（常开或火警）"
            return _result(False, "held_open", en, zh), "held_open"
        if r.fault:
            detail = f"barrier_fault: {r.detail}"[:200]
            en, zh = f"The barrier did not open: {r.detail}", f"闸门未能打开：{r.detail}"
            return _result(False, "barrier_fault", en, zh, ended=detail), detail
        if r.passed:
            en, zh = f"The barrier opened and the passage ended ({r.how})", f"闸门已打开，通行结束（{r.how}）"
        elif r.how == "gave_way":
            en = "The barrier opened; a skier's ticket was scanned and the gate let them through as an admission"
            zh = "闸门已打开；期间有游客刷票，已按正常放行处理"
        else:
            en, zh = "The barrier opened; nobody passed before the timeout", "闸门已打开；超时内无人通过"
        return _result(True, "done", en, zh, ended=r.how, passed=r.passed), r.how

    async def _keep_open(self, on: bool) -> ActionResult:
        d = self.daemon
        if not on and d.config.gate.emergency_open:
            en = "Keep-open is set in the config (gate.emergency_open): change the file and reload"
            zh = "常开模式由配置设定（gate.emergency_open）：请修改配置文件并重新加载"
            return _result(False, "config_keep_open", en, zh)
        if not on and d.service.cloud_keep_open:
            en = "Keep-open is set by the cloud's rules for this gate: an admin ends it there"
            zh = "常开模式由云端为本闸机设定的规则开启：请管理员在云端关闭"
            return _result(False, "cloud_keep_open", en, zh)
        self.keep_open_by_technician = on
        d.service.config = d.config.gate.model_copy(update={"emergency_open": on or d.config.gate.emergency_open})
        r = await d.controller.set_keep_open(on)
        if r.fault:
            en = f"Keep-open is {'on' if on else 'off'} but the barrier did not answer: {r.detail}"
            zh = f"常开已{'开启' if on else '关闭'}，但闸门无响应：{r.detail}"
            return _result(False, "barrier_fault", en, zh, keep_open=on)
        if on:
            return _result(True, "done", "Keep-open on: free passage", "常开已开启：自由通行", keep_open=True)
        return _result(True, "done", "Keep-open off: back to normal", "常开已关闭：恢复正常", keep_open=False)

    def _resync(self, why: str) -> ActionResult:
        sync = self.daemon.sync
        if sync is None:
            return _result(False, "no_sync", "This gate runs without sync", "本闸机未配置同步")
        if not sync.request_resync(f"technician: {why}"):
            en, zh = "A snapshot is already being fetched", "正在获取快照"
            return _result(False, "resyncing", en, zh)
        return _result(True, "done", "Fetching a snapshot now", "正在重新获取完整快照")

    # --- config and metrics --------------------------------------------------------------------

    def config_view(self) -> dict[str, Any]:
        return config_view(self.daemon.config)

    def metrics(self) -> tuple[bytes, str]:
        m = self.daemon.metrics
        if m is None:
            return b"", "text/plain; version=0.0.4; charset=utf-8"
        return m.render()


async def serve_page(daemon: GateDaemon) -> WebServer | None:
    """Start the technician page and /metrics (with the metrics and the camera's frame tap they show).

    A bind that fails (port taken, address not on this host) is logged as an error and the gate runs
    on without its page: a turnstile must never stay shut for want of a diagnostics page."""
    web, panel = daemon.config.web, daemon.panel
    assert web is not None and panel is not None
    from edge.camera_view import FrameTap
    from edge.metrics import GateMetrics
    from edge.web.app import build_app
    from edge.web.server import WebServer, WebServerError

    daemon.metrics = GateMetrics(panel.vitals, panel.face_counts)
    if daemon.camera is not None:
        daemon.frames = FrameTap()
    panel.served_web = web
    server = WebServer(build_app(panel, web), web)
    try:
        await server.start()
    except WebServerError as exc:
        log.error("the technician page is OFF: %s", exc)
        return None
    scheme = "https" if web.tls_cert is not None else "http"
    log.info("technician page on %s://%s:%d/", scheme, web.bind, web.port)
    return server
