"""Face admission benchmark: camera frame -> decision by gallery size, the 1:N search alone, and the QR path meanwhile.

    python -m bench.face [--json] [--iterations N] [--sizes 1000,10000,100000,1000000]

* frame -> decision: a 640x480 camera frame (obama2.jpg, the top of the portrait filling the frame) sent
  to the face worker process (real `DlibFaceEncoder`, HOG at the gate's default detection width), its
  faces back, the gallery searched, the matcher (k = 1 so every frame decides) and `GateService.evaluate`
  on the cached season pass: p50/p95 with 1k, 10k, 100k and 1M templates (random vectors plus the real
  encodings of the photo people; the probe's own template is obama.jpg's). Per frame: a skier at a gate
  with the default k = 2 of m = 3 waits for two frames, plus up to one frame the worker was busy with,
  the intake hop and the journal commit (~0.3 ms, see bench.admission).
* search alone at 1M, in a child process holding only the gallery: p50/p95 and its RSS (VmRSS after the
  searches, VmHWM the peak).
* the QR decision path's p99 as `bench.admission` measures it (decoded text -> verify -> lookup ->
  decide -> journal commit -> coil-on acknowledged by a Modbus relay simulator) while a running gate's face
  worker analyses the camera's frames at full rate against a 100k gallery; and the same gate with no face block.
* helper figures of `bench.face_photos`: genuine and impostor distances on the shared photos, and the
  threshold the rule picks per gallery size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.stats import summary
from edge.face.gallery import Gallery, single_threaded_blas
from harness.testdata import portrait_frame

if TYPE_CHECKING:
    from drivers.face import Encoding

SITE = "bench"
SIZES = (1_000, 10_000, 100_000, 1_000_000)


def label(n: int) -> str:
    """1k, 10k, 100k, 1m: how the JSON keys name a gallery size."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


PEOPLE = ("obama.jpg", "biden.jpg", "lin-manuel-miranda.png", "alex-lacamoire.png")


def _faces_dir() -> Path:
    from harness.testdata import SHARED_TESTDATA

    return SHARED_TESTDATA / "faces"


def _p(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    at = lambda q: ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]  # noqa: E731
    return {"p50_ms": round(at(0.5), 3), "p95_ms": round(at(0.95), 3), "p99_ms": round(at(0.99), 3), "n": len(ordered)}


def _random_rows(n: int, start: int = 0, seed: int = 1) -> Iterator[tuple[str, str, np.ndarray]]:
    """`n` synthetic templates (norm ~1, like dlib's), made a block at a time to keep temporaries small."""
    rng = np.random.default_rng(seed + start)
    done = 0
    while done < n:
        chunk = rng.standard_normal(size=(min(4096, n - done), 128), dtype=np.float32) * np.float32(0.09)
        for row in chunk:
            i = start + done
            yield str(50_000_000 + i), f"h{i}", row
            done += 1


def _rss() -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM")}


def search_child(n: int, iterations: int) -> dict[str, Any]:
    """In a process of its own: a gallery of `n` and nothing else; search timings and RSS."""
    single_threaded_blas()  # as the gate runs it (edge.face.gallery)
    before = _rss()["VmRSS"]
    gallery = Gallery()
    gallery.load(_random_rows(n))
    probes = (np.random.default_rng(9).normal(size=(iterations + 20, 128)) * 0.09).astype(np.float32)
    samples = []
    for i, probe in enumerate(probes):
        t0 = time.perf_counter()
        gallery.search(probe)
        if i >= 20:
            samples.append((time.perf_counter() - t0) * 1000)
    rss = _rss()
    return {**_p(samples), "rss_mb": rss["VmRSS"], "peak_rss_mb": rss["VmHWM"], "rss_before_mb": before,
            "gallery_mb": round(gallery.nbytes / 2**20, 1)}  # fmt: skip


def _search_in_child(n: int, iterations: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.face", "--search-child", str(n), "--iterations", str(iterations)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout))


def _people() -> dict[str, Encoding]:
    from drivers.face import NO_GATES, DlibFaceEncoder
    from drivers.face_image import decode_photo

    encoder = DlibFaceEncoder(detect_width=1024, gates=NO_GATES)
    found = {name: encoder.analyze(decode_photo((_faces_dir() / name).read_bytes()), bgr=False) for name in PEOPLE}
    return {name: faces[0].encoding for name, faces in found.items() if faces and faces[0].encoding is not None}


def _season_store(path: Path) -> Any:
    from edge.store import GateStore
    from harness.tickets import make_ticket
    from models import Holder, ProductKind

    store = GateStore(path)
    holder = Holder(holder_id="obama", name="obama")
    store.upsert_tickets([make_ticket(ProductKind.SEASON, ticket_id="1", holder=holder)])
    return store


def frame_to_decision(sizes: tuple[int, ...], iterations: int, tmp: Path) -> dict[str, Any]:
    """Frame -> worker -> search -> matcher -> decision, per gallery size (the gallery grows between sizes)."""
    from drivers.face import DlibFaceEncoder, QualityGates
    from edge.face.matcher import Matcher
    from edge.face.rule import FaceRule
    from edge.face.worker import FaceWorker
    from edge.gate import GateService
    from harness.tickets import NOW
    from models import GateConfig

    single_threaded_blas()  # as the gate runs it (edge.face.gallery)
    people = _people()
    frame = portrait_frame(_faces_dir() / "obama2.jpg")
    store = _season_store(tmp / "frame.db")
    service = GateService(store=store, config=GateConfig(gate_id="bench", site_id=SITE))
    worker = FaceWorker(DlibFaceEncoder)  # the gate's encoder at its default detection width
    gallery = Gallery()
    gallery.put("1", "obama", people["obama.jpg"])
    for i, name in enumerate(PEOPLE[1:], start=2):
        gallery.put(str(i), name, people[name])
    out: dict[str, Any] = {"stages": {}}
    try:
        worker.analyze(frame)  # loads the models
        for size in sizes:
            gallery.load(_random_rows(size - len(gallery), start=len(gallery)))
            matcher = Matcher(FaceRule(k=1, m=1), QualityGates(), readmit_after_s=0.5)
            total, analyze, search, distance = [], [], [], 0.0
            for i in range(iterations + 5):
                t0 = time.perf_counter()
                faces = worker.analyze(frame)
                t1 = time.perf_counter()
                probe = matcher.probe(faces, float(i))
                if probe is None:
                    raise RuntimeError("no usable face in the bench frame")
                hit = gallery.search(probe)
                t2 = time.perf_counter()
                match = matcher.vote(hit, len(gallery), float(i))
                if match is None:
                    raise RuntimeError(f"obama not matched at {size}: {hit}")
                distance = match.distance
                decision = service.evaluate(match, NOW).decision
                t3 = time.perf_counter()
                if decision.code != "ok":
                    raise RuntimeError(f"bench pass not admitted: {decision.code}")
                if i >= 5:
                    total.append((t3 - t0) * 1000)
                    analyze.append((t1 - t0) * 1000)
                    search.append((t2 - t1) * 1000)
            p = _p(total)
            out[f"frame_p50_ms_{label(size)}"] = p["p50_ms"]
            out[f"frame_p95_ms_{label(size)}"] = p["p95_ms"]
            out["stages"][label(size)] = {
                "worker": _p(analyze),
                "search": _p(search),
                "distance": round(distance, 4),
            }
    finally:
        worker.close()
        store.close()
    return out


class _LoopCamera:
    """One frame again and again at `fps`, like a lane camera with a skier standing in it."""

    def __init__(self, frame: np.ndarray, fps: float = 30.0) -> None:
        self.frame, self.period, self.closed = frame, 1.0 / fps, threading.Event()

    def read(self) -> np.ndarray | None:
        return None if self.closed.wait(self.period) else self.frame

    def close(self) -> None:
        self.closed.set()


def _face_store(path: Path, templates: int, obama: Encoding, key: bytes) -> None:
    from edge.store import faces
    from models.face import pack_encoding, seal, template_aad

    store = _season_store(path)
    with store.conn as c:
        faces.put(c, "1", "obama", seal(key, pack_encoding(obama.tolist()), template_aad(SITE, "1", "obama")))
        for ticket_id, holder_id, enc in _random_rows(templates - 1):
            faces.put(
                c,
                ticket_id,
                holder_id,
                seal(key, enc.astype("<f4").tobytes(), template_aad(SITE, ticket_id, holder_id)),
            )
    store.close()


async def _qr_path(tmp: Path, iterations: int, face: bool, templates: int) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bench.admission import _CommandClock, _tokens
    from drivers.barrier import ModbusBarrier
    from drivers.face import DlibFaceEncoder
    from drivers.qr import DEFAULT_DECODER, make_decoder
    from edge.config import parse_config
    from edge.daemon import GateDaemon
    from edge.store import GateStore
    from harness.relay_sim import RelayBoardSim
    from models.credential import public_key_b64
    from models.face import face_key_text, site_face_key

    key = Ed25519PrivateKey.generate()
    face_key = site_face_key(bytes(32), SITE)
    db = tmp / ("qr-face.db" if face else "qr-idle.db")
    if face:
        _face_store(db, templates, _people()["obama.jpg"], face_key)
    (tmp / "face.key").write_text(face_key_text(face_key))
    sim = RelayBoardSim(passage_delay_s=0.0, passage_hold_s=0.0)
    port = await sim.start_tcp()
    cfg = parse_config(
        {
            "gate": {"gate_id": "bench", "site_id": SITE, "passback_seconds": 0},
            "store": {"path": str(db)},
            "barrier": {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "pulse_ms": 0},
            "camera": {"source": 0},
            "face": {"key_file": str(tmp / "face.key")} if face else None,
            "trusted_keys": {1: public_key_b64(key.public_key())},
        }
    )
    store = GateStore(cfg.store.path)
    proxy = _CommandClock(ModbusBarrier(transport="tcp", host="127.0.0.1", port=port, pulse_ms=0))
    daemon = GateDaemon(
        cfg,
        store=store,
        barrier=proxy,
        camera=_LoopCamera(portrait_frame(_faces_dir() / "obama2.jpg")),
        decoder=make_decoder(DEFAULT_DECODER),
        face_encoder=DlibFaceEncoder if face else None,
    )
    task = asyncio.create_task(daemon.run())
    out: dict[str, Any] = {}
    try:
        while not daemon.controller.healthy:
            await asyncio.sleep(0.01)
        if face:
            assert daemon.face is not None
            await asyncio.to_thread(daemon.face.loaded.wait, 600)
            while not any(e.credential == "face" for e in store.entries()):  # obama admitted once, then in view
                await asyncio.sleep(0.05)
            frames0, t0 = daemon.face.worker.frames, time.perf_counter()
        samples = []
        for i, token in enumerate(_tokens(key, iterations + 20)):
            t = time.perf_counter()
            handled = await daemon.handle(token, "bench")
            if handled.entry.code != "ok":
                raise RuntimeError(f"bench ticket was not admitted: {handled.entry.code}")
            if i >= 20:
                samples.append((proxy.issued_at - t) * 1000)
            await asyncio.sleep(0.002)  # a skier at a time, while the camera and the face worker run on
        out["path"] = summary(samples)
        if face:
            assert daemon.face is not None
            out["face_frames_per_s"] = round((daemon.face.worker.frames - frames0) / (time.perf_counter() - t0), 1)
            out["face_counts"] = vars(daemon.face.matcher.counts)
    finally:
        daemon.request_stop()
        await task
        store.close()
        await sim.stop()
    return out


def run(iterations: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    figures: dict[str, Any] = {"sizes": list(sizes)}
    with tempfile.TemporaryDirectory(prefix="starfish-bench-face-") as name:
        tmp = Path(name)
        figures.update(frame_to_decision(sizes, iterations, tmp))
        child = _search_in_child(1_000_000, max(iterations, 200))
        figures["search_1m"] = child
        figures["search_p50_ms_1m"] = child["p50_ms"]
        figures["search_p95_ms_1m"] = child["p95_ms"]
        figures["search_1m_rss_mb"] = child["rss_mb"]
        during = asyncio.run(_qr_path(tmp, 1000, True, 100_000))
        idle = asyncio.run(_qr_path(tmp, 1000, False, 0))
    figures["qr_path_during_face"] = during
    figures["qr_path_p99_ms_during_face"] = during["path"]["p99_ms"]
    figures["qr_path_median_ms_during_face"] = during["path"]["median_ms"]
    figures["qr_path_p99_ms_idle"] = idle["path"]["p99_ms"]
    try:
        from bench.face_photos import photo_distributions, threshold_table
    except ImportError:
        return figures
    figures["photo_distances"] = photo_distributions()
    figures["thresholds"] = threshold_table()
    return figures


def _print(f: dict[str, Any]) -> None:
    print(f"{'frame 640x480 -> decision':<34}{'median ms':>12}{'p95 ms':>12}{'worker p50':>12}{'search p50':>12}")
    for size in f["sizes"]:
        name = label(size)
        st = f["stages"][name]
        print(
            f"{'  ' + f'{size:,} templates':<34}{f[f'frame_p50_ms_{name}']:>12.1f}{f[f'frame_p95_ms_{name}']:>12.1f}"
            f"{st['worker']['p50_ms']:>12.1f}{st['search']['p50_ms']:>12.2f}"
        )
    s = f["search_1m"]
    print(f"\nsearch alone, 1M templates: median {s['p50_ms']} ms, p95 {s['p95_ms']} ms, p99 {s['p99_ms']} ms")
    print(f"  process RSS {s['rss_mb']} MB (peak {s['peak_rss_mb']} MB; gallery arrays {s['gallery_mb']} MB)")
    d = f["qr_path_during_face"]
    print(
        f"\nQR path (text -> barrier command) while faces are matched at {d['face_frames_per_s']} frames/s:"
        f" median {d['path']['median_ms']} ms, p99 {d['path']['p99_ms']} ms"
        f" (no face block: p99 {f['qr_path_p99_ms_idle']} ms)"
    )
    if "photo_distances" in f:
        pd = f["photo_distances"]
        for kind in ("genuine", "impostor"):
            g = pd[kind]
            print(
                f"{kind + ' distances':<20} median {g['median']}  min {g['min']}  max {g['max']}  ({g['count']} pairs)"
            )
        print("threshold by gallery size:")
        for n, t in f["thresholds"]["by_gallery_size"].items():
            print(
                f"  {int(n):>9,}  {t['threshold']:.3f}  (model {t['model_threshold']:.3f},"
                f" false accept {t['false_accept_chance']:.2g})"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--search-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.search_child:
        print(json.dumps(search_child(args.search_child, args.iterations)))
        return 0
    figures = run(args.iterations, tuple(int(s) for s in args.sizes.split(",")))
    if args.json:
        print(json.dumps(figures))
    else:
        _print(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
