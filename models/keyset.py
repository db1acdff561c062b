"""Key sets signed by the resort's key-set root: how a gate knows which ticket keys to trust.

A gate pins one public key in its configuration (`SyncConfig.key_root`): the root. The cloud
holds the root's private key (``STARFISH_KEYSET_ROOT_KEY_FILE``) and signs every set of ticket
keys it sends down, on the feed (`KeySet`) and in snapshot headers. A gate installs a key set
only when the root's signature over it checks out, so whoever answers the snapshot URL or gets
a message onto the feed cannot make the gate trust a key of their own.

The signature covers ``DOMAIN`` and the key set in one canonical spelling (ids ascending, JSON
without spaces), so it never depends on how the set was serialised on the way.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DOMAIN = b"starfish-keyset-v1\x00"


class KeySetSignatureError(ValueError):
    """A key set whose signature is missing, malformed or not the pinned root's."""


def _message(keys: Mapping[int, str]) -> bytes:
    canonical = json.dumps({str(k): keys[k] for k in sorted(keys)}, separators=(",", ":"), ensure_ascii=True)
    return DOMAIN + canonical.encode("ascii")


def sign_key_set(root: Ed25519PrivateKey, keys: Mapping[int, str]) -> str:
    """The root's signature over a key set, base64 (Ed25519 is deterministic: same set, same signature)."""
    return base64.b64encode(root.sign(_message(keys))).decode("ascii")


def verify_key_set(root: Ed25519PublicKey, keys: Mapping[int, str], signature: str | None) -> None:
    """Raise `KeySetSignatureError` unless `signature` is the root's over exactly `keys`."""
    if not signature:
        raise KeySetSignatureError("the key set is not signed")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeySetSignatureError("the key set's signature is not base64") from exc
    try:
        root.verify(raw, _message(keys))
    except InvalidSignature as exc:
        raise KeySetSignatureError("the key set is not signed by this gate's key-set root") from exc
