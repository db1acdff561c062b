"""Shared fixtures: a signing key, a gate's config and store; the --soak option. Helpers live in harness/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.store import GateStore
from models import GateConfig


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run long soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashing() -> Iterator[None]:
    """Staff passwords and gate secrets hashed by argon2id at its lowest cost in tests run in this process.

    Production keeps argon2-cffi's defaults (64 MiB, 3 passes: ~0.1 s a hash, ~0.1 s a login); the suite
    signs in a few thousand times, which cost minutes at that price. Verification still runs real argon2id,
    and a hash carries its own parameters, so a production-cost hash (the dummy one for unknown users, a
    gate's) is verified at its own cost. Clouds started as subprocesses keep the production cost.
    """
    from argon2 import PasswordHasher

    import cloud.sites.service
    import cloud.staff.service

    quick = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    saved = cloud.staff.service._hasher, cloud.sites.service._hasher
    cloud.staff.service._hasher = cloud.sites.service._hasher = quick
    yield
    cloud.staff.service._hasher, cloud.sites.service._hasher = saved


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def gate() -> GateConfig:
    return GateConfig(gate_id="g1", site_id="nanshan", rescan_seconds=3, passback_seconds=300)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GateStore]:
    s = GateStore(tmp_path / "gate.db")
    yield s
    s.close()
