"""`starfish sync broker-config` writes the broker's files from the cloud's registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cloud.app import create_app
from cloud.deps import Role
from cloud.migrate import upgrade
from harness.api import Api
from harness.keys import cloud_settings
from starfish.cli import app as cli
from sync.mosquitto_passwd import verify_password


def test_broker_config_from_the_registry_lets_each_gate_in_with_its_own_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    upgrade(url)
    app = create_app(cloud_settings(url))
    with TestClient(app) as c:
        api = Api(c, app)
        site = api.as_(Role.ADMIN).post("/api/v1/sites", json={"code": "nanshan", "name": "南山"}).json()
        gates = [
            api.as_(Role.ADMIN).post(f"/api/v1/sites/{site['id']}/gates", json={"code": code, "name": code}).json()
            for code in ("north-1", "north-2")
        ]
    monkeypatch.setenv("STARFISH_DATABASE_URL", url)
    monkeypatch.setenv("STARFISH_MQTT_PASSWORD", "cloud-consumer-pw")
    out = tmp_path / "broker"
    result = CliRunner().invoke(cli, ["sync", "broker-config", "--site", "nanshan", "--out", str(out)])
    assert result.exit_code == 0, result.output

    lines = dict(line.split(":", 1) for line in (out / "passwd").read_text().splitlines())
    for gate in gates:
        assert verify_password(gate["secret"], lines[gate["username"]])
    assert not verify_password(gates[0]["secret"], lines[gates[1]["username"]])
    assert verify_password("cloud-consumer-pw", lines["cloud"])
    acl = (out / "acl").read_text()
    assert f"user {gates[0]['username']}" in acl and "topic write sf/nanshan/gate/north-1/events" in acl
    assert "allow_anonymous false" in (out / "mosquitto.conf").read_text()


def test_unknown_site_and_missing_password_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    upgrade(url)
    monkeypatch.setenv("STARFISH_DATABASE_URL", url)
    monkeypatch.delenv("STARFISH_MQTT_PASSWORD", raising=False)
    result = CliRunner().invoke(cli, ["sync", "broker-config", "--site", "nowhere", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "no site 'nowhere'" in result.output
