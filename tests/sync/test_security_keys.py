"""Who may set a gate's trusted ticket keys: only key sets signed by the root the gate pins (issue 8)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edge.gate import GateService
from edge.store import GateStore
from harness.keys import KEY_ROOT, KEYSET_ROOT
from harness.mosquitto import AnonymousBroker
from harness.processes import eventually
from harness.tickets import NOW, make_ticket, sign
from models import GateConfig
from models.credential import public_key_b64
from models.keyset import sign_key_set
from models.sync import KeySet
from models.sync_config import SyncConfig
from tests.sync.gate_sync_kit import (
    SITE,
    SnapshotServer,
    SnapshotState,
    gate_sync,
    peer,
    running,
)

pytestmark = pytest.mark.security


def _service(store: GateStore) -> GateService:
    return GateService(store=store, config=GateConfig(gate_id="g1", site_id=SITE, passback_seconds=0))


def test_a_stand_in_snapshot_server_cannot_make_the_gate_trust_its_key(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer, caplog: pytest.LogCaptureFixture
) -> None:
    forger, forger_root = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    forged_ticket = sign(forger, make_ticket(ticket_id="6666"))
    snapshots.state = SnapshotState(
        seq=3,
        tickets=[make_ticket(ticket_id="6666")],
        keys={1: public_key_b64(forger.public_key())},
        key_root=forger_root,
    )
    store = GateStore(tmp_path / "gate.db")
    service = _service(store)

    async def scenario() -> None:
        async with running(gate_sync(store, broker, snapshots, service=service), settled=False) as sync:
            await eventually(lambda: len(snapshots.served) >= 2, "the gate asked again after refusing")
            assert sync.feed_seq == 0 and store.keys() == {}
            assert service.evaluate(forged_ticket, NOW).decision.code == "unknown_key"
            assert store.ticket("6666") is None, "nothing of a refused snapshot is taken"

            genuine = Ed25519PrivateKey.generate()  # the same server, now signing with the pinned root
            snapshots.state = SnapshotState(seq=4, keys={1: public_key_b64(genuine.public_key())})
            await eventually(lambda: sync.feed_seq == 4, "the genuine snapshot installed")
            assert service.evaluate(sign(genuine, make_ticket()), NOW).decision.code == "ok"

    with caplog.at_level(logging.WARNING, "starfish.sync"):
        asyncio.run(scenario())
    assert "not signed by this gate's key-set root" in caplog.text


def test_a_snapshot_without_a_key_set_is_refused_whole(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    free_ski = make_ticket(ticket_id="6666", code="FREE-SKI-6666")
    snapshots.state = SnapshotState(seq=999_999, tickets=[free_ski], keys={})
    store = GateStore(tmp_path / "gate.db")
    service = _service(store)

    async def scenario() -> None:
        async with running(gate_sync(store, broker, snapshots, service=service), settled=False) as sync:
            await eventually(lambda: len(snapshots.served) >= 2, "the gate asked again after refusing")
            assert sync.feed_seq == 0
            assert store.ticket("6666") is None
            assert service.evaluate("FREE-SKI-6666", NOW).decision.code == "unknown_ticket"

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("", id="unsigned"),
        pytest.param("forger", id="signed-by-another-root"),
        pytest.param("other-keys", id="root-signature-of-another-set"),
    ],
)
def test_a_key_set_on_the_feed_without_the_roots_signature_is_not_installed(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer, signature: str
) -> None:
    genuine = {1: public_key_b64(Ed25519PrivateKey.generate().public_key())}
    snapshots.state = SnapshotState(seq=0, keys=genuine)
    forged = {1: public_key_b64(Ed25519PrivateKey.generate().public_key())}
    sig = {
        "": "",
        "forger": sign_key_set(Ed25519PrivateKey.generate(), forged),
        "other-keys": sign_key_set(KEYSET_ROOT, genuine),
    }[signature]
    store = GateStore(tmp_path / "gate.db")

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots)) as sync:
                cloud.feed(1, KeySet(keys=forged, signature=sig))
                await eventually(lambda: sync.feed_seq == 1, "the feed moves on past the refused set")

    asyncio.run(scenario())
    assert {k: public_key_b64(v) for k, v in store.keys().items()} == genuine


def _config(**overrides: Any) -> SyncConfig:
    fields: dict[str, Any] = {
        "site": SITE,
        "gate": "g1",
        "broker_host": "127.0.0.1",
        "snapshot_url": "http://127.0.0.1:8000",
        "key_root": KEY_ROOT,
    }
    return SyncConfig(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        pytest.param({"snapshot_url": "http://10.0.0.5:8000"}, "must use https", id="plain-http-to-the-lan"),
        pytest.param({"snapshot_url": "http://cloud.example.com"}, "must use https", id="plain-http-to-a-name"),
        pytest.param({"snapshot_url": "https://cloud.example.com"}, "needs tls_ca", id="https-without-pinned-ca"),
        pytest.param({"broker_host": "192.0.2.10"}, "needs tls_ca", id="broker-on-the-lan-in-clear"),
        pytest.param({"snapshot_url": "ftp://127.0.0.1"}, "an http\\(s\\) URL", id="not-http"),
        pytest.param({"key_root": "AAAA"}, "32 bytes", id="no-usable-root"),
    ],
)
def test_a_gate_refuses_a_config_that_would_send_its_secret_in_clear_or_trust_keys_unchecked(
    overrides: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        _config(**overrides)


def test_a_gate_needs_a_key_root_to_sync() -> None:
    with pytest.raises(ValidationError, match="key_root"):
        SyncConfig(site=SITE, gate="g1", broker_host="127.0.0.1", snapshot_url="http://127.0.0.1:8000")  # type: ignore[call-arg]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"])
def test_plain_http_to_this_machine_is_allowed(url: str) -> None:
    assert _config(snapshot_url=url).snapshot_url == url


def test_the_roots_signature_covers_the_set_not_its_spelling() -> None:
    keys = {2: public_key_b64(Ed25519PrivateKey.generate().public_key()), 1: KEY_ROOT}
    assert sign_key_set(KEYSET_ROOT, keys) == sign_key_set(KEYSET_ROOT, dict(sorted(keys.items())))


@pytest.mark.parametrize(
    ("gate", "complaint"),
    [
        pytest.param({"gate_id": "g1", "site_id": "Nanshan"}, "must equal", id="site-spelt-otherwise"),
        pytest.param({"gate_id": "north-1", "site_id": SITE}, "must equal", id="gate-named-otherwise"),
    ],
)
def test_a_gate_whose_own_ids_differ_from_its_sync_login_is_refused_at_start(
    gate: dict[str, str], complaint: str
) -> None:
    """Its tokens would all be another site's, its events another gate's: refused, not run half-blind."""
    from edge.config import ConfigError, parse_config

    config = {
        "gate": gate,
        "barrier": {"type": "modbus_tcp", "host": "127.0.0.1"},
        "sync": _config().model_dump(mode="json"),
    }
    with pytest.raises(ConfigError, match=complaint):
        parse_config(config)
    parse_config({**config, "gate": {"gate_id": "g1", "site_id": SITE}})
