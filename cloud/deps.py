"""Dependency aliases every route uses: SessionDep, SettingsDep, and `require(...)` for who may call."""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import jwt
from fastapi import Depends, Path, Request
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import read_only_snapshot
from cloud.errors import Forbidden, Unauthorized
from cloud.settings import Settings
from models.api import API_PREFIX


class Role(StrEnum):
    ADMIN = "admin"
    CASHIER = "cashier"
    FINANCE = "finance"
    GATE_TECH = "gate_tech"
    VERIFIER = "verifier"  # handheld terminals and the staff mini-program: verify (核销) only
    RENTAL_CLERK = "rental_clerk"  # 租赁员: the rental desk (hand-out, return, deposits)
    COACH = "coach"  # 教练: their own lessons' schedule and check-in
    CUSTOMER = "customer"  # a signed-in mini-program customer, not staff


STAFF_ROLES = (Role.ADMIN, Role.CASHIER, Role.FINANCE, Role.GATE_TECH, Role.VERIFIER, Role.RENTAL_CLERK, Role.COACH)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """The request's session; routes end its transaction themselves (see `TransactionScopedRoute`)."""
    with request.app.state.sessionmaker() as session:
        yield session


class TransactionScopedRoute(APIRoute):
    """A route whose database transaction ends in the worker thread that ran it: every router's route_class.

    FastAPI runs a sync route, each sync dependency, the check of the route's answer and the
    session's teardown as separate calls into a pool of 8 threads. A transaction left open when
    such a call returns keeps its locks while the request waits for the next free thread; on
    SQLite, where every transaction takes the database's one write lock (BEGIN IMMEDIATE), the
    other threads were all waiting for that very lock: 30 s later each failed with "database is
    locked", spends already committed answered 500. So when a sync route returns or raises, the
    transaction it leaves open is rolled back in the same thread (the services commit what they
    mean to keep; what is left is a read after the commit, or work an error abandoned), and a
    lock is never held across a wait for a thread. The one sync dependency that reads the
    session, `authenticated_gate`, ends its own transaction. Queueing for SQLite's lock then
    costs a waiting thread only while the holder is running, never a deadlock.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not (inspect.iscoroutinefunction(endpoint) or inspect.isgeneratorfunction(endpoint)):
            endpoint = _ending_transactions(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _ending_transactions(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)  # FastAPI reads the parameters through __wrapped__
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Session) and value.in_transaction():
                    value.rollback()

    return run


SessionDep = Annotated[Session, Depends(get_session)]
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns on PostgreSQL
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

oauth2 = OAuth2PasswordBearer(tokenUrl=f"{API_PREFIX}/auth/token", auto_error=False)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a staff member (with a role) or a customer."""

    role: Role
    subject_id: int
    name: str
    generation: int = 0  # staff: the session epoch the token was issued under (claim "gen", 0 when absent)

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.name}"


def principal_from_token(token: str | None, settings: Settings) -> Principal:
    if not token:
        raise Unauthorized("not_authenticated", "Sign in first", "请先登录")
    try:
        claims = jwt.decode(token, settings.jwt_secret.get_secret_value(), algorithms=["HS256"])
        return Principal(
            role=Role(claims["role"]),
            subject_id=int(claims["sub"]),
            name=str(claims["name"]),
            generation=int(claims.get("gen", 0)),
        )
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise Unauthorized("invalid_token", "The session is invalid or expired", "登录已失效，请重新登录") from exc


STAFF_RECHECK_S = 10.0  # the default of `Settings.staff_recheck_s`


@dataclass(frozen=True, slots=True)
class _Seen:
    at: float
    active: bool
    role: str
    epoch: int


class _StaffCheck:
    """Is a staff member's token still theirs: the account active, with the role the token names, and the token
    issued under the account's current session epoch (not ended by a forced logout or a password reset)?

    A JWT lives `jwt_ttl_minutes`; the account behind it (active, role, session_epoch: one statement) is read
    again at most every `recheck_s` (`Settings.staff_recheck_s`, 10 s) per process, in a session of its own that
    ends at once (never the route's transaction), so disabling someone (`PATCH /staff/{id}`), changing their role
    or logging them out takes effect within seconds everywhere instead of when their token expires. The epoch is a
    counter, not a time: a token's `iat` has whole seconds and hosts' clocks differ, a counter has neither problem.
    """

    def __init__(self, recheck_s: float = STAFF_RECHECK_S) -> None:
        self.recheck_s = recheck_s
        self._seen: dict[int, _Seen] = {}
        self._lock = threading.Lock()

    def __call__(self, request: Request, principal: Principal) -> bool:
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(principal.subject_id)
        if seen is not None and principal.generation < seen.epoch:
            return False  # epochs only grow: an ended session never comes back, no need to read again
        # A "no" is read again at once: it may be a member re-enabled (or given this role) a moment ago.
        if seen is None or not self._ok(seen, principal) or now - seen.at >= self.recheck_s:
            from cloud.staff.models import Staff  # the staff domain builds on these dependencies

            with request.app.state.sessionmaker() as s:
                read_only_snapshot(s)  # SQLite: a plain BEGIN, never queueing behind a sale for the write lock
                row = s.execute(
                    select(Staff.active, Staff.role, Staff.session_epoch).where(Staff.id == principal.subject_id)
                ).first()
            seen = _Seen(now, bool(row and row.active), row.role if row else "", row.session_epoch if row else 0)
            with self._lock:
                if len(self._seen) > 10_000:
                    self._seen.clear()
                self._seen[principal.subject_id] = seen
        return self._ok(seen, principal)

    @staticmethod
    def _ok(seen: _Seen, principal: Principal) -> bool:
        return seen.active and seen.role == principal.role.value and principal.generation >= seen.epoch

    def forget(self, staff_id: int) -> None:
        """Read this member's account again on their next request (this process changed it)."""
        with self._lock:
            self._seen.pop(staff_id, None)


def staff_check(request: Request) -> _StaffCheck:
    check: _StaffCheck | None = getattr(request.app.state, "staff_check", None)
    if check is None:
        settings: Settings = request.app.state.settings
        check = request.app.state.staff_check = _StaffCheck(settings.staff_recheck_s)
    return check


class require:
    """A dependency that lets only the given roles through; routes declare who may call them.

    Sync, so FastAPI runs it in a worker thread: a staff token's account is read back now and then
    (`_StaffCheck`), which must never hold up the event loop behind SQLite's lock."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    def __call__(
        self, request: Request, settings: SettingsDep, token: Annotated[str | None, Depends(oauth2)]
    ) -> Principal:
        principal = principal_from_token(token, settings)
        if principal.role in STAFF_ROLES and not staff_check(request)(request, principal):
            raise Unauthorized(
                "staff_disabled",
                "This account is disabled, its role changed or its sessions were ended: sign in again",
                "该账号已停用、角色已变更或已被强制下线，请重新登录",
            )
        if principal.role not in self.roles:
            raise Forbidden(
                "forbidden",
                f"Role {principal.role.value} may not do this",
                f"角色 {principal.role.value} 无此权限",
            )
        return principal


def public() -> None:
    """Marks a route as open to anyone (login, payment notifications): declared, not forgotten."""
