"""Offline-verifiable QR credentials: a versioned, Ed25519-signed compact token.

Text form (what the QR code holds): ``"SF" + base32(payload || signature)`` without padding.
Every character is in the QR alphanumeric set, so a day ticket (143 characters) fits a
version 6 QR code at error level M. Payload, big-endian (``struct`` format ``>BHBQIIHH``):

    version u8 | key_id u16 | kind u8 | ticket_no u64 | valid_from u32 | valid_until u32 |
    entries u16 (0 = unlimited) | window_minutes u16 (0 = none)

Times are Unix seconds (UTC). The signature covers ``DOMAIN + payload`` so a Starfish
signature can never be replayed as some other protocol's. Issuing needs the private key
(cloud); verifying needs only public keys, and a gate holds several at once for rotation.

Parsing accepts any bytes at all and returns a result, never raises: a decision is always
possible. Plain codes (OTA vouchers, paper tickets) are returned as `PlainCode` for a cache
look-up at the gate.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from models.messages import ProductKind

PREFIX = "SF"
VERSION = 1
DOMAIN = b"starfish-ticket-v1\x00"
_PAYLOAD = struct.Struct(">BHBQIIHH")
_SIG_LEN = 64
_KINDS = (ProductKind.DAY, ProductKind.TIME_WINDOW, ProductKind.SEASON, ProductKind.PUNCH)
_PLAIN = re.compile(r"[0-9A-Za-z-]{6,32}")
_MAX_INPUT = 512


@dataclass(frozen=True, slots=True)
class SignedCredential:
    """A token whose signature checked out against a key the gate trusts."""

    key_id: int
    kind: ProductKind
    ticket_no: int
    valid_from: datetime
    valid_until: datetime
    entries: int | None
    window_minutes: int | None
    text: str

    @property
    def ticket_id(self) -> str:
        return str(self.ticket_no)


@dataclass(frozen=True, slots=True)
class PlainCode:
    """An unsigned code the gate can only admit by finding it in its ticket cache."""

    code: str


@dataclass(frozen=True, slots=True)
class Invalid:
    """Input that is no credential at all (`unreadable`), or one that failed verification."""

    code: str  # "unreadable" | "bad_signature" | "unknown_key" | "unsupported_version"
    detail: str


Credential = SignedCredential | PlainCode | Invalid


def _b32decode(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


def _ts(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("credential times must be timezone-aware")
    value = int(dt.timestamp())
    if not 0 <= value < 2**32:
        raise ValueError("credential time out of range")
    return value


def issue(
    private_key: Ed25519PrivateKey,
    *,
    key_id: int,
    kind: ProductKind,
    ticket_no: int,
    valid_from: datetime,
    valid_until: datetime,
    entries: int | None = None,
    window_minutes: int | None = None,
) -> str:
    """Sign a credential and return the text to put in the QR code."""
    if not 0 <= key_id < 2**16 or not 0 <= ticket_no < 2**64:
        raise ValueError("key_id or ticket_no out of range")
    if kind is ProductKind.PUNCH and not entries:
        raise ValueError("a punch ticket needs entries")
    if kind is ProductKind.TIME_WINDOW and not window_minutes:
        raise ValueError("a time_window ticket needs window_minutes")
    payload = _PAYLOAD.pack(
        VERSION,
        key_id,
        _KINDS.index(kind),
        ticket_no,
        _ts(valid_from),
        _ts(valid_until),
        entries or 0,
        window_minutes or 0,
    )
    signature = private_key.sign(DOMAIN + payload)
    return PREFIX + base64.b32encode(payload + signature).decode("ascii").rstrip("=")


def parse(data: bytes | str, keys: Mapping[int, Ed25519PublicKey]) -> Credential:
    """Turn whatever a reader produced into a credential; never raises."""
    try:
        text = data if isinstance(data, str) else data.decode("ascii")
    except UnicodeDecodeError:
        return Invalid("unreadable", "not ASCII text")
    text = text.strip()
    if not text or len(text) > _MAX_INPUT or not text.isprintable():
        return Invalid("unreadable", "empty, too long or not printable")
    if text.startswith(PREFIX) and len(text) > 40:
        return _parse_signed(text, keys)
    if _PLAIN.fullmatch(text):
        return PlainCode(text)
    return Invalid("unreadable", "neither a Starfish token nor a ticket code")


def _parse_signed(text: str, keys: Mapping[int, Ed25519PublicKey]) -> Credential:
    try:
        blob = _b32decode(text[len(PREFIX) :])
    except (binascii.Error, ValueError):
        return Invalid("unreadable", "token is not base32")
    if len(blob) < 1:
        return Invalid("unreadable", "token is empty")
    if blob[0] != VERSION:
        return Invalid("unsupported_version", f"token version {blob[0]} is not supported")
    if len(blob) != _PAYLOAD.size + _SIG_LEN:
        return Invalid("unreadable", "token has the wrong length")
    payload, signature = blob[: _PAYLOAD.size], blob[_PAYLOAD.size :]
    _, key_id, kind_no, ticket_no, start, end, entries, window = _PAYLOAD.unpack(payload)
    key = keys.get(key_id)
    if key is None:
        return Invalid("unknown_key", f"signed with key {key_id}, which this gate does not hold")
    try:
        key.verify(signature, DOMAIN + payload)
    except InvalidSignature:
        return Invalid("bad_signature", "signature does not match: altered or forged")
    if kind_no >= len(_KINDS) or end <= start:
        return Invalid("unreadable", "signed token carries impossible fields")
    kind = _KINDS[kind_no]
    if (kind is ProductKind.PUNCH and not entries) or (kind is ProductKind.TIME_WINDOW and not window):
        return Invalid("unreadable", f"signed {kind.value} token without its limit")
    return SignedCredential(
        key_id=key_id,
        kind=kind,
        ticket_no=ticket_no,
        valid_from=datetime.fromtimestamp(start, UTC),
        valid_until=datetime.fromtimestamp(end, UTC),
        entries=entries or None,
        window_minutes=window or None,
        text=text,
    )


def public_key_b64(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64: how keys travel in config and feeds."""
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def load_public_key(b64: str) -> Ed25519PublicKey:
    """Inverse of `public_key_b64`; raises ValueError on a malformed key."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"public key is not base64: {exc}") from exc
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)
