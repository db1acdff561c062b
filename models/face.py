"""Face templates on the wire and at rest: the 128-d encoding, sealed (AES-256-GCM) end to end.

A face template is sensitive personal information (PIPL): it never travels or rests in the clear.

* The cloud holds one master face key (`STARFISH_FACE_KEY_FILE`). It derives (HKDF-SHA256) a key per
  site (`site_face_key`) and a key for its own store (`store_face_key`); the master never leaves it.
* A template going to a site's gates is sealed with the site's key, with the site, ticket and holder as
  associated data: the feed, the brokers' persistence, snapshots and the gate's SQLite all hold only the
  sealed text, and a sealed template moved to another ticket or site does not open.
* A gate holds its site's key in a file or an environment variable named in its config (never in its
  SQLite file), and opens the templates only into memory.

An encoding is 128 float32 values, little-endian: 512 bytes.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ENCODING_DIM = 128
ENCODING_BYTES = ENCODING_DIM * 4
KEY_BYTES = 32
NONCE_BYTES = 12
# base64 of nonce + 512 bytes + 16-byte tag is 724 characters; room for a longer plaintext is not needed
SEALED_MAX = 1024
_PACK = struct.Struct(f"<{ENCODING_DIM}f")


class FaceSealError(ValueError):
    """A sealed template that does not open: another key, altered text, or not a sealed template at all."""


def pack_encoding(values: Sequence[float]) -> bytes:
    """128 floats as 512 bytes (float32, little-endian)."""
    if len(values) != ENCODING_DIM:
        raise ValueError(f"a face encoding has {ENCODING_DIM} values, not {len(values)}")
    return _PACK.pack(*(float(v) for v in values))


def unpack_encoding(data: bytes) -> tuple[float, ...]:
    """512 bytes back to 128 floats."""
    if len(data) != ENCODING_BYTES:
        raise FaceSealError(f"a face encoding is {ENCODING_BYTES} bytes, not {len(data)}")
    return _PACK.unpack(data)


def _derive(master: bytes, info: bytes) -> bytes:
    if len(master) != KEY_BYTES:
        raise ValueError(f"a face key is {KEY_BYTES} bytes, not {len(master)}")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master)


def site_face_key(master: bytes, site: str) -> bytes:
    """The key a site's gates hold: derived from the cloud's master key and the site code."""
    return _derive(master, b"starfish face site\x00" + site.encode())


def store_face_key(master: bytes) -> bytes:
    """The key the cloud seals its own copy of templates (and kept photos) with."""
    return _derive(master, b"starfish face store")


def template_aad(site: str, ticket_id: str, holder_id: str) -> bytes:
    """What a gate's sealed template is bound to: it opens only for this site, ticket and holder."""
    return b"\x00".join(part.encode() for part in ("starfish-face-1", site, ticket_id, holder_id))


def seal(key: bytes, plaintext: bytes, aad: bytes) -> str:
    """AES-256-GCM with a random nonce: base64(nonce ‖ ciphertext ‖ tag)."""
    nonce = os.urandom(NONCE_BYTES)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext, aad)).decode("ascii")


def unseal(key: bytes, sealed: str, aad: bytes) -> bytes:
    """The plaintext of `seal`; `FaceSealError` when the key, the text or the associated data differ."""
    try:
        blob = base64.b64decode(sealed.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise FaceSealError("not a sealed face template (bad base64)") from exc
    if len(blob) < NONCE_BYTES + 16:
        raise FaceSealError("not a sealed face template (too short)")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise FaceSealError("the sealed face template does not open with this key") from exc


def load_face_key(text: str) -> bytes:
    """A face key as configured: base64 of 32 bytes (what `starfish cloud face-key` prints)."""
    try:
        key = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("a face key is base64 of 32 bytes") from exc
    if len(key) != KEY_BYTES:
        raise ValueError(f"a face key is base64 of {KEY_BYTES} bytes, not {len(key)}")
    return key


def face_key_text(key: bytes) -> str:
    """A face key as `load_face_key` reads it."""
    return base64.b64encode(key).decode("ascii")
