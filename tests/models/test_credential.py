"""Signed QR credentials: issue, verify offline, reject forgeries; any bytes give a result."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.tickets import NOW
from models import ProductKind
from models.credential import (
    Invalid,
    PlainCode,
    SignedCredential,
    issue,
    load_public_key,
    parse,
    public_key_b64,
)


def _day_token(key: Ed25519PrivateKey, key_id: int = 1) -> str:
    return issue(
        key,
        key_id=key_id,
        kind=ProductKind.DAY,
        ticket_no=123456789,
        valid_from=NOW,
        valid_until=NOW + timedelta(days=1),
        entries=1,
        site="nanshan",
    )


def test_day_ticket_fits_qr_version_6_at_level_m_in_alphanumeric_mode(signing_key: Ed25519PrivateKey) -> None:
    qr = segno.make(_day_token(signing_key), error="M", micro=False, boost_error=False)
    assert qr.mode == "alphanumeric"
    assert isinstance(qr.version, int) and qr.version <= 6


def test_issued_token_verifies_with_the_public_key_alone(signing_key: Ed25519PrivateKey) -> None:
    cred = parse(_day_token(signing_key), {1: signing_key.public_key()})
    assert isinstance(cred, SignedCredential)
    assert (cred.ticket_id, cred.kind, cred.entries) == ("123456789", ProductKind.DAY, 1)
    assert cred.valid_from == NOW
    assert cred.valid_until == NOW + timedelta(days=1)


def test_gate_holds_several_keys_for_rotation() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = {1: old.public_key(), 2: new.public_key()}
    assert isinstance(parse(_day_token(old, 1), keys), SignedCredential)
    assert isinstance(parse(_day_token(new, 2), keys), SignedCredential)


def test_token_signed_with_a_key_the_gate_does_not_hold_is_unknown_key(signing_key: Ed25519PrivateKey) -> None:
    cred = parse(_day_token(signing_key, key_id=9), {1: signing_key.public_key()})
    assert isinstance(cred, Invalid) and cred.code == "unknown_key"


def test_token_signed_by_a_forger_under_a_trusted_key_id_is_bad_signature(signing_key: Ed25519PrivateKey) -> None:
    forged = _day_token(Ed25519PrivateKey.generate(), key_id=1)
    cred = parse(forged, {1: signing_key.public_key()})
    assert isinstance(cred, Invalid) and cred.code == "bad_signature"


@pytest.mark.parametrize("position", [2, 10, 20, 40, 80, 120, 141, 149])
def test_any_altered_character_is_caught(signing_key: Ed25519PrivateKey, position: int) -> None:
    token = _day_token(signing_key)
    altered = token[:position] + ("B" if token[position] != "B" else "C") + token[position + 1 :]
    cred = parse(altered, {1: signing_key.public_key()})
    assert isinstance(cred, Invalid)
    assert cred.code in {"bad_signature", "unknown_key", "unreadable", "unsupported_version"}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"", "unreadable", id="empty"),
        pytest.param(b"\xff\xfe\x00\x01", "unreadable", id="binary-noise"),
        pytest.param("SF" + "A" * 60, "unsupported_version", id="sf-prefix-garbage"),
        pytest.param("https://example.com/?t=1", "unreadable", id="url"),
        pytest.param("x" * 5000, "unreadable", id="huge"),
        pytest.param("SF!!!!" + "A" * 60, "unreadable", id="not-base32"),
    ],
)
def test_garbage_is_unreadable(data: bytes | str, expected: str) -> None:
    cred = parse(data, {})
    assert isinstance(cred, Invalid) and cred.code == expected


@pytest.mark.parametrize("code", ["88012345678", "MT-20261220-0001", "PAPER123456"])
def test_plain_codes_are_passed_on_for_cache_lookup(code: str) -> None:
    assert parse(code.encode() + b"\r\n", {}) == PlainCode(code)


def test_public_key_round_trips_and_bad_keys_are_named() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    assert public_key_b64(load_public_key(public_key_b64(key))) == public_key_b64(key)
    with pytest.raises(ValueError, match="32 bytes"):
        load_public_key("AAAA")
    with pytest.raises(ValueError, match="base64"):
        load_public_key("not base64!")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_and_never_verify(data: bytes) -> None:
    key = Ed25519PrivateKey.generate()
    cred = parse(data, {1: key.public_key()})
    assert not isinstance(cred, SignedCredential)


_KEY = Ed25519PrivateKey.generate()
_TOKEN = _day_token(_KEY)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0, max_value=91), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_of_a_real_token_is_caught_by_the_signature(position: int, bit: int) -> None:
    blob = bytearray(base64.b32decode(_TOKEN[2:] + "=" * (-len(_TOKEN[2:]) % 8)))
    blob[position] ^= 1 << bit
    altered = "SF" + base64.b32encode(bytes(blob)).decode().rstrip("=")
    cred = parse(altered, {1: _KEY.public_key()})
    assert isinstance(cred, Invalid)
    if position >= 3:  # past version and key id: the signature check itself must catch it
        assert cred.code in {"bad_signature", "unreadable"}


@pytest.mark.parametrize("kind", [ProductKind.PUNCH, ProductKind.TIME_WINDOW])
def test_punch_and_time_window_tokens_must_carry_their_limit(signing_key: Ed25519PrivateKey, kind: ProductKind) -> None:
    with pytest.raises(ValueError, match="needs"):
        issue(
            signing_key, key_id=1, kind=kind, ticket_no=1, valid_from=NOW, valid_until=NOW + timedelta(days=1), site="s"
        )
