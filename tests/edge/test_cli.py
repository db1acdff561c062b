"""The technician's command line: decode images, check a code, issue a ticket, run the demo."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import segno
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from demo.single_gate import run_demo
from edge.store import GateStore
from models.credential import SignedCredential, load_public_key, parse, public_key_b64
from starfish.cli import app

runner = CliRunner()


def gate_yaml(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    cfg = {
        "gate": {"gate_id": "g1", "site_id": "nanshan"},
        "store": {"path": str(tmp_path / "gate.db")},
        "barrier": {"type": "modbus_tcp", "host": "127.0.0.1"},
        "trusted_keys": {1: public_key_b64(key.public_key())},
    }
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_decode_prints_path_tab_text_and_empty_text_when_nothing_decoded(tmp_path: Path) -> None:
    qr = tmp_path / "ticket.png"
    segno.make("SFHELLO1234567890", error="M", micro=False).save(str(qr), scale=8)
    blank = tmp_path / "blank.png"
    segno.make("x").save(str(blank), scale=1, dark="white")
    for decoder in ("zxing", "pyzbar", "chain"):
        out = runner.invoke(app, ["decode", "--decoder", decoder, str(qr), str(blank)])
        assert out.exit_code == 0, out.output
        assert out.output.splitlines() == [f"{qr}\tSFHELLO1234567890", f"{blank}\t"]


def test_decode_of_a_missing_file_says_so_and_fails(tmp_path: Path) -> None:
    out = runner.invoke(app, ["decode", str(tmp_path / "nope.png")])
    assert out.exit_code == 1
    assert f"{tmp_path / 'nope.png'}\t" in out.output


def test_decode_with_unknown_decoder_is_a_clear_error(tmp_path: Path) -> None:
    out = runner.invoke(app, ["decode", "--decoder", "magic", str(tmp_path / "x.png")])
    assert out.exit_code == 2
    assert "zxing" in out.output


def test_keys_and_ticket_issue_make_a_token_the_gate_check_admits(tmp_path: Path) -> None:
    pem = tmp_path / "signing.pem"
    out = runner.invoke(app, ["keys", "generate", "--private-key", str(pem)])
    assert out.exit_code == 0, out.output
    public = out.output.strip()
    assert pem.stat().st_mode & 0o777 == 0o600
    assert runner.invoke(app, ["keys", "generate", "--private-key", str(pem)]).exit_code == 2

    png = tmp_path / "t.png"
    out = runner.invoke(
        app, ["ticket", "issue", "--private-key", str(pem), "--ticket-no", "42", "--site", "nanshan", "--png", str(png)]
    )
    assert out.exit_code == 0, out.output
    token = out.output.strip()
    assert isinstance(parse(token, {1: load_public_key(public)}), SignedCredential)
    assert runner.invoke(app, ["decode", str(png)]).output.strip() == f"{png}\t{token}"


def test_gate_check_prints_the_decision_as_json_and_touches_nothing(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    config = gate_yaml(tmp_path, key)
    GateStore(tmp_path / "gate.db").close()
    pem = tmp_path / "k.pem"
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    token = runner.invoke(
        app, ["ticket", "issue", "--private-key", str(pem), "--ticket-no", "7", "--site", "nanshan"]
    ).output.strip()

    out = runner.invoke(app, ["gate", "check", "--config", str(config), token])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.splitlines()[-1])
    assert result["admit"] is True and result["code"] == "ok" and result["reason"]

    out = runner.invoke(app, ["gate", "check", "--config", str(config), "garbage!!"])
    assert json.loads(out.output.splitlines()[-1])["code"] == "unreadable"
    store = GateStore(tmp_path / "gate.db")
    assert store.entries() == [] and store.outbox_depth() == 0


def test_gate_check_with_a_broken_config_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "gate.yaml"
    bad.write_text("gate: {gate_id: g1, site_id: s, passback_seconds: -1}\nbarrier: {type: modbus_tcp, host: x}\n")
    out = runner.invoke(app, ["gate", "check", "--config", str(bad), "X"])
    assert out.exit_code == 2
    assert "gate.passback_seconds" in out.output


@pytest.mark.timeout(120)
def test_demo_decides_every_scripted_skier_as_expected() -> None:
    assert asyncio.run(run_demo(90)) == 0


def test_decode_keeps_one_line_per_file_when_the_payload_has_newlines_or_tabs(tmp_path: Path) -> None:
    qr = tmp_path / "nl.png"
    segno.make("LINE1\nLINE2\tX", error="M", micro=False).save(str(qr), scale=8)
    out = runner.invoke(app, ["decode", "--decoder", "zxing", str(qr)])
    assert out.output.splitlines() == [f"{qr}\tLINE1\\nLINE2\\tX"]


def test_gate_run_with_a_corrupt_store_names_the_problem(tmp_path: Path) -> None:
    config = gate_yaml(tmp_path, Ed25519PrivateKey.generate())
    (tmp_path / "gate.db").write_bytes(b"garbage" * 1000)
    out = runner.invoke(app, ["gate", "run", "--config", str(config)])
    assert out.exit_code == 2
    assert "cannot open gate store" in out.output


def test_a_mistyped_command_is_refused_with_a_suggestion() -> None:
    result = runner.invoke(app, ["gat"])
    assert result.exit_code == 2
    assert "No such command 'gat'" in result.output and "Did you mean 'gate'?" in result.output
