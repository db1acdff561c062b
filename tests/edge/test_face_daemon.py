"""Face admission in the gate daemon: camera frames -> face worker process -> gallery -> decide() -> journal.

Logic scenarios run `FakeFaceEncoder` in the real worker process (spawned); one runs the real
`DlibFaceEncoder` on the shared photos.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.barrier import FakeBarrier
from drivers.face import FaceEncoder, FaceFound, FakeFaceEncoder, fake_face
from drivers.qr import DecodedCode
from edge.config import parse_config
from edge.daemon import GateDaemon
from edge.store import GateStore, JournalEntry, apply_change
from harness.processes import eventually
from harness.testdata import FACES, portrait_frame
from harness.tickets import NOW, make_ticket, sign
from models import Holder, ProductKind, TicketStatus
from models.credential import public_key_b64
from models.face import face_key_text, pack_encoding, seal, site_face_key, template_aad
from models.sync import FaceUpsert, TicketUpsert

SITE = "nanshan"
MASTER = bytes(range(32))
SITE_KEY = site_face_key(MASTER, SITE)
_rng = np.random.default_rng(20261220)
ALICE = (_rng.normal(size=128) * 0.09).astype(np.float32)  # norm ~1, like a dlib encoding
BOB = (_rng.normal(size=128) * 0.09).astype(np.float32)
QR_MARK = 7  # a frame whose first pixel's green value is this also shows a QR code


def faces_in(frame: np.ndarray) -> list[FaceFound]:
    """The fake encoder's answer: the first pixel's blue value says who is in the frame (1 alice, 2 bob)."""
    who = int(frame[0, 0, 0])
    base = {1: ALICE, 2: BOB}.get(who)
    return [] if base is None else [fake_face(base + 0.002)]


def frame(who: int, qr: bool = False) -> np.ndarray:
    f = np.zeros((480, 640, 3), np.uint8)
    f[0, 0, 0] = who
    f[0, 0, 1] = QR_MARK if qr else 0
    return f


class MarkedQr:
    """A QR decoder seeing `code` in frames marked with `QR_MARK`."""

    name = "marked"

    def __init__(self, code: bytes) -> None:
        self.code = code

    def decode(self, image: np.ndarray) -> list[DecodedCode]:
        return [DecodedCode(self.code.decode(), self.code, "marked")] if image[0, 0, 1] == QR_MARK else []


class PacedCamera:
    """A camera showing frames at `fps`: `frames` once, then `tail` (if any) until closed."""

    def __init__(self, frames: list[np.ndarray], tail: np.ndarray | None = None, fps: float = 20.0) -> None:
        self.frames = list(frames)
        self.tail = tail
        self.period = 1.0 / fps
        self.closed = threading.Event()

    def read(self) -> np.ndarray | None:
        if self.closed.wait(self.period):
            return None
        if self.frames:
            return self.frames.pop(0)
        return self.tail

    def close(self) -> None:
        self.closed.set()


def season(ticket_id: str, holder: str, **kw: Any) -> TicketUpsert:
    t = make_ticket(ProductKind.SEASON, ticket_id=ticket_id, holder=Holder(holder_id=holder, name=holder), **kw)
    return TicketUpsert(ticket=t)


def template(ticket_id: str, holder: str, encoding: np.ndarray, key: bytes = SITE_KEY) -> FaceUpsert:
    sealed = seal(key, pack_encoding(encoding.tolist()), template_aad(SITE, ticket_id, holder))
    return FaceUpsert(ticket_id=ticket_id, holder_id=holder, sealed=sealed)


def feed(store: GateStore, *changes: Any) -> None:
    for seq, change in enumerate(changes, start=1):
        apply_change(store, change, seq, gate="g1", fresh=NOW)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> Any:
        return self.now


def build(
    tmp_path: Path,
    signing_key: Ed25519PrivateKey,
    encoder: FaceEncoder | Callable[[], FaceEncoder],
    camera: PacedCamera,
    *,
    decoder: MarkedQr | None = None,
    face: dict[str, Any] | None = None,
) -> tuple[GateDaemon, Clock]:
    key_file = tmp_path / "face.key"
    key_file.write_text(face_key_text(SITE_KEY))
    cfg = parse_config(
        {
            "gate": {"gate_id": "g1", "site_id": SITE, "passback_seconds": 60, "rescan_seconds": 3},
            "store": {"path": str(tmp_path / "gate.db")},
            "barrier": {"type": "modbus_tcp", "host": "127.0.0.1"},
            "camera": {"source": 0},
            "face": {"key_file": str(key_file), "rule": {"k": 2, "m": 3}, **(face or {})},
            "trusted_keys": {1: public_key_b64(signing_key.public_key())},
        }
    )
    clock = Clock()
    daemon = GateDaemon(
        cfg,
        store=GateStore(cfg.store.path),
        barrier=FakeBarrier(),
        camera=camera,
        decoder=decoder or MarkedQr(b"none"),
        clock=clock,
        face_encoder=encoder,
    )
    return daemon, clock


def run(daemon: GateDaemon, body: Callable[[], Awaitable[object]]) -> None:
    async def main() -> None:
        task = asyncio.create_task(daemon.run())
        try:
            await eventually(lambda: daemon.controller.healthy, "the barrier connected", 5.0)
            await body()
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 30)
            daemon.store.close()

    asyncio.run(main())


def faced(store: GateStore) -> list[JournalEntry]:
    return [e for e in store.entries() if e.credential == "face"]


def test_a_season_pass_holders_face_admits_and_is_journaled_with_credential_face_and_the_distance(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    camera = PacedCamera([frame(0)] * 3, tail=frame(1))
    daemon, _ = build(tmp_path, signing_key, FakeFaceEncoder(analyze=faces_in), camera)
    feed(daemon.store, season("1001", "alice"), template("1001", "alice", ALICE))

    async def body() -> None:
        await eventually(lambda: faced(daemon.store), "a face decision", 20.0)
        await asyncio.sleep(1.0)  # alice stays in view: she is not offered again

    run(daemon, body)
    entries = faced(GateStore(tmp_path / "gate.db"))
    assert [(e.ticket_id, e.code, e.passed, e.counted) for e in entries] == [("1001", "ok", True, True)]
    expected = float(np.linalg.norm(np.full(128, 0.002, np.float32)))
    assert entries[0].face_distance == pytest.approx(expected, abs=1e-3)


def test_a_revoked_passs_face_is_denied(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    camera = PacedCamera([], tail=frame(2))
    daemon, _ = build(tmp_path, signing_key, FakeFaceEncoder(analyze=faces_in), camera)
    feed(daemon.store, season("1001", "alice"), season("1002", "bob"), template("1002", "bob", BOB))
    daemon.store.set_status("1002", TicketStatus.REVOKED, "refunded")

    run(daemon, lambda: eventually(lambda: faced(daemon.store), "a face decision", 20.0))
    assert [(e.ticket_id, e.outcome.value, e.code) for e in faced(GateStore(tmp_path / "gate.db"))] == [
        ("1002", "deny", "revoked")
    ]


def test_an_unknown_face_admits_nobody_and_journals_nothing(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    camera = PacedCamera([], tail=frame(2))  # bob has no template here
    # One appearance whatever the machine's load: frames of it further apart than vote_max_age_s (2 s by
    # default, reached on a loaded 2-core machine while the gallery loads) would count as two appearances.
    daemon, _ = build(tmp_path, signing_key, FakeFaceEncoder(analyze=faces_in), camera, face={"vote_max_age_s": 60})
    feed(daemon.store, season("1001", "alice"), template("1001", "alice", ALICE))

    async def body() -> None:
        await eventually(lambda: daemon.face is not None and daemon.face.matcher.counts.frames >= 5, "5 frames")

    run(daemon, body)
    assert daemon.face is not None and daemon.face.matcher.counts.unknown == 1
    assert GateStore(tmp_path / "gate.db").entries() == []


def test_passback_spans_face_and_qr_of_the_same_pass(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    token = sign(signing_key, make_ticket(ProductKind.SEASON, holder=Holder(holder_id="alice", name="alice")))
    camera = PacedCamera([], tail=frame(1))
    daemon, clock = build(tmp_path, signing_key, FakeFaceEncoder(analyze=faces_in), camera)
    feed(daemon.store, season("1001", "alice"), template("1001", "alice", ALICE))

    async def body() -> None:
        # the face's passage completed (counted), not merely journaled: only a counted entry holds passback
        await eventually(lambda: [e.passed for e in faced(daemon.store)] == [True], "a face passage", 20.0)
        clock.now = NOW + timedelta(seconds=10)  # past rescan suppression, within the 60 s passback
        handled = await daemon.handle(token.encode(), "scanner")
        assert (handled.entry.ticket_id, handled.entry.code) == ("1001", "passback")

    run(daemon, body)


def test_a_qr_code_scanned_while_the_face_worker_is_busy_is_decided_without_waiting_for_it(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    day = sign(signing_key, make_ticket(ticket_id="2001")).encode()
    camera = PacedCamera([frame(1, qr=True)], tail=frame(1))
    slow = FakeFaceEncoder(analyze=faces_in, delay_ms=4000, spin=True)  # dlib on a very bad day
    daemon, _ = build(tmp_path, signing_key, slow, camera, decoder=MarkedQr(day), face={"rule": {"k": 1, "m": 1}})
    feed(daemon.store, season("1001", "alice"), template("1001", "alice", ALICE))
    frames_done_at_qr: list[int] = []

    async def body() -> None:
        await eventually(lambda: daemon.store.entries(), "the QR decision", 20.0)
        assert daemon.face is not None
        frames_done_at_qr.append(daemon.face.worker.frames)
        await eventually(lambda: faced(daemon.store), "the face decision", 20.0)

    run(daemon, body)
    entries = GateStore(tmp_path / "gate.db").entries()
    assert [(e.credential, e.ticket_id, e.code) for e in entries] == [("signed", "2001", "ok"), ("face", "1001", "ok")]
    assert frames_done_at_qr == [0]  # the worker had not finished its first frame when the QR was decided


def crash_on_bob(frame: np.ndarray) -> list[FaceFound]:
    """Like `faces_in`, but the worker process dies on a bob frame (as if dlib crashed)."""
    if int(frame[0, 0, 0]) == 2:
        os._exit(3)
    return faces_in(frame)


def test_a_crashed_face_worker_is_restarted_and_says_so(
    tmp_path: Path, signing_key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="starfish.gate")
    camera = PacedCamera([], tail=frame(2))  # bob, until the worker he kills has been started again
    daemon, _ = build(tmp_path, signing_key, FakeFaceEncoder(analyze=crash_on_bob), camera)
    feed(daemon.store, season("1001", "alice"), template("1001", "alice", ALICE))
    original_read = camera.read

    def read() -> np.ndarray | None:
        if daemon.face is not None and daemon.face.worker.starts >= 2:
            camera.tail = frame(1)  # then alice
        return original_read()

    camera.read = read  # type: ignore[method-assign]

    async def body() -> None:
        await eventually(lambda: faced(daemon.store), "alice admitted after the restart", 30.0)

    run(daemon, body)
    text = caplog.text
    assert "face worker died" in text and "face worker restarted" in text


def test_a_missing_face_key_is_a_clear_error_and_the_gate_runs_without_faces(
    tmp_path: Path, signing_key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    token = sign(signing_key, make_ticket()).encode()
    camera = PacedCamera([], tail=frame(1))
    missing = tmp_path / "nowhere" / "face.key"
    daemon, _ = build(tmp_path, signing_key, FakeFaceEncoder(analyze=faces_in), camera, face={"key_file": str(missing)})
    feed(daemon.store, season("1001", "alice"), template("1001", "alice", ALICE))

    async def body() -> None:
        assert (await daemon.handle(token, "scanner")).entry.code == "ok"
        await asyncio.sleep(0.5)

    run(daemon, body)
    assert daemon.face is None
    assert f"face admission is OFF: the site's face key: cannot read face.key_file {missing}" in caplog.text
    assert faced(GateStore(tmp_path / "gate.db")) == []


def test_a_template_that_does_not_open_is_skipped_and_the_others_load(
    tmp_path: Path, signing_key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    camera = PacedCamera([], tail=frame(1))
    daemon, _ = build(tmp_path, signing_key, FakeFaceEncoder(analyze=faces_in), camera)
    other_site_key = site_face_key(MASTER, "beishan")
    feed(
        daemon.store,
        season("1001", "alice"),
        season("1002", "bob"),
        template("1001", "alice", ALICE),
        template("1002", "bob", BOB, key=other_site_key),
    )

    run(daemon, lambda: eventually(lambda: faced(daemon.store), "alice admitted", 20.0))
    assert daemon.face is not None and len(daemon.face.gallery) == 1
    assert "1 template(s) did not open with the site's face key, skipped (first: ticket 1002)" in caplog.text


def test_the_gallery_follows_the_feed_put_delete_and_reload(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    from drivers.face import QualityGates
    from edge.face.matcher import Matcher
    from edge.face.pipeline import FaceAdmission
    from edge.face.rule import FaceRule
    from edge.face.worker import FaceWorker

    store = GateStore(tmp_path / "gate.db")
    feed(store, template("1001", "alice", ALICE))
    face = FaceAdmission(
        worker=FaceWorker(FakeFaceEncoder()),  # never started: this test drives the listener and the search
        matcher=Matcher(FaceRule(), QualityGates()),
        key=SITE_KEY,
        site=SITE,
        store_path=store.path,  # read from the file, as on a gate
    )
    face.apply_pending()  # the start-up load
    assert len(face.gallery) == 1
    up = template("1002", "bob", BOB)
    assert up.sealed is not None
    face.face_put(up.ticket_id, up.holder_id, up.sealed)
    face.face_deleted("1001")
    assert len(face.gallery) == 1  # queued: only the face thread edits the gallery
    face.apply_pending()
    hit, n = face.search(BOB)
    assert n == 1 and hit is not None and hit.ticket_id == "1002"
    face.faces_reloaded()  # a snapshot holds only alice again
    face.apply_pending()
    hit, n = face.search(BOB)
    assert n == 1 and hit is not None and hit.ticket_id == "1001"
    store.close()


@pytest.mark.skipif(not FACES.is_dir(), reason="needs ../shared/testdata/faces")
def test_real_encoder_in_the_worker_admits_obama_from_another_photo_and_not_biden(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    import functools

    from drivers.face import DlibFaceEncoder

    enrolled = DlibFaceEncoder().enroll((FACES / "obama.jpg").read_bytes())
    camera = PacedCamera([], tail=frame(0), fps=10)
    encoder = functools.partial(DlibFaceEncoder, detect_width=640)
    daemon, _ = build(tmp_path, signing_key, encoder, camera)
    feed(daemon.store, season("1001", "obama"), template("1001", "obama", enrolled.encoding))
    seen_biden: list[tuple[int, int]] = []

    async def body() -> None:
        assert daemon.face is not None
        counts = daemon.face.matcher.counts
        await eventually(lambda: daemon.face and daemon.face.worker.frames, "the worker's models loaded", 60.0)
        camera.tail = portrait_frame(FACES / "biden.jpg")
        await eventually(lambda: counts.unknown, "biden looked at", 60.0)
        await asyncio.sleep(1.0)  # a second more of him
        seen_biden.append((counts.unknown, len(daemon.store.entries())))
        camera.tail = portrait_frame(FACES / "obama2.jpg")
        await eventually(lambda: faced(daemon.store), "obama admitted", 60.0)

    run(daemon, body)
    entries = faced(GateStore(tmp_path / "gate.db"))
    [(unknown, journaled)] = seen_biden
    assert unknown >= 1 and journaled == 0  # biden: an unknown face (counted per appearance), nothing journaled
    assert [(e.ticket_id, e.code) for e in entries] == [("1001", "ok")]
    assert entries[0].face_distance is not None and 0.2 < entries[0].face_distance < 0.6


@pytest.mark.parametrize(
    ("ticket", "code"),
    [
        pytest.param(season("1001", "alice").ticket, "ok", id="her-season-pass"),
        pytest.param(season("1001", "someone-else").ticket, "unknown_ticket", id="another-holders-pass"),
        pytest.param(make_ticket(ProductKind.DAY, ticket_id="1001"), "unknown_ticket", id="not-a-season-pass"),
        pytest.param(None, "unknown_ticket", id="no-cached-pass"),
    ],
)
def test_a_face_admits_only_as_its_holders_cached_season_pass(store: GateStore, ticket: Any, code: str) -> None:
    from edge.decision import FaceMatch
    from edge.gate import GateService
    from models import GateConfig

    if ticket is not None:
        store.upsert_tickets([ticket])
    service = GateService(store=store, config=GateConfig(gate_id="g1", site_id=SITE))
    assert service.evaluate(FaceMatch("1001", "alice", 0.3), NOW).decision.code == code


def test_a_face_is_refused_while_the_feed_is_stale_as_a_plain_code_is(store: GateStore) -> None:
    from edge.decision import FaceMatch
    from edge.gate import GateService
    from models import GateConfig

    store.upsert_tickets([season("1001", "alice").ticket])
    service = GateService(store=store, config=GateConfig(gate_id="g1", site_id=SITE))
    service.feed_stale = lambda now: True  # the gallery is only as fresh as the feed: a deletion may be missing
    ev = service.evaluate(FaceMatch("1001", "alice", 0.3), NOW)
    assert (ev.decision.admit, ev.decision.code) == (False, "stale_feed")


def broken_encoder() -> FaceEncoder:
    """An encoder that cannot even be built (models missing, say): the worker dies as it starts."""
    raise SystemExit(4)


def test_a_worker_that_cannot_start_is_retried_ever_more_slowly(caplog: pytest.LogCaptureFixture) -> None:
    from edge.face.worker import FaceWorker, WorkerDied

    worker = FaceWorker(broken_encoder, restart_after_s=0.25)
    pauses = []
    try:
        for _ in range(3):
            with pytest.raises(WorkerDied):
                worker.analyze(frame(1))
            pauses.append(worker.restart_after_s)
    finally:
        worker.close()
    assert pauses == [0.25, 0.5, 1.0]
    assert "exit code 4); restarting in 1.0 s" in caplog.text  # it died as it started, or as it was sent a frame


def test_a_gallery_that_cannot_be_loaded_admits_no_face_and_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from drivers.face import QualityGates
    from edge.face.matcher import Matcher
    from edge.face.pipeline import FaceAdmission
    from edge.face.rule import FaceRule
    from edge.face.worker import FaceWorker

    missing = tmp_path / "not-yet" / "gate.db"
    face = FaceAdmission(
        worker=FaceWorker(FakeFaceEncoder()),
        matcher=Matcher(FaceRule(), QualityGates()),
        key=SITE_KEY,
        site=SITE,
        store_path=missing,
        reload_retry_s=0.0,
    )
    face.apply_pending()
    assert not face.loaded.is_set() and len(face.gallery) == 0
    assert "face gallery could not be loaded" in caplog.text
    missing.parent.mkdir()
    store = GateStore(missing)
    feed(store, template("1001", "alice", ALICE))
    face.apply_pending()  # the load is still due, and now succeeds
    assert face.loaded.is_set() and len(face.gallery) == 1
    store.close()
