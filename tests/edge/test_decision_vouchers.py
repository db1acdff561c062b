"""A voucher code the gate does not know yet: ours and the feed fresh -> not synced yet; anything else as before."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from edge.config import VoucherConfig, parse_config
from edge.decision import History, decide
from edge.gate import GateService
from edge.reasons import reason
from edge.store import GateStore
from harness.tickets import NOW, make_ticket
from models import Direction, GateConfig, TicketStatus
from models.credential import PlainCode
from models.voucher import make_code, site_voucher_key, voucher_key_text

KEY = site_voucher_key(bytes(range(32)), "nanshan")
OURS = make_code("nanshan", "douyin", 4242, KEY)
GATE = GateConfig(gate_id="g1", site_id="nanshan")


@pytest.mark.parametrize(
    ("code", "key", "fresh", "gate", "expected"),
    [
        pytest.param(OURS, KEY, True, GATE, "not_synced_yet", id="ours-feed-fresh"),
        pytest.param(OURS, KEY, False, GATE, "stale_feed", id="ours-feed-stale"),
        pytest.param(OURS, None, True, GATE, "unknown_ticket", id="gate-without-the-key"),
        pytest.param(OURS[:-1] + ("0" if OURS[-1] != "0" else "1"), KEY, True, GATE, "unknown_ticket", id="typo"),
        pytest.param("VOUCHER-1001", KEY, True, GATE, "unknown_ticket", id="not-our-shape"),
        pytest.param(
            make_code("nanshan", "douyin", 4242, site_voucher_key(bytes(range(32)), "wanlong")),
            KEY,
            True,
            GATE,
            "unknown_ticket",
            id="another-sites-code",
        ),
        pytest.param(
            OURS, KEY, True, GATE.model_copy(update={"direction": Direction.OUT}), "not_synced_yet", id="exit-gate"
        ),
        pytest.param(OURS, KEY, True, GATE.model_copy(update={"emergency_open": True}), "emergency", id="emergency"),
    ],
)
def test_an_unknown_plain_code(code: str, key: bytes | None, fresh: bool, gate: GateConfig, expected: str) -> None:
    d = decide(PlainCode(code), None, History(), gate, NOW, voucher_key=key, feed_fresh=fresh)
    assert d.code == expected
    assert d.admit is (expected == "emergency") and not d.counts


def test_once_its_ticket_is_cached_our_code_is_decided_like_any_ticket() -> None:
    cached = make_ticket(code=OURS)
    assert decide(PlainCode(OURS), cached, History(), GATE, NOW, voucher_key=KEY, feed_fresh=True).code == "ok"
    revoked = cached.model_copy(update={"status": TicketStatus.REVOKED})
    assert decide(PlainCode(OURS), revoked, History(), GATE, NOW, voucher_key=KEY, feed_fresh=True).code == "revoked"


def test_the_sentences_say_to_try_again_or_see_staff() -> None:
    assert reason("not_synced_yet", "en") == "Not synced yet: try again in a moment or see staff"
    assert reason("not_synced_yet", "zh") == "尚未同步：请稍后再试或联系工作人员"


def test_the_gate_service_passes_its_key_and_the_feeds_freshness(tmp_path: Path) -> None:
    store = GateStore(tmp_path / "gate.db")
    service = GateService(store=store, config=GATE)
    assert service.evaluate(OURS, NOW).decision.code == "unknown_ticket", "no key configured"
    service.voucher_key = KEY
    assert service.evaluate(OURS, NOW).decision.code == "stale_feed", "no sync: the cache never catches up"
    synced_at = NOW
    service.feed_stale = lambda now: now - synced_at > timedelta(seconds=60)
    assert service.evaluate(OURS, NOW).decision.code == "not_synced_yet"
    assert service.evaluate(OURS, NOW + timedelta(minutes=5)).decision.code == "stale_feed"
    store.upsert_tickets([make_ticket(ticket_id="4242", code=OURS)])
    assert service.evaluate(OURS, NOW).decision.code == "ok"
    store.close()


def test_the_config_names_the_key_by_file_or_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "voucher.key"
    key_file.write_text(voucher_key_text(KEY) + "\n")
    assert VoucherConfig(key_file=key_file).load_key() == KEY
    monkeypatch.setenv("SITE_VOUCHER_KEY", voucher_key_text(KEY))
    assert VoucherConfig(key_env="SITE_VOUCHER_KEY").load_key() == KEY
    with pytest.raises(ValueError, match=r"vouchers\.key_env NOPE"):
        VoucherConfig(key_env="NOPE").load_key()
    with pytest.raises(ValueError, match=r"cannot read vouchers\.key_file"):
        VoucherConfig(key_file=tmp_path / "missing").load_key()
    with pytest.raises(ValueError, match="exactly one"):
        VoucherConfig()
    config = parse_config(
        {
            "gate": {"gate_id": "g1", "site_id": "nanshan"},
            "barrier": {"type": "modbus_tcp", "host": "127.0.0.1"},
            "vouchers": {"key_env": "X"},
        }
    )
    assert config.vouchers == VoucherConfig(key_env="X")
