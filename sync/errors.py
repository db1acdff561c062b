"""What the gate's sync client and the gate's store both raise: a key set or a snapshot not to be taken."""

from __future__ import annotations

from pydantic import ValidationError


class KeySetError(ValueError):
    """A key set that cannot be trusted (a key does not load, or the pinned root did not sign it)."""


class SnapshotError(Exception):
    """A snapshot that cannot be used: malformed, inconsistent with its header, or not received."""


def first_error(exc: ValidationError) -> str:
    """The first thing wrong with a message, for a log line: where, then what."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])
