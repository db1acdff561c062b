"""The face encoder in a process of its own, fed the latest camera frame only.

dlib holds the GIL for tens of milliseconds per call (HOG detection, landmarks, the ResNet
encoder): run in the gate's process it would stall the QR decoder's thread and the decision
loop. So detection and encoding run in a child process started with "spawn" (never a fork of a
process that already has threads), which loads dlib; the gate's process only sends it a frame and
reads back the faces (a small list, the largest face's 128 floats).

Latest frame wins: the camera thread's `submit` overwrites the one frame waiting; the face
thread's `next_frame` takes it. A frame the worker had no time for is dropped, never queued, so
the face path cannot fall behind the camera and its memory cannot grow.

A worker that dies (dlib crash, out of memory, killed) is started again after a pause, and the
log says so; the frame it was working on is lost, nothing else. The pause doubles while it keeps
dying without finishing a frame (1 s up to a minute), so a worker that cannot start at all costs
one log line a minute, not a busy loop.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.context import SpawnContext, SpawnProcess

    from drivers.face import FaceEncoder, FaceFound, Image

log = logging.getLogger("starfish.gate")

EncoderSource = Callable[[], "FaceEncoder"]
NICE = 10
MAX_PAUSE_S = 60.0
FRAME_DEADLINE_S = 10.0  # a frame takes ~0.1 s; a worker this long on one is stuck (deadlock, swapping): killed


class WorkerDied(Exception):
    """The face worker process ended while it had a frame."""


def _serve(conn: Connection, source: Any) -> None:
    """The child: build the encoder, then analyze each frame it is sent until told to stop."""
    os.nice(NICE)  # best effort: when the two cores are busy, the gate's QR path and decisions go first
    made = isinstance(source, type) or not hasattr(source, "analyze")  # a class or a factory, else an encoder
    encoder = source() if made else source
    conn.send(("ready", None))
    while True:
        try:
            frame = conn.recv()
        except EOFError:
            return
        if frame is None:
            return
        try:
            conn.send(("faces", encoder.analyze(frame)))
        except Exception as exc:  # a frame the encoder refuses is that frame's problem only
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class FaceWorker:
    """A face encoder (`source`: an encoder, or a picklable callable making one) in a child process."""

    def __init__(
        self,
        source: EncoderSource | FaceEncoder,
        *,
        context: str = "spawn",
        restart_after_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._ctx: SpawnContext = multiprocessing.get_context(context)  # type: ignore[assignment]
        self.first_restart_s = restart_after_s
        self.restart_after_s = restart_after_s  # the pause before the next start, after a death
        self.monotonic = monotonic
        self._proc: SpawnProcess | None = None
        self._conn: Connection | None = None
        self._latest: tuple[Image, float] | None = None
        self._cond = threading.Condition()
        self._closed = False
        self.starts = 0
        self.frames_since_start = 0
        self.frames = 0
        self.dropped = 0  # frames overwritten before the worker was free for them

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def submit(self, frame: Image, at: float | None = None) -> None:
        """Offer a frame (any thread); it replaces one still waiting."""
        with self._cond:
            if self._latest is not None:
                self.dropped += 1
            self._latest = (frame, self.monotonic() if at is None else at)
            self._cond.notify()

    def next_frame(self, timeout: float) -> tuple[Image, float] | None:
        """The latest frame and when it was offered, waiting up to `timeout`; None if none came."""
        with self._cond:
            if self._latest is None and not self._closed:
                self._cond.wait(timeout)
            latest, self._latest = self._latest, None
            return None if self._closed else latest

    def wake(self) -> None:
        """Let a `next_frame` waiting for a frame return now."""
        with self._cond:
            self._cond.notify_all()

    def _start(self) -> Connection:
        here, there = self._ctx.Pipe()
        proc = self._ctx.Process(target=_serve, args=(there, self.source), name="starfish-face", daemon=True)
        proc.start()
        there.close()
        self._proc, self._conn = proc, here
        self.starts += 1
        self.frames_since_start = 0
        if self.starts > 1:
            log.warning("face worker restarted (pid %d, start %d)", proc.pid, self.starts)
        return here

    def _died(self, why: str) -> WorkerDied:
        proc = self._proc
        if proc is not None:
            proc.join(1.0)  # a pipe may break a moment before the process is gone: wait to read its exit code
        code = None if proc is None else proc.exitcode
        self._discard()
        if self.frames_since_start == 0 and self.starts > 1:
            self.restart_after_s = min(MAX_PAUSE_S, self.restart_after_s * 2)
        else:
            self.restart_after_s = self.first_restart_s
        log.error("face worker died (%s, exit code %s); restarting in %.1f s", why, code, self.restart_after_s)
        return WorkerDied(why)

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
        self._proc = self._conn = None

    def analyze(self, frame: Image) -> list[FaceFound]:
        """The faces of one frame, from the worker (started on first use). Raises `WorkerDied`."""
        if self._closed:
            raise WorkerDied("closed")  # never start a worker again once the gate is stopping
        conn = self._conn or self._start()
        deadline = time.monotonic() + FRAME_DEADLINE_S
        try:
            conn.send(frame)
            while True:
                if conn.poll(0.5):
                    kind, body = conn.recv()
                    if kind == "ready":
                        continue
                    self.frames += 1
                    self.frames_since_start += 1
                    if kind == "error":
                        log.warning("face worker could not analyze a frame: %s", body)
                        return []
                    faces: list[FaceFound] = body
                    return faces
                if self._proc is None or not self._proc.is_alive():
                    raise self._died("ended")
                if time.monotonic() > deadline:
                    raise self._died(f"no answer in {FRAME_DEADLINE_S:.0f} s")
        except (EOFError, OSError) as exc:
            raise self._died(type(exc).__name__) from exc

    def start(self) -> None:
        """Start the worker now (its models load while the gate starts), rather than on the first frame."""
        if self._conn is None:
            self._start()

    def close(self) -> None:
        """Stop the worker process."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        if self._proc is not None:
            self._proc.join(5)
        self._discard()
