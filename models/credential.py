"""Offline-verifiable QR credentials: a versioned, Ed25519-signed compact token.

Text form (what the QR code holds): ``"SF" + base32(payload || signature)`` without padding.
Every character is in the QR alphanumeric set, so a day ticket (150 characters) fits a
version 6 QR code at error level M. Payload, big-endian (``struct`` format ``>BHBQIIHHI``):

    version u8 (2) | key_id u16 | kind u8 | ticket_no u64 | valid_from u32 | valid_until u32 |
    entries u16 (0 = unlimited) | window_minutes u16 (0 = none) | site u32

``site`` names where the ticket is valid: `site_tag` of the site's code (a product belongs to
one site). A gate refuses a token of another site (``wrong_site``) before anything else, so a
ticket bought for one resort never opens another's turnstiles, whoever holds the signing key's
trust. Version 1 tokens (issued before the site field, ``>BHBQIIHH``) name no site: they still
verify, but a gate admits one only when its own site's cache holds the ticket.

Times are Unix seconds (UTC). The signature covers ``DOMAIN + payload`` so a Starfish
signature can never be replayed as some other protocol's. Issuing needs the private key
(cloud); verifying needs only public keys, and a gate holds several at once for rotation.

One spelling per credential: the base32 text must be exactly what `issue` wrote (upper case, no
``=`` padding, the unused low bits of the last character zero, nothing around it but a scanner's
line ending), otherwise it is ``unreadable``. Two spellings of one ticket would be two codes to
the rescan and debounce logic and to anything keyed on the text.

Parsing accepts any bytes at all and returns a result, never raises: a decision is always
possible. Plain codes (OTA vouchers, paper tickets) are returned as `PlainCode` for a cache
look-up at the gate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
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
VERSION = 2
DOMAIN = b"starfish-ticket-v1\x00"
_PAYLOAD_V1 = struct.Struct(">BHBQIIHH")
_PAYLOAD = struct.Struct(">BHBQIIHHI")
_SIZES = {1: _PAYLOAD_V1.size, 2: _PAYLOAD.size}
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
    site: int | None = None  # `site_tag` of the site where it is valid; None: a version 1 token

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


_BASE32 = re.compile(r"[A-Z2-7]+")


def site_tag(site_code: str) -> int:
    """The 32-bit name of a site in a token: from its code, so a gate needs no extra setting.

    The cloud refuses to register a site whose tag equals another's (`sites.service`).
    """
    return int.from_bytes(hashlib.sha256(b"starfish-site\x00" + site_code.encode()).digest()[:4], "big")


def _b32encode(blob: bytes) -> str:
    return base64.b32encode(blob).decode("ascii").rstrip("=")


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
    site: str,
) -> str:
    """Sign a credential valid at `site` (its code) and return the text to put in the QR code."""
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
        site_tag(site),
    )
    signature = private_key.sign(DOMAIN + payload)
    return PREFIX + _b32encode(payload + signature)


def parse(data: bytes | str, keys: Mapping[int, Ed25519PublicKey]) -> Credential:
    """Turn whatever a reader produced into a credential; never raises."""
    try:
        text = data if isinstance(data, str) else data.decode("ascii")
    except UnicodeDecodeError:
        return Invalid("unreadable", "not ASCII text")
    text = text.removesuffix("\n").removesuffix("\r")  # a scanner's line ending; nothing else is trimmed
    if not text or len(text) > _MAX_INPUT or not text.isprintable():
        return Invalid("unreadable", "empty, too long or not printable")
    if text.startswith(PREFIX) and len(text) > 40:
        return _parse_signed(text, keys)
    if _PLAIN.fullmatch(text):
        return PlainCode(text)
    return Invalid("unreadable", "neither a Starfish token nor a ticket code")


def _parse_signed(text: str, keys: Mapping[int, Ed25519PublicKey]) -> Credential:
    body = text[len(PREFIX) :]
    if not _BASE32.fullmatch(body):
        return Invalid("unreadable", "token is not base32 (upper case, unpadded)")
    try:
        blob = _b32decode(body)
    except (binascii.Error, ValueError):
        return Invalid("unreadable", "token is not base32")
    if len(blob) < 1:
        return Invalid("unreadable", "token is empty")
    size = _SIZES.get(blob[0])
    if size is None:
        return Invalid("unsupported_version", f"token version {blob[0]} is not supported")
    if len(blob) != size + _SIG_LEN:
        return Invalid("unreadable", "token has the wrong length")
    if _b32encode(blob) != body:
        return Invalid("unreadable", "token is not spelled the one way it was issued")
    payload, signature = blob[:size], blob[size:]
    site: int | None = None
    if size == _PAYLOAD.size:
        _, key_id, kind_no, ticket_no, start, end, entries, window, site = _PAYLOAD.unpack(payload)
    else:
        _, key_id, kind_no, ticket_no, start, end, entries, window = _PAYLOAD_V1.unpack(payload)
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
        site=site,
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


_TOKEN_SHAPE = re.compile(rf"{PREFIX}[A-Z2-7]{{38,{_MAX_INPUT - len(PREFIX)}}}")


def could_be_credential(data: bytes | str) -> bool:
    """Whether `parse` could make anything of this but ``unreadable``: a cheap check before queueing.

    Only the shape: a token's prefix and base32 alphabet (any length up to the input limit, so
    every token version passes), or a plain code. False means `parse` would say ``unreadable``.
    """
    if isinstance(data, bytes):
        if len(data) > _MAX_INPUT + 2 or not data.isascii():
            return False
        data = data.decode("ascii")
    text = data.removesuffix("\n").removesuffix("\r")
    return bool(_TOKEN_SHAPE.fullmatch(text) or _PLAIN.fullmatch(text))
