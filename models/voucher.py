"""Plain voucher codes we issue for OTA orders, and the check a gate reads in one it does not know yet.

A code is ``channel (2) + site (2) + serial (7) + check (6)``, 17 characters of Crockford's base32
alphabet (digits and upper-case letters without I, L, O, U, so a code read out or typed by hand has no
look-alikes): ``DY`` ``NA`` ``000001Z`` and a check, for Douyin's ticket 63 at ``nanshan``. ``serial``
is the ticket's number; ``check`` the first 6 characters of HMAC-SHA256(site voucher key, a domain
tag + the rest).

The check is no credential: a gate admits a plain code only from its ticket cache. It lets a gate tell
"one of ours whose ticket has not reached me yet" (``not_synced_yet``) from a code that never was
(``unknown_ticket``). Six characters (30 bits), not the design draft's four: a code one knows, with its
serial changed by one, must not be a neighbour's with a guessable check (2^30 tries, not 2^20).

Keys: the cloud holds one master voucher key (``STARFISH_VOUCHER_KEY_FILE``/``_B64``) and derives
(HKDF-SHA256) a key per site (`site_voucher_key`) that the site's gates hold in a file or an environment
variable (``vouchers.key_file``/``key_env`` of the gate's config), like the face key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32
SERIAL_CHARS = 7  # 35 bits: 34 billion tickets
CHECK_CHARS = 6
CODE_CHARS = 2 + 2 + SERIAL_CHARS + CHECK_CHARS
DOMAIN = b"starfish-voucher-1\x00"
# The channel's two letters, in the alphabet too: DY 抖音, MT 美团, XC 携程, BX 乐冰雪; QT (其他) any other channel.
CHANNELS = {"douyin": "DY", "meituan": "MT", "ctrip": "XC", "lebingxue": "BX", "other": "QT"}
_PREFIXES = frozenset(CHANNELS.values())
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def site_voucher_key(master: bytes, site: str) -> bytes:
    """The key a site's gates hold: derived from the cloud's master voucher key and the site code."""
    if len(master) != KEY_BYTES:
        raise ValueError(f"a voucher key is {KEY_BYTES} bytes, not {len(master)}")
    info = b"starfish voucher site\x00" + site.encode()
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master)


def load_voucher_key(text: str) -> bytes:
    """A voucher key as configured: base64 of 32 bytes."""
    try:
        key = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("a voucher key is base64 of 32 bytes") from exc
    if len(key) != KEY_BYTES:
        raise ValueError(f"a voucher key is base64 of {KEY_BYTES} bytes, not {len(key)}")
    return key


def voucher_key_text(key: bytes) -> str:
    """A voucher key as `load_voucher_key` reads it."""
    return base64.b64encode(key).decode("ascii")


def _site_letters(site_code: str) -> str:
    letters = "".join(c for c in site_code.upper() if c in _INDEX)
    return (letters + "XX")[:2]


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def _check(key: bytes, body: str) -> str:
    digest = hmac.new(key, DOMAIN + body.encode("ascii"), hashlib.sha256).digest()
    return _encode(int.from_bytes(digest[:4], "big") >> 2, CHECK_CHARS)  # the top 30 bits


def make_code(site_code: str, channel: str, serial: int, key: bytes) -> str:
    """The plain code of voucher `serial` (our ticket number) sold through `channel` at `site_code`."""
    prefix = CHANNELS.get(channel)
    if prefix is None:
        raise ValueError(f"no voucher prefix for channel {channel!r}")
    if not 0 < serial < 32**SERIAL_CHARS:
        raise ValueError(f"a voucher serial is 1..{32**SERIAL_CHARS - 1}, not {serial}")
    body = prefix + _site_letters(site_code) + _encode(serial, SERIAL_CHARS)
    return body + _check(key, body)


def looks_like_ours(code: str, key: bytes) -> bool:
    """Whether `code` has our shape and its check holds under this site's voucher key."""
    if len(code) != CODE_CHARS or code[:2] not in _PREFIXES or any(c not in _INDEX for c in code):
        return False
    body, check = code[:-CHECK_CHARS], code[-CHECK_CHARS:]
    return hmac.compare_digest(_check(key, body), check)
