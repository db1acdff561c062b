"""Shared fixtures: a signing key, an explicit clock, ticket and gate factories."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.settings import Settings
from edge.store import GateStore
from models import CredentialKind, Direction, GateConfig, Holder, Outcome, PassageEvent, ProductKind, Ticket
from models.credential import issue, public_key_b64

# The key-set root the tests' clouds sign key sets with, and the public half their gates pin.
KEYSET_ROOT_B64 = "dGVzdC1rZXlzZXQtcm9vdC1rZXktb2YtMzItYnl0ZXM="
KEYSET_ROOT = Ed25519PrivateKey.from_private_bytes(base64.b64decode(KEYSET_ROOT_B64))
KEY_ROOT = public_key_b64(KEYSET_ROOT.public_key())


def cloud_settings(database_url: str, **overrides: Any) -> Settings:
    """The cloud's settings as the tests run it: environment `test`, fresh secrets, the tests' key-set root."""
    fields: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "jwt_secret": base64.b64encode(os.urandom(36)).decode(),
        "signing_key_b64": base64.b64encode(os.urandom(32)).decode(),
        "keyset_root_key_b64": KEYSET_ROOT_B64,
    }
    return Settings(**{**fields, **overrides})


SHARED_TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"

# 2026-12-20 09:00 in Beijing: a Sunday morning in the season.
NOW = datetime(2026, 12, 20, 1, 0, tzinfo=UTC)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run long soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def gate() -> GateConfig:
    return GateConfig(gate_id="g1", site_id="nanshan", rescan_seconds=3, passback_seconds=300)


def make_ticket(kind: ProductKind = ProductKind.DAY, **overrides: Any) -> Ticket:
    fields: dict[str, Any] = {
        "ticket_id": "1001",
        "kind": kind,
        "valid_from": NOW - timedelta(hours=2),
        "valid_until": NOW + timedelta(hours=14),
    }
    if kind is ProductKind.TIME_WINDOW:
        fields["window_minutes"] = 240
    if kind is ProductKind.PUNCH:
        fields["entries"] = 10
        fields["valid_until"] = NOW + timedelta(days=120)
    if kind is ProductKind.SEASON:
        fields["holder"] = Holder(holder_id="h1", name="张三")
        fields["valid_until"] = NOW + timedelta(days=100)
    fields.update(overrides)
    return Ticket(**fields)


def sign(key: Ed25519PrivateKey, ticket: Ticket, key_id: int = 1, site: str = "nanshan") -> str:
    return issue(
        key,
        key_id=key_id,
        kind=ticket.kind,
        ticket_no=int(ticket.ticket_id),
        valid_from=ticket.valid_from,
        valid_until=ticket.valid_until,
        entries=ticket.entries,
        window_minutes=ticket.window_minutes,
        site=site,
    )


def counted_passage(
    ticket_id: str, at: datetime, *, gate: str, site: str, credential: CredentialKind = "signed"
) -> PassageEvent:
    """A gate's event for an admission somebody passed, using up an entry."""
    return PassageEvent(
        gate_id=gate,
        site_id=site,
        at=at,
        direction=Direction.IN,
        outcome=Outcome.ADMIT,
        code="ok",
        ticket_id=ticket_id,
        passed=True,
        counted=True,
        credential=credential,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GateStore]:
    s = GateStore(tmp_path / "gate.db")
    yield s
    s.close()
