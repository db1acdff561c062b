"""deploy/gate.example.yaml is what a technician copies: it must say what the gate really does."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml

from drivers.face import QualityGates
from drivers.qr import DECODER_NAMES, DEFAULT_DECODER
from edge.config import CameraConfig, ConfigError, FaceConfig, parse_config
from edge.face.rule import FaceRule

EXAMPLE = Path(__file__).parents[2] / "deploy" / "gate.example.yaml"


def uncommented(text: str, section: str) -> str:
    """The example with its commented-out `section:` block switched on."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"# {section}:", line))
    end = start + 1
    while end < len(lines) and lines[end].startswith("#   "):
        end += 1
    block = [line[2:] for line in lines[start:end]]
    return "\n".join([*lines[:start], *block, *lines[end:]]) + "\n"


def test_the_example_cameras_decoder_is_the_default_decoder() -> None:
    cfg = parse_config(yaml.safe_load(uncommented(EXAMPLE.read_text(encoding="utf-8"), "camera")))
    assert cfg.camera is not None
    assert cfg.camera.decoder == DEFAULT_DECODER


def test_the_configs_decoders_are_the_drivers_and_its_default_is_theirs() -> None:
    assert CameraConfig.model_fields["decoder"].default == DEFAULT_DECODER
    assert typing.get_args(CameraConfig.model_fields["decoder"].annotation) == DECODER_NAMES


def test_the_example_face_block_is_the_gates_defaults() -> None:
    text = uncommented(uncommented(EXAMPLE.read_text(encoding="utf-8"), "camera"), "face")
    cfg = parse_config(yaml.safe_load(text))
    assert cfg.face is not None and cfg.face.enabled
    assert cfg.face.key_file == Path("/etc/starfish/face.key")
    assert QualityGates(**cfg.face.quality.model_dump()) == QualityGates()
    assert cfg.face == FaceConfig(key_file=Path("/etc/starfish/face.key"))
    r, rule = cfg.face.rule, FaceRule()
    assert (r.target, r.margin, r.k, r.m) == (rule.target, rule.margin, rule.k, rule.m)


@pytest.mark.parametrize(
    ("face", "wrong"),
    [
        pytest.param({"key_file": "/k", "rule": {"k": 4, "m": 3}}, "k (4) cannot exceed m (3)", id="k-over-m"),
        pytest.param({"key_file": "/k", "key_env": "K"}, "exactly one of key_file or key_env", id="two-keys"),
        pytest.param({}, "exactly one of key_file or key_env", id="no-key"),
        pytest.param(
            {"key_env": "K", "quality": {"min_brightness": 200, "max_brightness": 100}}, "below", id="dark-over-bright"
        ),
    ],
)
def test_a_nonsense_face_block_is_refused(face: dict[str, object], wrong: str) -> None:
    data = yaml.safe_load(uncommented(EXAMPLE.read_text(encoding="utf-8"), "camera"))
    with pytest.raises(ConfigError, match=re.escape(wrong)):
        parse_config({**data, "face": face})


def test_face_admission_without_a_camera_is_refused() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    with pytest.raises(ConfigError, match="needs a camera"):
        parse_config({**data, "face": {"key_env": "K"}})
