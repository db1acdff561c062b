"""Face admission at one gate: camera frames -> worker -> gallery search -> matcher -> the decision task.

`FaceAdmission` owns the face thread, the gallery and the matcher, and keeps the gallery in step
with the store as the `edge.sync_port.FaceListener`:

* The camera thread only `submit`s its frames (latest wins, see `edge.face.worker`).
* The face thread sends the latest frame to the worker process, waits for its faces, searches the
  gallery (numpy's BLAS releases the GIL) and runs the matcher; a `FaceMatch` goes to `offer`,
  which hands it to the decision task through the intake as the input ``face``. Neither the QR
  decoding of the same frames nor the decision task ever wait for any of this.
* Feed news arrives on the event loop (`face_put`, `face_deleted`, `faces_reloaded`, after the
  store's commit) and is only queued there; the face thread applies it before its next search,
  so the gallery has one owner and the event loop never waits for a search or a reload.
* The gallery is opened at start (and after a snapshot) from every stored template
  (`edge.store.faces.all_faces`, through a connection of the face thread's own), with the site's
  face key. A template that does not open with it (`FaceSealError`) is skipped and logged once.

The gallery is only as fresh as the ticket feed: a face whose pass was refunded or blocked after
the last feed message is still in it; the decision (`edge.gate.GateService.evaluate`) therefore
treats a face like a plain code and refuses it (``stale_feed``) when sync says the feed is stale.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.face.gallery import Gallery, Hit, single_threaded_blas
from edge.face.loader import Chunk, open_chunks, open_template, stored_rows
from edge.face.matcher import Matcher
from edge.face.worker import FaceWorker, WorkerDied
from models.face import FaceSealError

if TYPE_CHECKING:
    from drivers.face import Box, Encoding, Image
    from edge.decision import FaceMatch

log = logging.getLogger("starfish.gate")

Rows = Callable[[], Iterable[tuple[str, str, str]]]
_RELOAD = ("reload", "", "", "")
RELOAD_RETRY_S = 5.0


class FaceAdmission:
    """Face matching for one gate; also the store's `FaceListener`."""

    def __init__(
        self,
        *,
        worker: FaceWorker,
        matcher: Matcher,
        key: bytes,
        site: str,
        store_path: str | Path | None = None,
        rows: Rows | None = None,
        gallery: Gallery | None = None,
        reload_retry_s: float = RELOAD_RETRY_S,
        monotonic: Callable[[], float] = time.monotonic,
        on_faces: Callable[[list[Box], float], None] | None = None,
    ) -> None:
        self.worker = worker
        self.on_faces = on_faces  # each analysed frame's face boxes and time (the page's camera view)
        self.matcher = matcher
        self.gallery = gallery or Gallery()
        self._key = key
        self._site = site
        self._store_path = store_path  # the gallery is loaded from it (edge.face.loader)
        self._rows = rows  # or from these rows, on the face thread (tests)
        self.reload_retry_s = reload_retry_s
        self.monotonic = monotonic
        self._ops: deque[tuple[str, str, str, str]] = deque([_RELOAD])
        self._unopened: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offer: Callable[[FaceMatch], None] = lambda _: None
        self.loaded = threading.Event()  # the first gallery load is done

    # --- FaceListener: on the event loop, after the store's commit; only queued here ---

    def face_put(self, ticket_id: str, holder_id: str, sealed: str) -> None:
        self._ops.append(("put", ticket_id, holder_id, sealed))

    def face_deleted(self, ticket_id: str) -> None:
        self._ops.append(("delete", ticket_id, "", ""))

    def faces_reloaded(self) -> None:
        self._ops.append(_RELOAD)

    # --- the camera thread ---

    def submit(self, frame: Image) -> None:
        """A camera frame; the worker takes the latest one when it is free."""
        self.worker.submit(frame)

    # --- the face thread ---

    def start(self, offer: Callable[[FaceMatch], None]) -> None:
        """Start the worker and the face thread; each match goes to `offer` (from the face thread)."""
        self._offer = offer
        single_threaded_blas()  # OpenBLAS's spinning threads would take a core from the QR path (gallery.py)
        self.worker.start()
        self._thread = threading.Thread(target=self._run, name="face", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the face thread and the worker (blocking: call it off the event loop)."""
        self._stop.set()
        self.worker.wake()
        if self._thread is not None:
            self._thread.join(10)  # it finishes the frame in hand first: the worker's pipe has one user
        self.worker.close()

    def _open(self, ticket_id: str, holder_id: str, sealed: str) -> Encoding | None:
        try:
            return np.frombuffer(open_template(self._key, self._site, ticket_id, holder_id, sealed), "<f4")
        except FaceSealError as exc:
            if ticket_id not in self._unopened:
                self._unopened.add(ticket_id)
                log.error("face template of ticket %s skipped: %s", ticket_id, exc)
            return None

    def _chunks(self) -> Iterator[Chunk]:
        if self._store_path is not None:
            return open_chunks(stored_rows(self._store_path), self._key, self._site)
        return open_chunks(self._rows() if self._rows is not None else (), self._key, self._site)

    def _reload(self) -> None:
        started = time.perf_counter()
        failed: list[str] = []
        self.gallery.clear()
        for chunk in self._chunks():
            self.gallery.load_arrays(chunk.keys, chunk.tickets, chunk.holders, chunk.matrix)
            failed += chunk.failed
        if failed:
            self._unopened.update(failed)
            log.error(
                "face gallery: %d template(s) did not open with the site's face key, skipped (first: ticket %s)",
                len(failed),
                failed[0],
            )
        log.info("face gallery: %d template(s) opened in %.1f s", len(self.gallery), time.perf_counter() - started)

    def apply_pending(self) -> None:
        """Apply the queued feed news to the gallery, in order (the face thread; tests and bench too)."""
        while self._ops:
            op, ticket_id, holder_id, sealed = self._ops.popleft()
            if op == "reload":
                try:
                    self._reload()
                except Exception as exc:
                    # The gallery stays empty (no face admits) until a load succeeds; later news waits behind it.
                    self._ops.appendleft(_RELOAD)
                    log.error("face gallery could not be loaded (%s); trying again in %.0f s", exc, self.reload_retry_s)
                    self._stop.wait(self.reload_retry_s)
                    return
                self.loaded.set()
            elif op == "delete":
                self.gallery.remove(ticket_id)
                self._unopened.discard(ticket_id)
            else:
                encoding = self._open(ticket_id, holder_id, sealed)
                if encoding is None:
                    self.gallery.remove(ticket_id)  # its earlier template is no longer the pass's
                else:
                    self.gallery.put(ticket_id, holder_id, encoding)

    def search(self, probe: Encoding) -> tuple[Hit | None, int]:
        """The nearest template and the gallery's size."""
        return self.gallery.search(probe), len(self.gallery)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.apply_pending()
                taken = self.worker.next_frame(0.2)
                if taken is None:
                    continue
                frame, at = taken
                faces = self.worker.analyze(frame)
                if self.on_faces is not None:
                    self.on_faces([f.box for f in faces], at)
                self.apply_pending()
                match = self.matcher.frame(faces, self.search, at)
                if match is not None:
                    self._offer(match)
            except WorkerDied:
                self._stop.wait(self.worker.restart_after_s)
            except Exception:
                log.exception("face matching failed on a frame; it goes on with the next")
                self._stop.wait(0.5)


class FaceKeyError(Exception):
    """The site's face key named in the config cannot be read."""


def load_site_key(key_file: Path | None, key_env: str | None) -> bytes:
    """The site's face key from the file or environment variable the config names; `FaceKeyError` naming it."""
    import os

    from models.face import load_face_key

    if key_file is not None:
        where = f"face.key_file {key_file}"
        try:
            text = key_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise FaceKeyError(f"cannot read {where}: {getattr(exc, 'strerror', None) or exc}") from exc
    else:
        where = f"face.key_env {key_env}"
        found = os.environ.get(key_env or "")
        if not found:
            raise FaceKeyError(f"{where} is not set")
        text = found
    try:
        return load_face_key(text)
    except ValueError as exc:
        raise FaceKeyError(f"{where}: {exc}") from exc
