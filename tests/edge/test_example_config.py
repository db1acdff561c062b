"""deploy/gate.example.yaml is what a technician copies: it must say what the gate really does."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import yaml

from drivers.qr import DECODER_NAMES, DEFAULT_DECODER
from edge.config import CameraConfig, parse_config

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
