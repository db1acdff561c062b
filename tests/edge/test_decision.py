"""The admission rules, one scenario each, through the pure `decide` function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.decision import Decision, History, Passage, PriorScan, decide
from edge.reasons import CATALOG, reason
from harness.tickets import NOW, make_ticket, sign
from models import Direction, GateConfig, ProductKind, TicketStatus
from models.credential import Invalid, PlainCode, parse

IN = Direction.IN


def entered(minutes_ago: float, gate_id: str = "g1", direction: Direction = IN) -> Passage:
    return Passage(at=NOW - timedelta(minutes=minutes_ago), gate_id=gate_id, direction=direction, counted=True)


def run(
    ticket_kind: ProductKind = ProductKind.DAY,
    history: History | None = None,
    gate: GateConfig | None = None,
    now: datetime = NOW,
    **ticket_fields: object,
) -> Decision:
    ticket = make_ticket(ticket_kind, **ticket_fields)
    gate = gate or GateConfig(gate_id="g1", site_id="nanshan")
    return decide(PlainCode("CODE1234"), ticket, history or History(), gate, now)


def test_valid_day_ticket_is_admitted_and_will_count() -> None:
    d = run()
    assert (d.admit, d.code, d.counts, d.open_barrier) == (True, "ok", True, True)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"status": TicketStatus.REVOKED}, "revoked", id="refunded"),
        pytest.param({"status": TicketStatus.BLOCKED}, "blocked", id="blocked"),
        pytest.param(
            {"valid_from": NOW + timedelta(hours=1), "valid_until": NOW + timedelta(hours=9)},
            "not_yet_valid",
            id="tomorrows-ticket",
        ),
        pytest.param(
            {"valid_from": NOW - timedelta(days=1), "valid_until": NOW - timedelta(seconds=1)},
            "expired",
            id="yesterdays-ticket",
        ),
        pytest.param({"valid_until": NOW}, "expired", id="expires-exactly-now"),
    ],
)
def test_ticket_state_and_validity_window_deny(fields: dict[str, Any], code: str) -> None:
    d = run(**fields)
    assert (d.admit, d.code, d.counts) == (False, code, False)


def test_unknown_plain_code_is_denied() -> None:
    d = decide(PlainCode("99999999"), None, History(), GateConfig(gate_id="g1", site_id="nanshan"), NOW)
    assert (d.admit, d.code) == (False, "unknown_ticket")


@pytest.mark.parametrize("code", ["unreadable", "bad_signature", "unknown_key"])
def test_invalid_credentials_are_denied_with_their_own_code(code: str) -> None:
    d = decide(Invalid(code, "x"), None, History(), GateConfig(gate_id="g1", site_id="nanshan"), NOW)
    assert (d.admit, d.code) == (False, code)


def test_signed_ticket_sold_after_last_sync_is_admitted_without_cache(signing_key: Ed25519PrivateKey) -> None:
    cred = parse(sign(signing_key, make_ticket()), {1: signing_key.public_key()})
    d = decide(cred, None, History(), GateConfig(gate_id="g1", site_id="nanshan"), NOW)
    assert (d.admit, d.ticket_id) == (True, "1001")


def test_product_kind_not_allowed_at_this_gate_is_wrong_gate() -> None:
    gate = GateConfig(gate_id="vip", site_id="s", allowed_kinds=frozenset({ProductKind.SEASON}))
    assert run(gate=gate).code == "wrong_gate"


def test_product_id_not_allowed_at_this_gate_is_wrong_gate() -> None:
    gate = GateConfig(gate_id="kids", site_id="s", allowed_products=frozenset({"kids-park"}))
    assert run(gate=gate, product_id="adult-day").code == "wrong_gate"
    assert run(gate=gate, product_id="kids-park").admit


def test_punch_card_counts_down_and_is_used_up() -> None:
    history = History(passages=[entered(600 - i * 60) for i in range(9)])
    d = run(ProductKind.PUNCH, history=history)
    assert (d.admit, d.entries_left) == (True, 0)
    history = History(passages=[entered(600 - i * 60) for i in range(10)])
    assert run(ProductKind.PUNCH, history=history).code == "used_up"


def test_punch_entries_known_to_the_cloud_count_too() -> None:
    assert run(ProductKind.PUNCH, entries_used=10).code == "used_up"


def test_uncounted_passages_do_not_use_up_entries() -> None:
    free = Passage(at=NOW - timedelta(hours=1), gate_id="g1", direction=IN, counted=False)
    assert run(ProductKind.PUNCH, entries=1, history=History(passages=[free])).admit


def test_four_hour_ticket_starts_at_first_entry_and_expires_after_window() -> None:
    assert run(ProductKind.TIME_WINDOW, history=History(passages=[entered(239)])).admit
    assert run(ProductKind.TIME_WINDOW, history=History(passages=[entered(240)])).code == "expired"


def test_four_hour_ticket_first_entry_reported_by_cloud_starts_the_window() -> None:
    d = run(ProductKind.TIME_WINDOW, first_entry_at=NOW - timedelta(hours=5))
    assert d.code == "expired"


def test_unused_four_hour_ticket_is_admitted_any_time_in_its_validity() -> None:
    assert run(ProductKind.TIME_WINDOW, valid_from=NOW - timedelta(hours=7)).admit


def test_daily_limit_counts_only_todays_local_entries() -> None:
    gate = GateConfig(gate_id="g1", site_id="s", daily_limit=2, passback_seconds=0)
    # NOW is 09:00 Beijing; 10 hours ago was yesterday in Beijing.
    yesterday = History(passages=[entered(600), entered(601)])
    assert run(ProductKind.PUNCH, history=yesterday, gate=gate).admit
    today = History(passages=[entered(30), entered(60)])
    assert run(ProductKind.PUNCH, history=today, gate=gate).code == "daily_limit"


def test_ticket_daily_limit_applies_without_a_gate_limit() -> None:
    gate = GateConfig(gate_id="g1", site_id="s", passback_seconds=0)
    assert run(gate=gate, daily_limit=1, history=History(passages=[entered(30)])).code == "daily_limit"


@pytest.mark.parametrize(
    ("passages", "admit"),
    [
        pytest.param([entered(2)], False, id="entered-2-min-ago"),
        pytest.param([entered(2, gate_id="g2")], False, id="entered-at-another-gate"),
        pytest.param([entered(6)], True, id="entered-6-min-ago"),
        pytest.param([entered(3), entered(1, direction=Direction.OUT)], True, id="left-in-between"),
    ],
)
def test_anti_passback_within_minimum_reentry_interval(passages: list[Passage], admit: bool) -> None:
    gate = GateConfig(gate_id="g1", site_id="s", passback_seconds=300)
    d = run(history=History(passages=passages), gate=gate)
    assert d.admit is admit
    if not admit:
        assert d.code == "passback"


def test_rescan_of_a_denied_code_repeats_the_denial() -> None:
    prior = PriorScan(at=NOW - timedelta(seconds=1), admit=False, code="expired", passed=False)
    d = run(history=History(prior_scan=prior))
    assert (d.admit, d.code, d.repeat, d.counts) == (False, "expired", True, False)


def test_rescan_after_completed_passage_repeats_admit_without_opening_or_counting() -> None:
    prior = PriorScan(at=NOW - timedelta(seconds=2), admit=True, code="ok", passed=True)
    history = History(passages=[entered(2 / 60)], prior_scan=prior)
    d = run(ProductKind.PUNCH, history=history)
    assert (d.admit, d.repeat, d.open_barrier, d.counts) == (True, True, False, False)


def test_rescan_after_admission_nobody_used_is_evaluated_afresh() -> None:
    prior = PriorScan(at=NOW - timedelta(seconds=2), admit=True, code="ok", passed=False)
    d = run(ProductKind.PUNCH, history=History(prior_scan=prior))
    assert (d.admit, d.repeat, d.open_barrier, d.counts) == (True, False, True, True)


def test_scan_after_rescan_window_is_a_new_decision() -> None:
    prior = PriorScan(at=NOW - timedelta(seconds=4), admit=False, code="expired", passed=False)
    assert run(history=History(prior_scan=prior)).repeat is False


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="valid"),
        pytest.param({"status": TicketStatus.REVOKED}, id="refunded-while-on-the-slopes"),
        pytest.param({"valid_from": NOW - timedelta(days=1), "valid_until": NOW - timedelta(hours=1)}, id="expired"),
        pytest.param({"entries": 1, "entries_used": 1}, id="used-up"),
    ],
)
def test_exit_gate_lets_any_recognised_ticket_out_without_counting(fields: dict[str, Any]) -> None:
    gate = GateConfig(gate_id="out1", site_id="s", direction=Direction.OUT)
    d = run(ProductKind.PUNCH, history=History(passages=[entered(1)]), gate=gate, **fields)
    assert (d.admit, d.code, d.counts) == (True, "ok_exit", False)


def test_exit_gate_still_refuses_garbage() -> None:
    gate = GateConfig(gate_id="out1", site_id="s", direction=Direction.OUT)
    assert decide(Invalid("unreadable", "x"), None, History(), gate, NOW).code == "unreadable"


def test_emergency_mode_admits_anything_and_counts_nothing() -> None:
    gate = GateConfig(gate_id="g1", site_id="s", emergency_open=True)
    d = decide(Invalid("unreadable", "x"), None, History(), gate, NOW)
    assert (d.admit, d.code, d.counts, d.open_barrier) == (True, "emergency", False, False)


def test_every_decision_code_has_a_reason_in_both_languages() -> None:
    for code, texts in CATALOG.items():
        assert texts["zh"] and texts["en"], code
    assert reason("expired", "zh") == "该票已过期"
    assert reason("no_such_code") == "Unknown reason (code no_such_code)"  # see tests/edge/test_reasons.py


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200),
    offset_s=st.integers(min_value=-(10**7), max_value=10**7),
)
def test_random_bytes_never_admit_outside_emergency(data: bytes, offset_s: int) -> None:
    key = Ed25519PrivateKey.generate()
    cred = parse(data, {1: key.public_key()})
    now = datetime(2026, 12, 20, tzinfo=UTC) + timedelta(seconds=offset_s)
    d = decide(cred, None, History(), GateConfig(gate_id="g1", site_id="nanshan"), now)
    assert not d.admit
    assert d.code in CATALOG
