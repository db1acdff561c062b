"""The gate daemon: inputs -> decision -> journal -> barrier -> sensor -> journal.

Tasks: one per input (camera and/or scanner; blocking drivers run in threads and hand codes
to the event loop through the `Intake`, which drops what cannot be a credential and keeps one
input from crowding out another), one decision task that handles one code at a time, and one
task that owns the barrier (`BarrierController`). SIGTERM or SIGINT stops it cleanly.

With a `web:` block it also serves the technician page and /metrics (`edge.panel.serve_page`), as a
task of the same loop; its slow work (store reads, JPEG, argon2) runs in threads.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from drivers.errors import DriverError
from edge.barrier_control import BarrierController
from edge.config import EdgeConfig
from edge.decision import FaceMatch
from edge.gate import Evaluation, GateService
from edge.hardware import Barrier, Scanner
from edge.inputs import Debouncer, InputHealth, supervise
from edge.intake import NOT_A_CREDENTIAL, TOO_OLD, Intake, Scan
from edge.panel import DaemonPanel, serve_page
from edge.reasons import reason
from edge.store import GateStore, JournalEntry
from models import GateConfig
from models.credential import could_be_credential

if TYPE_CHECKING:
    from edge.camera_view import FrameTap
    from edge.face.pipeline import FaceAdmission
    from edge.face.worker import EncoderSource
    from edge.hardware import Camera, FaceEncoder, QrDecoder
    from edge.metrics import GateMetrics
    from sync.gate import GateSync

log = logging.getLogger("starfish.gate")

Clock = Callable[[], datetime]
Watcher = Callable[[JournalEntry, str], None]  # an entry as journaled (decided, then ended), and its input

__all__ = ["Debouncer", "FaceScan", "GateDaemon", "Handled", "Scan", "run_from_config"]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class FaceScan(Scan):
    """A face the matcher recognised, waiting for its decision like a code."""

    match: FaceMatch


@dataclass(frozen=True, slots=True)
class Handled:
    """One scan, as handled: for observers (demo, diagnostics)."""

    source: str
    data: bytes
    evaluation: Evaluation
    entry: JournalEntry


class GateDaemon:
    """One gate: wire inputs, decisions, journal and barrier together."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        store: GateStore,
        barrier: Barrier,
        camera: Camera | None = None,
        decoder: QrDecoder | None = None,
        scanner: Scanner | None = None,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        on_handled: Callable[[Handled], None] | None = None,
        face_encoder: EncoderSource | FaceEncoder | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path  # re-read by a technician's reload-config (edge.reload)
        self.store = store
        self.clock = clock
        self.monotonic = monotonic  # read ages, debounce and input rates
        self.started_at = clock()
        self.started_mono = monotonic()
        self.service = GateService(store=store, config=config.gate)
        if config.vouchers is not None:
            try:
                self.service.voucher_key = config.vouchers.load_key()
            except ValueError as exc:  # the gate still admits every ticket it has; it says less about unknown ones
                log.error("voucher codes not synced yet will read as unknown: the site's voucher key: %s", exc)
        bc = config.barrier
        self.controller = BarrierController(
            barrier,
            has_sensor=bc.passage_input is not None,
            has_fire_alarm=bc.fire_alarm_input is not None,
            passage_timeout_s=bc.passage_timeout_s,
            on_alarm=self._alarm,
            keep_open=self.service.config.emergency_open,  # the cloud's rules (stored) may hold it open
        )
        self._holds: set[asyncio.Task[object]] = set()
        self.service.on_rules = self._rules_changed
        self.camera = camera
        self.decoder = decoder
        self.scanner = scanner
        self.on_handled = on_handled
        self.stop_event = asyncio.Event()
        self.exit_code = 0
        ic = config.intake
        self.intake = Intake(
            per_source=ic.queue_per_input, rate_per_s=ic.rate_per_s, burst=ic.burst, monotonic=monotonic
        )
        self._threads_stop = threading.Event()
        self._in_flight: asyncio.Future[Handled] | None = None
        self.sync: GateSync | None = None
        self.face_encoder = face_encoder  # runs in the face worker process (edge.face.worker)
        self.face: FaceAdmission | None = None
        self.inputs = {
            name: InputHealth() for name, device in (("camera", camera), ("scanner", scanner)) if device is not None
        }
        self.watchers: list[Watcher] = []  # told of every decision journaled, and again when its passage ended
        self.metrics: GateMetrics | None = None  # with a web block (edge.panel.serve_page)
        self.frames: FrameTap | None = None  # the camera page's latest frame, with a web block and a camera
        self.panel: DaemonPanel | None = None
        self.debouncers: list[Debouncer] = []  # the inputs' (reload-config sets their window)

    def _rules_changed(self, rules: GateConfig) -> None:
        """The cloud's rules changed what is in force (`GateService.reload_rules`): the barrier is held open or
        released as they now say; decisions follow `service.config` at once."""
        if rules.emergency_open == self.controller.keep_open:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not running: the barrier task starts as the flag says
            self.controller.keep_open = rules.emergency_open
            return
        log.warning("gate rules: keep-open %s", "on" if rules.emergency_open else "off")
        task = loop.create_task(self.controller.set_keep_open(rules.emergency_open), name="rules-keep-open")
        self._holds.add(task)
        task.add_done_callback(self._holds.discard)

    def _alarm(self, on: bool) -> None:
        self.service.alarm = on  # free passage starts even if journaling the alarm fails
        self.service.record_alarm(on, self.clock())

    async def handle(
        self, data: bytes | FaceMatch, source: str, at: datetime | None = None, mono: float | None = None
    ) -> Handled:
        """Decide on one code (or recognised face), journal it, and drive the barrier if it admits.

        `mono` is when the input read it (`monotonic`): the metrics time the read -> journal path."""
        mono = self.monotonic() if mono is None else mono
        now = at or self.clock()
        ev = self.service.evaluate(data, now)
        entry = self.service.journal(ev, now, barrier_ok=self.controller.healthy)
        if self.metrics is not None:
            self.metrics.decided(entry, source, self.monotonic() - mono)
        self._tell(entry, source)
        if entry.passed is None:
            result = await self.controller.pass_one()
            if result.fault:
                entry = self.service.barrier_failed(entry, result.detail)
                if self.metrics is not None:
                    self.metrics.barrier_fault()
            else:
                entry = self.service.complete(entry, passed=result.passed, how=result.how)
            if self.metrics is not None:
                self.metrics.ended(entry)
            self._tell(entry, source)
        log.info(
            "%s %s ticket=%s code=%s passed=%s (%s)",
            source,
            entry.outcome.value.upper(),
            entry.ticket_id,
            entry.code,
            entry.passed,
            reason(entry.code),
        )
        handled = Handled(source, data.label if isinstance(data, FaceMatch) else data, ev, entry)
        if self.sync is not None:
            self.sync.nudge()  # the entry is in the outbox now: publish it at once
        if self.on_handled is not None:
            self.on_handled(handled)
        return handled

    def _tell(self, entry: JournalEntry, source: str) -> None:
        for watch in self.watchers:
            try:
                watch(entry, source)
            except Exception:
                log.exception("a decision watcher failed")  # the page's trouble, never the gate's

    def _offer(self, loop: asyncio.AbstractEventLoop, data: bytes, source: str) -> None:
        """Hand a read from an input's thread to the decision task, within the input's rate."""
        now = self.monotonic()
        if self.intake.allow(source, now):
            loop.call_soon_threadsafe(self.intake.put, Scan(data, source, self.clock(), now))

    def _offer_face(self, loop: asyncio.AbstractEventLoop, match: FaceMatch) -> None:
        """Hand a recognised face from the face thread to the decision task, as the input ``face``."""
        now = self.monotonic()
        if self.intake.allow("face", now):
            scan = FaceScan(match.label, "face", self.clock(), now, match)
            loop.call_soon_threadsafe(self.intake.put, scan)

    def _start_face(self, loop: asyncio.AbstractEventLoop) -> None:
        """Face admission, when configured and its key reads; otherwise the gate runs without it and says why."""
        fc = self.config.face
        if fc is None or not fc.enabled or self.face_encoder is None or self.camera is None:
            return
        from edge.face.matcher import Matcher
        from edge.face.pipeline import FaceAdmission, FaceKeyError, load_site_key
        from edge.face.worker import FaceWorker
        from edge.hardware import quality_gates

        try:
            key = load_site_key(fc.key_file, fc.key_env)
        except FaceKeyError as exc:
            log.error("face admission is OFF: the site's face key: %s", exc)
            return
        r = fc.rule
        matcher = Matcher(
            r.to_rule(),
            quality_gates(fc),
            vote_max_age_s=fc.vote_max_age_s,
            readmit_after_s=fc.readmit_after_s,
        )
        path = self.config.store.path
        self.face = FaceAdmission(
            worker=FaceWorker(self.face_encoder, monotonic=self.monotonic),
            matcher=matcher,
            key=key,
            site=self.config.gate.site_id,
            store_path=path,
            monotonic=self.monotonic,
            on_faces=None if self.frames is None else self.frames.faces,
        )
        self.face.start(lambda match: self._offer_face(loop, match))
        log.info("face admission on (k=%d of m=%d, target %g per attempt)", r.k, r.m, r.target)

    def _scanner_step(self, loop: asyncio.AbstractEventLoop, scanner: Scanner, debounce: Debouncer) -> bool:
        line = scanner.read_line(0.3)
        if not line:
            return True
        if not could_be_credential(line):
            self.intake.drop("scanner", NOT_A_CREDENTIAL)  # before the debouncer: noise must not fill it
        elif debounce.fresh(line, self.monotonic()):
            self._offer(loop, line, "scanner")
        return True

    def _camera_step(
        self, loop: asyncio.AbstractEventLoop, camera: Camera, decoder: QrDecoder, debounce: Debouncer
    ) -> bool:
        frame = camera.read()
        if frame is None:
            log.info("camera source ended")
            return False
        if self.face is not None:
            self.face.submit(frame)  # the face worker takes it when free; QR decoding goes on now
        codes = decoder.decode(frame)
        if self.frames is not None:
            self.frames.offer(frame, codes, self.monotonic())
        for code in codes:
            if debounce.fresh(code.raw, self.monotonic()):
                self._offer(loop, code.raw, "camera")
        return True

    async def _decisions(self) -> None:
        while True:
            scan = await self.intake.get()
            age = self.monotonic() - scan.mono
            if age > self.config.max_scan_age_s:
                # The skier waited behind a passage and has likely gone: do not open for whoever is there now.
                log.debug("dropped a %s read that waited %.1f s (older than max_scan_age_s)", scan.source, age)
                self.intake.drop(scan.source, TOO_OLD)
                continue
            data = scan.match if isinstance(scan, FaceScan) else scan.data
            self._in_flight = asyncio.ensure_future(self.handle(data, scan.source, scan.at, scan.mono))
            try:
                await asyncio.shield(self._in_flight)
            except Exception:
                # A decision must never take the gate down; the barrier stays closed.
                log.exception("failed to handle a %s read; barrier stays closed", scan.source)

    def _input_thread(self, name: str, device: Scanner | Camera, step: Callable[[], bool]) -> threading.Thread:
        health, stop, clock = self.inputs[name], self._threads_stop, self.clock
        return threading.Thread(
            target=supervise,
            args=(name, device, step),
            kwargs={"stop": stop, "health": health, "clock": clock},
            daemon=True,
        )

    def request_stop(self) -> None:
        self.stop_event.set()

    def _barrier_task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.stop_event.is_set():
            return
        log.critical("barrier task ended unexpectedly (%s); stopping the gate", task.exception())
        self.exit_code = 1
        self.request_stop()

    async def run(self) -> None:
        """Run until `request_stop` (or SIGTERM/SIGINT when installed)."""
        recovered = self.store.recover()
        if recovered:
            log.warning("resolved %d admission(s) left unconfirmed by a crash: not counted", len(recovered))
        if self.config.trusted_keys and (self.config.sync is None or not self.store.keys()):
            # With sync the cloud's key set rules; the YAML keys only seed a gate that has none.
            self.store.set_keys(self.config.trusted_keys)
            self.service.reload_keys()
        loop = asyncio.get_running_loop()
        self.panel = panel = DaemonPanel(self)
        await panel.refresh()
        web = await serve_page(self) if self.config.web is not None else None  # before the inputs: the frame tap
        self._start_face(loop)
        if self.config.sync is not None:
            from edge.sync_port import StorePort
            from sync.gate import GateSync

            port = StorePort(
                self.store,
                gate_id=self.config.gate.gate_id,
                service=self.service,
                faces=self.face,
                health=panel.health,
            )
            self.sync = GateSync(self.config.sync, port=port, clock=self.clock)
            self.service.feed_stale = self.sync.feed_stale
            self.sync.start()
        threads = []
        self.debouncers = [Debouncer(self.config.input_debounce_s) for _ in range(2)]
        if self.scanner is not None:
            scanner, sd = self.scanner, self.debouncers[0]
            threads.append(self._input_thread("scanner", scanner, lambda: self._scanner_step(loop, scanner, sd)))
        if self.camera is not None and self.decoder is not None:
            camera, decoder, cd = self.camera, self.decoder, self.debouncers[1]
            threads.append(self._input_thread("camera", camera, lambda: self._camera_step(loop, camera, decoder, cd)))
        for t in threads:
            t.start()
        barrier_stop = asyncio.Event()
        barrier_task = asyncio.create_task(self.controller.run(barrier_stop), name="barrier")
        barrier_task.add_done_callback(self._barrier_task_ended)
        decision_task = asyncio.create_task(self._decisions(), name="decisions")
        log.info("gate %s (%s) running", self.config.gate.gate_id, self.config.gate.direction.value)
        try:
            await self.stop_event.wait()
        finally:
            if web is not None:
                await web.stop()  # first: no technician action may start while the gate stops
            if self.panel is not None:
                await self.panel.finish_actions()  # a test-open's passage ends and is journaled
            self._threads_stop.set()
            decision_task.cancel()
            await asyncio.gather(decision_task, return_exceptions=True)
            if self._in_flight is not None and not self._in_flight.done():
                # A skier is in the turnstile: let the passage finish so it is counted, not lost.
                log.info("stopping: waiting for the passage in progress")
                await asyncio.gather(self._in_flight, return_exceptions=True)
            if self.sync is not None:
                await self.sync.stop()  # publishes `offline`; the outbox keeps what is unconfirmed
            barrier_stop.set()
            await asyncio.gather(barrier_task, return_exceptions=True)
            for t in threads:
                await asyncio.to_thread(t.join, 2.0)
            if self.face is not None:
                await asyncio.to_thread(self.face.stop)
            self.intake.report(force=True)
            log.info("gate %s stopped", self.config.gate.gate_id)


def install_signal_handlers(daemon: GateDaemon) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)


async def run_from_config(config: EdgeConfig, config_path: Path | None = None) -> int:
    """Build the devices the config names and run the gate until SIGTERM (`config_path`: for reload-config)."""
    from edge.hardware import make_barrier, make_camera, make_decoder, make_face_encoder, make_scanner

    config.store.path.parent.mkdir(parents=True, exist_ok=True)
    store = GateStore(config.store.path)
    camera = decoder = scanner = None
    if config.camera is not None:
        decoder = make_decoder(config.camera.decoder)
        camera = make_camera(config.camera)
    if config.scanner is not None:
        scanner = make_scanner(config.scanner)
    face_encoder = None
    if config.face is not None and config.face.enabled:
        try:
            face_encoder = make_face_encoder(config.face)
        except DriverError as exc:
            log.error("face admission is OFF: %s", exc)
    daemon = GateDaemon(
        config,
        store=store,
        barrier=make_barrier(config.barrier),
        camera=camera,
        decoder=decoder,
        scanner=scanner,
        face_encoder=face_encoder,
        config_path=config_path,
    )
    install_signal_handlers(daemon)
    try:
        await daemon.run()
    finally:
        store.close()
    return daemon.exit_code
