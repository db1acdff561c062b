"""Mosquitto password-file lines (``user:$7$iterations$salt$hash``, PBKDF2-SHA512), made in Python.

The format is what ``mosquitto_passwd`` 2.x writes by default: a 12-byte random salt and a 64-byte
PBKDF2-HMAC-SHA512 digest, both base64 with padding. 101 iterations is mosquitto's own default;
the broker re-derives the hash on every CONNECT, so a large count slows every reconnect storm.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

DEFAULT_ITERATIONS = 101
SALT_BYTES = 12
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_username(username: str) -> str:
    """A username safe in the password file (no ':') and the ACL file (no spaces or newlines)."""
    if not _USERNAME.fullmatch(username):
        raise ValueError(f"{username!r} is not a broker username (letters, digits, '.', '_', '-'; at most 64)")
    return username


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """The ``$7$`` hash of a password, as mosquitto_passwd makes it."""
    if not password:
        raise ValueError("an empty broker password is not allowed")
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether a ``$7$`` hash (from us or from mosquitto_passwd) matches the password."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7":
        raise ValueError("not a mosquitto $7$ (PBKDF2-SHA512) hash")
    iterations, salt, digest = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
    candidate = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(candidate, digest)


_HASHED = re.compile(r"\$7\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+")


def is_hashed(password: str) -> bool:
    """Is this already a mosquitto `$7$` hash (as the cloud stores a gate's broker password)?"""
    return bool(_HASHED.fullmatch(password))


def passwd_line(username: str, password: str, *, iterations: int = DEFAULT_ITERATIONS) -> str:
    """One line of a mosquitto password file, without the newline; a `$7$` hash is written as is."""
    hashed = password if is_hashed(password) else hash_password(password, iterations=iterations)
    return f"{check_username(username)}:{hashed}"
