"""Default settings are public secrets: nothing but an explicit development runs on them (issue 8)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cloud.settings import DEV_FACE_KEY_B64, DEV_JWT_SECRET, DEV_KEYSET_ROOT_KEY_B64, DEV_SIGNING_KEY_B64, Settings
from starfish.cli import app

pytestmark = pytest.mark.security


@pytest.fixture
def bare_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only a database URL, as the attacker found the service: no STARFISH_ENVIRONMENT, no secrets."""
    for name in list(os.environ):
        if name.startswith("STARFISH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STARFISH_DATABASE_URL", f"sqlite:///{tmp_path}/cloud.db")


def test_with_only_a_database_url_the_cloud_is_production_and_names_every_secret_to_set(
    bare_environment: None,
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    for variable in (
        "STARFISH_JWT_SECRET",
        "STARFISH_SIGNING_KEY_FILE",
        "STARFISH_KEYSET_ROOT_KEY_FILE",
        "STARFISH_FACE_KEY_FILE",
    ):
        assert variable in message
    assert "STARFISH_ENVIRONMENT=development" in message


@pytest.mark.parametrize("command", [["cloud", "serve"], ["cloud", "migrate"], ["cloud", "key-root"]])
def test_the_cloud_commands_refuse_to_start_on_default_secrets(bare_environment: None, command: list[str]) -> None:
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert "refusing to start in production" in result.output and "STARFISH_JWT_SECRET" in result.output


def test_development_is_chosen_explicitly_and_its_published_secrets_work_only_there(
    bare_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARFISH_ENVIRONMENT", "development")
    development = Settings()
    forged = jwt.encode({"sub": "1", "role": "admin"}, DEV_JWT_SECRET, algorithm="HS256")
    assert jwt.decode(forged, development.jwt_secret.get_secret_value(), algorithms=["HS256"])["role"] == "admin"
    monkeypatch.setenv("STARFISH_ENVIRONMENT", "test")
    with pytest.raises(ValidationError, match="STARFISH_JWT_SECRET"):
        Settings()


_KEY_A = base64.b64encode(bytes(range(32))).decode()
_KEY_B = base64.b64encode(bytes(range(1, 33))).decode()
_FACE_KEY = base64.b64encode(bytes(range(2, 34))).decode()


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        pytest.param({"signing_key_b64": DEV_KEYSET_ROOT_KEY_B64}, "STARFISH_SIGNING_KEY", id="dev-root-signs-tickets"),
        pytest.param(
            {"keyset_root_key_b64": DEV_SIGNING_KEY_B64}, "STARFISH_KEYSET_ROOT_KEY", id="dev-ticket-key-as-root"
        ),
        pytest.param(
            {"keyset_root_key_b64": _KEY_A}, "another key than the ticket signing key", id="root-is-ticket-key"
        ),
        pytest.param({"mqtt_host": "10.1.2.3"}, "STARFISH_MQTT_TLS_CA_FILE", id="cloud-broker-login-in-clear"),
        pytest.param({"face_key_b64": ""}, "STARFISH_FACE_KEY_FILE", id="no-face-key"),
        pytest.param({"face_key_b64": DEV_FACE_KEY_B64}, "STARFISH_FACE_KEY_FILE", id="dev-face-key"),
        pytest.param({"face_key_b64": _KEY_A[:20]}, "face key is base64 of 32 bytes", id="short-face-key"),
        pytest.param({"face_key_file": "/nonexistent/face.key"}, "cannot be read", id="missing-face-key-file"),
    ],
)
def test_production_refuses_published_keys_one_key_for_two_jobs_and_a_clear_broker_link(
    overrides: dict[str, Any], complaint: str
) -> None:
    fields: dict[str, Any] = {
        "environment": "production",
        "jwt_secret": "j" * 40,
        "signing_key_b64": _KEY_A,
        "keyset_root_key_b64": _KEY_B,
        "mqtt_username": "cloud",
        "mqtt_password": "p" * 20,
        "face_key_b64": _FACE_KEY,
    }
    with pytest.raises(ValidationError, match=complaint):
        Settings(**{**fields, **overrides})
    assert Settings(**{**fields, "mqtt_host": "127.0.0.1"}).environment == "production"


def test_the_face_key_comes_from_its_file_and_the_cli_prints_each_sites_gate_key(
    bare_environment: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cloud.migrate import upgrade
    from models.face import face_key_text, load_face_key, site_face_key

    key_file = tmp_path / "face.key"
    key_file.write_text(_FACE_KEY + "\n")
    monkeypatch.setenv("STARFISH_ENVIRONMENT", "production")
    monkeypatch.setenv("STARFISH_JWT_SECRET", "j" * 40)
    monkeypatch.setenv("STARFISH_SIGNING_KEY_B64", _KEY_A)
    monkeypatch.setenv("STARFISH_KEYSET_ROOT_KEY_B64", _KEY_B)
    with pytest.raises(ValidationError, match="STARFISH_FACE_KEY_FILE"):
        Settings()
    monkeypatch.setenv("STARFISH_FACE_KEY_FILE", str(key_file))
    settings = Settings()
    assert settings.face_key == base64.b64decode(_FACE_KEY)

    upgrade(settings.database_url)
    assert CliRunner().invoke(app, ["cloud", "face-key", "--site", "nanshan"]).exit_code == 2  # no such site
    from cloud.db import make_engine, make_sessionmaker
    from cloud.sites.models import Site

    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        session.add(Site(code="nanshan", name="南山"))
        session.commit()
    engine.dispose()
    printed = CliRunner().invoke(app, ["cloud", "face-key", "--site", "nanshan"])
    assert printed.exit_code == 0, printed.output
    assert load_face_key(printed.output) == site_face_key(settings.face_key, "nanshan")
    assert printed.output.strip() == face_key_text(site_face_key(base64.b64decode(_FACE_KEY), "nanshan"))


def test_development_seals_faces_with_the_published_key_and_test_without_a_key_has_none(
    bare_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARFISH_ENVIRONMENT", "development")
    assert Settings().face_key == base64.b64decode(DEV_FACE_KEY_B64)
    test = Settings(environment="test", jwt_secret="j" * 40, signing_key_b64=_KEY_A, keyset_root_key_b64=_KEY_B)
    assert test.face_key is None  # face admission is off there: its endpoints answer 503 face_key_missing
