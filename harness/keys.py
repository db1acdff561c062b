"""Development key material and cloud settings for tests and bench: never a production secret.

The key-set root here is published in this repository, so a cloud signing with it is a test
cloud; `production_env()` makes fresh secrets for a cloud run as production (bench, demo), as the
`STARFISH_*` variables its process reads, and `settings_of()` the `Settings` the same variables give.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.settings import Settings
from models.credential import public_key_b64
from models.face import face_key_text, site_face_key

# The key-set root the tests' clouds sign key sets with, and the public half their gates pin.
KEYSET_ROOT_B64 = "dGVzdC1rZXlzZXQtcm9vdC1rZXktb2YtMzItYnl0ZXM="
KEYSET_ROOT = Ed25519PrivateKey.from_private_bytes(base64.b64decode(KEYSET_ROOT_B64))


def key_root_of(root_key_b64: str) -> str:
    """The public half a gate pins (`sync.key_root`) of a cloud's key-set root private key (base64)."""
    return public_key_b64(Ed25519PrivateKey.from_private_bytes(base64.b64decode(root_key_b64)).public_key())


KEY_ROOT = key_root_of(KEYSET_ROOT_B64)

# The face master key the tests' clouds seal face templates with (published here: a test key, never production's).
FACE_KEY_B64 = "dGVzdC1mYWNlLW1hc3Rlci1rZXktb2YtMzItYnl0ZXM="
FACE_KEY = base64.b64decode(FACE_KEY_B64)
# The voucher master key the tests' clouds make OTA tickets' plain codes with (a test key, never production's).
VOUCHER_KEY_B64 = "dGVzdC12b3VjaGVyLW1hc3Rlci1rZXktb2YtMzItYnk="
VOUCHER_KEY = base64.b64decode(VOUCHER_KEY_B64)


def site_face_key_text(master_b64: str, site: str) -> str:
    """What a gate of `site` holds as its face key (`face_key_text`), for a cloud with this master key (base64)."""
    return face_key_text(site_face_key(base64.b64decode(master_b64), site))


def cloud_secrets_env() -> dict[str, str]:
    """Fresh secrets for a cloud process, as its STARFISH_ environment variables: JWT, ticket signing, key-set root,
    face master key, voucher master key."""
    return {
        "STARFISH_FACE_KEY_B64": base64.b64encode(os.urandom(32)).decode(),
        "STARFISH_VOUCHER_KEY_B64": base64.b64encode(os.urandom(32)).decode(),
        "STARFISH_JWT_SECRET": base64.b64encode(os.urandom(36)).decode(),
        "STARFISH_SIGNING_KEY_B64": base64.b64encode(os.urandom(32)).decode(),
        "STARFISH_KEYSET_ROOT_KEY_B64": base64.b64encode(os.urandom(32)).decode(),
    }


def production_env(database_url: str) -> dict[str, str]:
    """A cloud run as production on `database_url` with fresh secrets, as its STARFISH_ environment variables."""
    return {"STARFISH_ENVIRONMENT": "production", "STARFISH_DATABASE_URL": database_url, **cloud_secrets_env()}


def settings_of(env: Mapping[str, str]) -> Settings:
    """The `Settings` a cloud process started with `env` (its STARFISH_ variables, plain values) reads."""
    prefix = "STARFISH_"
    fields: dict[str, Any] = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    return Settings(**fields)


def cloud_settings(database_url: str, **overrides: Any) -> Settings:
    """The cloud's settings as the tests run it: environment `test`, fresh secrets, the tests' key-set root."""
    fields: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "jwt_secret": base64.b64encode(os.urandom(36)).decode(),
        "signing_key_b64": base64.b64encode(os.urandom(32)).decode(),
        "keyset_root_key_b64": KEYSET_ROOT_B64,
        "face_key_b64": FACE_KEY_B64,
        "voucher_key_b64": VOUCHER_KEY_B64,
    }
    return Settings(**{**fields, **overrides})
