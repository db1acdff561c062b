"""Genuine and impostor face distances on the shared photos, and the threshold the gate's rule picks per size.

python -m bench.face_photos [--json] [--testdata DIR]

Identities come from the paths (`knn_examples/train/<person>/...`, else the file name: obama*, biden*, ...;
`johnsnow_*` is Kit Harington). Photos of several people (two_people, obama_and_biden, kit_with_rose) are
left out, and so are copies, which would pull the genuine figures towards 0: byte-identical files, the
partial-face crops of obama.jpg, and a photo whose encoding is within NEAR_COPY of one already taken of
the same person (the rescaled obama-240p/480p/720p and obama_small, the 32-bit PNG of obama2).

Measured (15 photos of 6 people): genuine n=14, median 0.374, 0.324-0.517 (the top two from a soft,
turned video still of Alex Lacamoire; the others <= 0.424); impostor n=91, median 0.849, 0.695-1.015.
Each photo's largest face, found at 1024 px wide, is encoded as the gate would.
`bench.face` puts both results into its JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.face.rule import TABLE_SIZES, FaceRule
from harness.testdata import SHARED_TESTDATA

if TYPE_CHECKING:
    from drivers.face import Encoding

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
NEAR_COPY = 0.15
SEVERAL_PEOPLE = ("two_people", "obama_and_biden", "kit_with_rose")
CROPS = ("obama_partial_face",)  # obama.jpg with part of the face cut away: a copy, not another photo
NAMES = (  # file-name prefix -> identity, for photos outside knn_examples/train
    ("johnsnow", "kit_harington"),
    ("alex", "alex_lacamoire"),
    ("lin", "lin_manuel_miranda"),
    ("obama", "obama"),
    ("biden", "biden"),
    ("32bit", "obama"),  # test_images/32bit.png is obama2.jpg as a 32-bit PNG
)


def identity(path: Path, root: Path) -> str | None:
    """The person a shared photo shows, or None for a photo of several people or of nobody known."""
    parts = path.relative_to(root).parts
    if len(parts) >= 3 and parts[:2] == ("knn_examples", "train"):
        return parts[2]
    stem = path.stem.lower()
    if any(stem.startswith(name) for name in SEVERAL_PEOPLE):
        return None
    return next((who for prefix, who in NAMES if re.match(re.escape(prefix), stem)), None)


def _encodings(root: Path) -> tuple[dict[str, tuple[str, Encoding]], list[str]]:
    import numpy as np

    from drivers.face import NO_GATES, DlibFaceEncoder
    from drivers.face_image import decode_photo

    encoder = DlibFaceEncoder(detect_width=1024, gates=NO_GATES)
    taken: dict[str, tuple[str, Encoding]] = {}
    hashes: set[str] = set()
    skipped: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        name, who = str(path.relative_to(root)), identity(path, root)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        why = "several people or unknown" if who is None else "identical copy" if digest in hashes else None
        if path.stem.startswith(CROPS):
            why = "cropped copy of obama.jpg"
        if why is not None or who is None:
            skipped.append(f"{name}: {why}")
            continue
        hashes.add(digest)
        faces = encoder.analyze(decode_photo(data), bgr=False)
        encoding = faces[0].encoding if faces else None
        if encoding is None:
            skipped.append(f"{name}: no face found")
            continue
        copies = [n for n, (w, e) in taken.items() if w == who and float(np.linalg.norm(e - encoding)) < NEAR_COPY]
        if copies:
            skipped.append(f"{name}: copy of {copies[0]}")
            continue
        taken[name] = (who, encoding)
    return taken, skipped


def _summary(distances: list[float]) -> dict[str, float | int | None]:
    if not distances:
        return {"median": None, "min": None, "max": None, "count": 0}
    return {
        "median": round(statistics.median(distances), 4),
        "min": round(min(distances), 4),
        "max": round(max(distances), 4),
        "count": len(distances),
    }


def photo_distributions(root: Path | None = None) -> dict[str, object]:
    """Genuine (same identity) and impostor distances over the shared photos: median, min, max, count."""
    import numpy as np

    taken, skipped = _encodings(root or SHARED_TESTDATA / "faces")
    genuine: list[float] = []
    impostor: list[float] = []
    for (who_a, enc_a), (who_b, enc_b) in itertools.combinations(taken.values(), 2):
        d = float(np.linalg.norm(enc_a.astype(np.float64) - enc_b.astype(np.float64)))
        (genuine if who_a == who_b else impostor).append(d)
    return {
        "photos": len(taken),
        "identities": len({who for who, _ in taken.values()}),
        "genuine": _summary(genuine),
        "impostor": _summary(impostor),
        "skipped": skipped,
    }


def threshold_table(rule: FaceRule | None = None) -> dict[str, object]:
    """The threshold the gate's rule picks for 1, 1k, 10k, 100k and 1M templates, and what each costs."""
    rule = rule or FaceRule()
    return {
        "target": rule.target,
        "impostor_model": {"mean": rule.impostor_mean, "sd": rule.impostor_sd},
        "floor": rule.floor,
        "max_gallery_at_target": rule.max_gallery(),
        "by_gallery_size": {
            str(n): {
                "threshold": round(rule.threshold(n), 4),
                "model_threshold": round(rule.raw_threshold(n), 4),
                "false_accept_chance": float(f"{rule.false_accept_chance(n):.3g}"),
            }
            for n in TABLE_SIZES
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--testdata", type=Path, default=SHARED_TESTDATA / "faces", help="the face photos")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"distributions": photo_distributions(args.testdata), "thresholds": threshold_table()}
    if args.json:
        print(json.dumps(result))
        return 0
    dist: dict[str, Any] = result["distributions"]
    print(f"{dist['photos']} photos of {dist['identities']} people (skipped: {len(dist['skipped'])})")
    for kind in ("genuine", "impostor"):
        s = dist[kind]
        print(f"  {kind:9s} n={s['count']:3d}  median {s['median']}  min {s['min']}  max {s['max']}")
    table = threshold_table()
    print(f"threshold by gallery size (target {table['target']}, floor {table['floor']}):")
    rows: dict[str, Any] = table["by_gallery_size"]  # type: ignore[assignment]
    for n, row in rows.items():
        print(
            f"  N={int(n):>9,}  threshold {row['threshold']:.3f}  (model {row['model_threshold']:.3f})"
            f"  chance of any false accept {row['false_accept_chance']:.2g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
