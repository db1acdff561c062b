"""`starfish face compare`: the technician's check of two photos (or many pairs) with the gate's own rule.

Each pair prints one JSON object on its own line: `a`, `b` (the paths as given), `distance` between the
largest faces (null when either photo shows no face, or could not be read) and `same`, the gate's verdict
`FaceRule().same(distance, N)` for a gallery of N templates (false when the distance is null). A photo
that cannot be read (missing, not an image) adds an `error` key naming the photo and why; so does a line
of the pairs file that is not two tab-separated paths. The exit status is 0 when every photo was read
(whatever the verdicts and whether faces were found), 1 when any photo or line could not be, 2 for a
usage error (no pair given, both forms at once, an unreadable pairs file). The models load once; a photo
named in several pairs is analysed once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from drivers.face import DlibFaceEncoder, Encoding

app = typer.Typer(help="Face tools for the technician.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Face tools for the technician."""


class _Photos:
    """Each photo's largest-face encoding (None: no face), or why it could not be read; each analysed once."""

    def __init__(self, encoder: DlibFaceEncoder) -> None:
        self._encoder = encoder
        self._seen: dict[str, tuple[Encoding | None, str | None]] = {}

    def encoding(self, path: str) -> tuple[Encoding | None, str | None]:
        if path not in self._seen:
            self._seen[path] = self._analyze(path)
        return self._seen[path]

    def _analyze(self, path: str) -> tuple[Encoding | None, str | None]:
        from drivers.face_image import decode_photo

        try:
            rgb = decode_photo(Path(path).read_bytes())
        except OSError as exc:
            return None, exc.strerror or str(exc)
        except ValueError as exc:
            return None, f"not an image we can read ({exc})"
        faces = self._encoder.analyze(rgb, bgr=False)
        return (faces[0].encoding if faces else None), None


def _compare(photos: _Photos, a: str, b: str, gallery_size: int) -> dict[str, object]:
    import numpy as np

    from edge.face.rule import FaceRule

    (enc_a, err_a), (enc_b, err_b) = photos.encoding(a), photos.encoding(b)
    distance = None
    if enc_a is not None and enc_b is not None:
        distance = round(float(np.linalg.norm(enc_a.astype(np.float64) - enc_b.astype(np.float64))), 4)
    line: dict[str, object] = {"a": a, "b": b, "distance": distance, "same": FaceRule().same(distance, gallery_size)}
    errors = [f"{name}: {err}" for name, err in (("a", err_a), ("b", err_b)) if err]
    if errors:
        line["error"] = "; ".join(errors)
    return line


def _pairs(path: Path) -> list[tuple[str, str] | str]:
    """Each line of FILE as (a, b), or the error for a line that is not two tab-separated paths."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: cannot read the pairs file {path}: {exc}", err=True)
        raise typer.Exit(2) from exc
    out: list[tuple[str, str] | str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        ok = len(fields) == 2 and all(f.strip() for f in fields)
        out.append(
            (fields[0].strip(), fields[1].strip()) if ok else f"line {number}: expected two paths separated by a tab"
        )
    return out


@app.command("compare")
def compare(
    images: Annotated[list[str] | None, typer.Argument(help="IMAGE_A IMAGE_B", show_default=False)] = None,
    pairs: Annotated[
        Path | None, typer.Option("--pairs", help="File of pairs: two image paths per line, tab-separated")
    ] = None,
    gallery_size: Annotated[
        int, typer.Option("--gallery-size", min=1, help="Judge as a gate holding N templates would")
    ] = 1,
    detect_width: Annotated[int, typer.Option(min=160, help="Photos are scaled to this width to find faces")] = 1024,
    upsample: Annotated[int, typer.Option(min=0, max=2, help="HOG upsampling passes (finds smaller faces)")] = 0,
) -> None:
    """Print one JSON line per pair: a, b, distance between the largest faces (null: no face) and same."""
    if (pairs is None) == (not images) or (images and len(images) != 2):
        typer.echo("error: give IMAGE_A IMAGE_B, or --pairs FILE", err=True)
        raise typer.Exit(2)
    todo = _pairs(pairs) if pairs is not None else [(images[0], images[1])] if images else []

    from drivers.errors import DriverError
    from drivers.face import NO_GATES, DlibFaceEncoder

    try:
        photos = _Photos(DlibFaceEncoder(detect_width=detect_width, upsample=upsample, gates=NO_GATES))
    except DriverError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    failed = False
    for pair in todo:
        if isinstance(pair, str):
            line: dict[str, object] = {"a": None, "b": None, "distance": None, "same": False, "error": pair}
        else:
            line = _compare(photos, pair[0], pair[1], gallery_size)
        failed = failed or "error" in line
        typer.echo(json.dumps(line, ensure_ascii=False))
    raise typer.Exit(1 if failed else 0)


if __name__ == "__main__":
    app()
