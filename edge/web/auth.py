"""Technician logins for the gate's page: in-memory sessions, login lockout, password checks.

Pure classes with an injected monotonic clock (`now` in seconds), so each rule is a unit test. The web
app (`edge.web.app`) owns one `SessionStore` and one `Lockout` and feeds them the request's facts.

Decisions:
- Sessions live in memory only: a daemon restart logs everyone out (a technician logs in again; nothing
  on the gate's disk can be replayed as a session).
- `after` failures of one name from one address lock that name *at that address*, so a locked name
  stays locked there even when the right password arrives (the password could be the guess that finally
  hit), while the technician's own laptop still logs in: one machine on the LAN cannot lock a technician
  out of every gate. `NAME_SPREAD` times as many failures of a name from any addresses lock the name
  everywhere (a guesser using many machines). A success before the lockout clears the name's failures.
  An address is locked after `ADDRESS_LOCKOUT_AFTER` failures of any names in the window: the LAN is
  small and a technician never needs fifty tries.
- One login of a name, and one from an address, is checked at a time (`begin`/`end`): attempts sent all
  at once would otherwise each pass the lockout before any of them failed.
- A locked-out attempt costs no password check and is not journaled one by one: the lockout itself is
  journaled once when it begins (the journal is not a flood target).
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

from edge.web.port import LoginSource

ADDRESS_LOCKOUT_AFTER = 50
NAME_SPREAD = 4  # a name's failures from any addresses lock it everywhere at NAME_SPREAD x `after`
MAX_SESSIONS = 64  # live sessions at once; the least recently used goes first
MAX_TRACKED = 10_000  # names or addresses with recent failures held in memory

ExpiredWhy = Literal["idle", "max_age"]


@dataclass(slots=True)
class Session:
    token: str
    username: str
    source: LoginSource
    csrf: str
    password_hash: str  # as verified at login: a cloud account whose hash changes loses the session
    created: float
    last_seen: float


class SessionStore:
    """Server-side sessions keyed by the cookie's random token; idle and absolute expiry."""

    def __init__(self, *, idle_s: float, max_s: float, max_sessions: int = MAX_SESSIONS) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def configure(self, *, idle_s: float, max_s: float) -> None:
        """New limits apply to live sessions at their next request."""
        self.idle_s = idle_s
        self.max_s = max_s

    def create(self, username: str, source: LoginSource, password_hash: str, now: float) -> Session:
        self._purge(now)
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        token = secrets.token_urlsafe(32)
        s = Session(token, username, source, secrets.token_urlsafe(32), password_hash, now, now)
        self._sessions[token] = s
        return s

    def get(self, token: str | None, now: float) -> Session | None:
        """The live session of this token, touched (its idle time starts again); None if none or expired."""
        if not token:
            return None
        s = self._sessions.get(token)
        if s is None:
            return None
        if self.expired(s, now) is not None:
            del self._sessions[token]
            return None
        s.last_seen = now
        self._sessions.move_to_end(token)
        return s

    def peek(self, token: str, now: float) -> Session | None:
        """Like `get` but without touching: for a long-lived stream, which is not the technician acting."""
        s = self._sessions.get(token)
        if s is not None and self.expired(s, now) is not None:
            del self._sessions[token]
            return None
        return s

    def expired(self, s: Session, now: float) -> ExpiredWhy | None:
        if now - s.created >= self.max_s:
            return "max_age"
        if now - s.last_seen >= self.idle_s:
            return "idle"
        return None

    def drop(self, token: str) -> Session | None:
        return self._sessions.pop(token, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _purge(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if self.expired(s, now) is not None]:
            del self._sessions[token]


@dataclass(slots=True)
class _Track:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float | None = None


class _Limiter:
    """Failures of one key (a name or an address) in a sliding window; `after` of them lock it."""

    def __init__(self, after: int, window_s: float) -> None:
        self.after = after
        self.window_s = window_s
        self._tracks: OrderedDict[str, _Track] = OrderedDict()

    def retry_after(self, key: str, now: float) -> float | None:
        t = self._tracks.get(key)
        if t is None or t.locked_until is None:
            return None
        if now >= t.locked_until:
            t.locked_until = None
            return None
        return t.locked_until - now

    def fail(self, key: str, now: float) -> bool:
        """Count one failure; True when it starts a lockout."""
        t = self._tracks.get(key)
        if t is None:
            if len(self._tracks) >= MAX_TRACKED:
                self._forget(now, room=1)
            t = self._tracks[key] = _Track()
        self._tracks.move_to_end(key)
        while t.failures and now - t.failures[0] >= self.window_s:
            t.failures.popleft()
        t.failures.append(now)
        if len(t.failures) >= self.after:
            t.failures.clear()
            t.locked_until = now + self.window_s
            return True
        return False

    def clear(self, key: str) -> None:
        self._tracks.pop(key, None)

    def _forget(self, now: float, room: int) -> None:
        """Drop keys with nothing recent; if still too many, the least recently failed that is not locked
        (a flood of new names must not unlock a locked one), and only then locked ones."""

        def locked(t: _Track) -> bool:
            return t.locked_until is not None and now < t.locked_until

        for key in [
            k
            for k, t in self._tracks.items()
            if not locked(t) and (not t.failures or now - t.failures[-1] >= self.window_s)
        ]:
            del self._tracks[key]
        for key in [k for k, t in self._tracks.items() if not locked(t)]:
            if len(self._tracks) <= MAX_TRACKED - room:
                break
            del self._tracks[key]
        while len(self._tracks) > MAX_TRACKED - room:
            self._tracks.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: Literal["name", "address"]
    retry_after_s: int


class Lockout:
    """Failed logins per name at an address, per name anywhere, and per address (see the module's rules)."""

    def __init__(self, *, after: int, window_s: float, address_after: int = ADDRESS_LOCKOUT_AFTER) -> None:
        self._pairs = _Limiter(after, window_s)
        self._names = _Limiter(after * NAME_SPREAD, window_s)
        self._addresses = _Limiter(address_after, window_s)
        self._in_flight: set[str] = set()

    def configure(self, *, after: int, window_s: float) -> None:
        """New limits count from the next failure; running lockouts keep their end."""
        self._pairs.after, self._names.after = after, after * NAME_SPREAD
        for limiter in (self._pairs, self._names, self._addresses):
            limiter.window_s = window_s

    def check(self, username: str, address: str, now: float) -> Refusal | None:
        """Refused before any password check while the name or the address is locked."""
        for scope, limiter, key in (
            ("address", self._addresses, address),
            ("name", self._pairs, _pair(username, address)),
            ("name", self._names, username),
        ):
            left = limiter.retry_after(key, now)
            if left is not None:
                return Refusal(scope, max(1, int(left + 0.999)))  # type: ignore[arg-type]
        return None

    def begin(self, username: str, address: str) -> bool:
        """Start checking a login; False while another login of this name or from this address is checked."""
        keys = {f"n:{username}", f"a:{address}"}
        if keys & self._in_flight:
            return False
        self._in_flight |= keys
        return True

    def end(self, username: str, address: str) -> None:
        self._in_flight -= {f"n:{username}", f"a:{address}"}

    def failed(self, username: str, address: str, now: float) -> list[Literal["name", "address"]]:
        """Count a failed login; the scopes whose lockout it starts."""
        started: list[Literal["name", "address"]] = []
        pair = self._pairs.fail(_pair(username, address), now)
        if self._names.fail(username, now) or pair:
            started.append("name")
        if self._addresses.fail(address, now):
            started.append("address")
        return started

    def succeeded(self, username: str, address: str) -> None:
        self._pairs.clear(_pair(username, address))
        self._names.clear(username)


def _pair(username: str, address: str) -> str:
    return f"{address}\n{username}"


# The hash of a random password nobody kept, with argon2-cffi's default parameters (those of the cloud's
# staff hashes): an unknown name costs one verify like a known one, and nothing at start-up.
DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$CZM/0dwWJLMTOynhObQG9A$IrxTnM4bsWITs3N/yR+FQdkzWcNk5dDAXIYUvkcUwNU"


def verify_password(password_hash: str | None, password: str) -> bool:
    """argon2 verify (slow: call it in a thread). No hash: a verify against a dummy, then False."""
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return PasswordHasher().verify(password_hash or DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token (CSRF, metrics) with the expected one."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def same_origin(origin: str | None, scheme: str, host: str | None) -> bool:
    """An `Origin` header, when sent, must name this very page (scheme and host:port); "null" never does."""
    if origin is None:
        return True
    if not host:
        return False
    return hmac.compare_digest(origin.rstrip("/").lower(), f"{scheme}://{host}".lower())
