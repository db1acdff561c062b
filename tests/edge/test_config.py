"""Gate configuration: one typed tree from YAML; a wrong field is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, ModbusRtuBarrier, load_config

GOOD = """
gate:
  gate_id: north-1
  site_id: nanshan
  direction: in
  allowed_kinds: [day, punch]
store:
  path: {db}
barrier:
  type: modbus_tcp
  host: 10.0.0.7
  passage_input: 0
scanner:
  port: /dev/ttyUSB0
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gate.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_config_in_the_repo_loads() -> None:
    cfg = load_config(Path(__file__).parents[2] / "deploy" / "gate.example.yaml")
    assert cfg.gate.gate_id


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD.format(db=tmp_path / "g.db")))
    assert cfg.gate.gate_id == "north-1"
    assert cfg.barrier.pulse_ms == 300
    assert cfg.scanner is not None and cfg.scanner.baudrate == 9600
    assert cfg.camera is None


def test_rtu_barrier_is_picked_by_type(tmp_path: Path) -> None:
    text = GOOD.format(db="g.db").replace(
        "type: modbus_tcp\n  host: 10.0.0.7", "type: modbus_rtu\n  serial_port: /dev/ttyS1"
    )
    assert isinstance(load_config(write(tmp_path, text)).barrier, ModbusRtuBarrier)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        pytest.param(("direction: in", "direction: sideways"), "gate.direction", id="bad-enum"),
        pytest.param(
            ("host: 10.0.0.7", "host: 10.0.0.7\n  colour: red"), "barrier.modbus_tcp.colour", id="unknown-field"
        ),
        pytest.param(("  gate_id: north-1\n", ""), "gate.gate_id", id="missing-field"),
        pytest.param(("passage_input: 0", "passage_input: -3"), "passage_input", id="negative-address"),
        pytest.param(("type: modbus_tcp", "type: carrier_pigeon"), "barrier", id="unknown-barrier-type"),
        pytest.param(("direction: in", "direction: in\n  timezone: Asia/Shangai"), "gate.timezone", id="misspelt-zone"),
        pytest.param(
            ("port: /dev/ttyUSB0", "port: /dev/ttyUSB0\ncamera:\n  source: 0\n  decoder: zbar"),
            "camera.decoder",
            id="bad-decoder",
        ),
    ],
)
def test_wrong_field_is_named_in_the_error(tmp_path: Path, change: tuple[str, str], named: str) -> None:
    text = GOOD.format(db="g.db").replace(*change)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(write(tmp_path, text))


def test_bad_trusted_key_is_named(tmp_path: Path) -> None:
    text = GOOD.format(db="g.db") + "trusted_keys:\n  1: AAAA\n"
    with pytest.raises(ConfigError, match=r"trusted_keys.*key 1"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("gate: [unclosed", "not valid YAML", id="broken-yaml"),
        pytest.param("- a list\n", "mapping", id="not-a-mapping"),
        pytest.param("", "mapping", id="empty"),
    ],
)
def test_corrupt_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
