"""Attacks on the credential itself: a ticket of another site, old tokens, other spellings (issue 8)."""

from __future__ import annotations

import base64
import struct
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.gate import GateService
from edge.store import GateStore
from harness.tickets import NOW, make_ticket, sign
from models import GateConfig
from models.credential import DOMAIN, Invalid, SignedCredential, parse, public_key_b64, site_tag

pytestmark = pytest.mark.security


def _gate(store: GateStore, key: Ed25519PrivateKey, site: str = "nanshan") -> GateService:
    store.set_keys({1: public_key_b64(key.public_key())})
    return GateService(store=store, config=GateConfig(gate_id="g1", site_id=site, passback_seconds=0))


def _v1_token(key: Ed25519PrivateKey, ticket_no: int) -> str:
    """A token as issued before tokens named their site (version 1: no site field)."""
    start, end = int((NOW - timedelta(hours=1)).timestamp()), int((NOW + timedelta(hours=9)).timestamp())
    payload = struct.pack(">BHBQIIHH", 1, 1, 0, ticket_no, start, end, 0, 0)
    return "SF" + base64.b32encode(payload + key.sign(DOMAIN + payload)).decode().rstrip("=")


def test_a_ticket_of_another_site_is_refused_as_wrong_site_even_with_an_empty_cache(
    store: GateStore, signing_key: Ed25519PrivateKey
) -> None:
    gate = _gate(store, signing_key, site="nanshan")
    other_sites_ticket = sign(signing_key, make_ticket(), site="wanlong")
    d = gate.evaluate(other_sites_ticket, NOW).decision
    assert (d.admit, d.code) == (False, "wrong_site")
    assert gate.evaluate(sign(signing_key, make_ticket()), NOW).decision.code == "ok"


def test_a_ticket_of_another_site_is_refused_even_when_this_site_caches_the_same_ticket_number(
    store: GateStore, signing_key: Ed25519PrivateKey
) -> None:
    gate = _gate(store, signing_key)
    store.upsert_tickets([make_ticket(ticket_id="1001")])
    d = gate.evaluate(sign(signing_key, make_ticket(ticket_id="1001"), site="wanlong"), NOW).decision
    assert d.code == "wrong_site"


def test_an_old_token_without_a_site_admits_only_when_this_sites_cache_knows_the_ticket(
    store: GateStore, signing_key: Ed25519PrivateKey
) -> None:
    gate = _gate(store, signing_key)
    token = _v1_token(signing_key, 1001)
    cred = parse(token, {1: signing_key.public_key()})
    assert isinstance(cred, SignedCredential) and cred.site is None
    assert gate.evaluate(token, NOW).decision.code == "unknown_ticket"
    store.upsert_tickets([make_ticket(ticket_id="1001")])
    assert gate.evaluate(token, NOW).decision.code == "ok"


def test_tokens_carry_the_tag_of_the_site_they_were_issued_for(signing_key: Ed25519PrivateKey) -> None:
    cred = parse(sign(signing_key, make_ticket(), site="wanlong"), {1: signing_key.public_key()})
    assert isinstance(cred, SignedCredential)
    assert cred.site == site_tag("wanlong") != site_tag("nanshan")


def _respell_last_char(token: str) -> str:
    """The same bytes with other unused low bits in the last base32 character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    last = alphabet.index(token[-1])
    return token[:-1] + alphabet[last | 1] if last % 2 == 0 else token[:-1] + alphabet[last & ~1]


@pytest.mark.parametrize(
    "respell",
    [
        pytest.param(_respell_last_char, id="other-padding-bits"),
        pytest.param(lambda t: t + "==", id="base32-padding"),
        pytest.param(lambda t: " " + t, id="leading-space"),
        pytest.param(lambda t: t + " ", id="trailing-space"),
        pytest.param(lambda t: "\t" + t + "\n", id="tab-and-newline"),
        pytest.param(lambda t: t[:2] + t[2:].lower(), id="lower-case"),
    ],
)
def test_a_token_spelled_any_other_way_than_issued_is_unreadable(
    store: GateStore, signing_key: Ed25519PrivateKey, respell: object
) -> None:
    token = sign(signing_key, make_ticket())
    other = respell(token)  # type: ignore[operator]
    assert other != token
    cred = parse(other, {1: signing_key.public_key()})
    assert isinstance(cred, Invalid) and cred.code == "unreadable"


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_a_scanners_line_ending_is_still_trimmed(signing_key: Ed25519PrivateKey, ending: str) -> None:
    token = sign(signing_key, make_ticket())
    cred = parse(token + ending, {1: signing_key.public_key()})
    assert isinstance(cred, SignedCredential) and cred.text == token
