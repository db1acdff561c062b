"""`starfish face compare` on the shared real photos: one JSON line per pair, the gate's own verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.face.rule import FaceRule
from edge.face_cli import app
from harness.testdata import SHARED_TESTDATA

FACES = SHARED_TESTDATA / "faces"
OBAMA, OBAMA2, BIDEN = FACES / "obama.jpg", FACES / "obama2.jpg", FACES / "biden.jpg"
BIDEN2 = FACES / "knn_examples" / "train" / "biden" / "biden2.jpg"
QR_PHOTO = SHARED_TESTDATA / "qr-photos" / "qrcode-1" / "1.webp"
runner = CliRunner()


def _run(*args: str | Path) -> tuple[int, list[dict[str, object]]]:
    result = runner.invoke(app, ["compare", *map(str, args)])
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_the_same_person_in_two_photos_is_the_same() -> None:
    code, [line] = _run(OBAMA, OBAMA2)
    assert code == 0
    assert line == {"a": str(OBAMA), "b": str(OBAMA2), "distance": line["distance"], "same": True}
    assert isinstance(line["distance"], float) and 0.3 < line["distance"] < 0.42


def test_different_people_are_not_the_same() -> None:
    code, [line] = _run(OBAMA, BIDEN)
    assert code == 0 and line["same"] is False and float(str(line["distance"])) > 0.7


def test_a_larger_gallery_refuses_a_distance_one_template_accepts() -> None:
    # Biden's two photos are 0.424 apart: under one template's threshold (0.451), over the floor (0.42).
    _, [alone] = _run(BIDEN, BIDEN2)
    _, [crowded] = _run(BIDEN, BIDEN2, "--gallery-size", "1000")
    assert alone["distance"] == crowded["distance"]
    assert FaceRule().threshold(1000) < float(str(alone["distance"])) < FaceRule().threshold(1)
    assert (alone["same"], crowded["same"]) == (True, False)


def test_a_photo_without_a_face_gives_a_null_distance_and_not_the_same() -> None:
    code, [line] = _run(OBAMA, QR_PHOTO)
    assert code == 0 and line["distance"] is None and line["same"] is False and "error" not in line


def test_a_pairs_file_gives_one_line_per_pair_and_errors_in_place(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not a jpeg")
    pairs = tmp_path / "pairs.tsv"
    lines = [
        f"{OBAMA}\t{OBAMA2}",
        f"{OBAMA}\t{tmp_path / 'missing.jpg'}",
        "",
        f"{garbage}\t{BIDEN}",
        "only one path",
        f"{BIDEN}\t{OBAMA}",
    ]
    pairs.write_text("\n".join(lines) + "\n")
    code, out = _run("--pairs", pairs)
    assert code == 1  # not every photo could be read
    assert [line["same"] for line in out] == [True, False, False, False, False]
    assert out[0]["a"] == str(OBAMA) and "error" not in out[0]
    assert str(out[1]["error"]).startswith("b: ") and out[1]["distance"] is None
    assert str(out[2]["error"]).startswith("a: not an image") and out[2]["b"] == str(BIDEN)
    assert out[3]["error"] == "line 5: expected two paths separated by a tab"
    assert out[4]["a"] == str(BIDEN) and float(str(out[4]["distance"])) > 0.7 and "error" not in out[4]


def test_a_pairs_file_of_readable_photos_exits_zero(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(f"{OBAMA}\t{BIDEN}\n{OBAMA2}\t{QR_PHOTO}\n")
    code, out = _run("--pairs", pairs, "--gallery-size", "10")
    assert code == 0 and len(out) == 2 and not any("error" in line for line in out)


@pytest.mark.parametrize(
    "args",
    [[], [str(OBAMA)], [str(OBAMA), str(OBAMA2), str(BIDEN)], [str(OBAMA), str(BIDEN), "--pairs", "x.tsv"]],
    ids=["nothing", "one-image", "three-images", "both-forms"],
)
def test_a_usage_error_exits_two_and_prints_nothing(args: list[str]) -> None:
    result = runner.invoke(app, ["compare", *args])
    assert result.exit_code == 2 and result.stdout == ""


def test_a_missing_pairs_file_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", "--pairs", str(tmp_path / "none.tsv")])
    assert result.exit_code == 2 and "cannot read the pairs file" in result.output


def test_starfish_face_compare_runs_as_a_command() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "starfish.cli", "face", "compare", str(OBAMA), str(OBAMA2), "--gallery-size", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["same"] is True and run.stderr == ""
