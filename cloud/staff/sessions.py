"""Staff sign-in, refresh tokens and sign-out; every sign-in, successful or not, in the audit log.

- Sign-in (`POST /auth/token`, OAuth2 password form): answers an access token (JWT, `jwt_ttl_minutes`) and a
  refresh token: 32 random bytes, only its SHA-256 stored, good until `refresh_ttl_hours` (7 days) after the
  password was typed: refreshing never extends that, so a counter PC left signed in asks for the password weekly.
- Refresh (`POST /auth/refresh`) rotates: the token presented is used up and a new one of the same sign-in (the
  family) comes back with the new access token. A used-up token presented again means two holders (a copy was
  stolen, or a client replayed a lost answer): the whole family is revoked, both must sign in again, and it is
  audited (`staff.refresh_reuse`). Refused while the member is disabled (and fine again once re-enabled, like
  their access tokens), and for good after a forced logout or a password reset (the family is revoked).
- Sign-out (`POST /auth/logout`) ends all of the member's sessions, on every device: access tokens are not
  tracked one by one (no lookup per request), only the member's session epoch (`cloud.deps._StaffCheck`).
- Audit: `staff.login` (actor the member) and `staff.login_failed` (actor `anonymous`) with the username tried
  (64 characters at most), the client's address and the reason: `unknown_user`, `wrong_password`, `disabled` or
  `locked`. Never the password. The client always gets the same 401 `bad_credentials`, except:
- Slow-down: after `LOCK_AFTER` (5) wrong passwords in a row for one username, that username's sign-ins are
  refused (429 `too_many_attempts`, password not even checked) until `LOCK_S` (60 s) after the last wrong one:
  about one guess a minute, while the member locked out by someone else's guessing waits a minute, not an
  hour, at the morning rush. A successful sign-in or a password reset clears the count. Unknown usernames are
  not counted (nothing to guess), so a locked answer tells that a username exists: staff names are not secrets.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import read_only_snapshot
from cloud.deps import Principal, Role
from cloud.errors import Conflict, DomainError, Unauthorized, not_found
from cloud.settings import Settings
from cloud.staff.models import RefreshToken, Staff
from cloud.staff.service import end_sessions, issue_token, password_matches

LOCK_AFTER = 5
LOCK_S = 60


@dataclass(frozen=True, slots=True)
class SignedIn:
    access_token: str
    role: Role
    refresh_token: str
    refresh_expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bad_credentials() -> Unauthorized:
    return Unauthorized("bad_credentials", "Wrong username or password", "用户名或密码错误")


def login(
    session: Session, settings: Settings, username: str, password: str, *, client: str, now: datetime
) -> SignedIn:
    """Check the password (outside any write lock), then record the sign-in and issue both tokens; commits."""
    read_only_snapshot(session)
    row = session.execute(
        select(Staff.id, Staff.password_hash, Staff.active, Staff.failed_logins, Staff.last_failed_login_at).where(
            Staff.username == username
        )
    ).first()
    session.rollback()  # argon2 takes ~50 ms: no transaction, no lock held meanwhile
    tried = {"username": username[:64], "client": client[:64]}
    last_failed = row.last_failed_login_at if row is not None else None
    if row is not None and row.failed_logins >= LOCK_AFTER and last_failed and now - last_failed < timedelta(0, LOCK_S):
        _failed(session, row.id, tried, "locked", now=now)
        wait = LOCK_S - int((now - last_failed).total_seconds())
        raise DomainError(
            "too_many_attempts",
            f"Too many wrong passwords: try again in {wait} s",
            f"密码错误次数过多，请 {wait} 秒后再试",
            status_code=429,
            retry_after_s=wait,
        )
    matches = password_matches(row.password_hash if row is not None else None, password)
    if row is None or not matches or not row.active:
        reason = "unknown_user" if row is None else "wrong_password" if not matches else "disabled"
        _failed(session, row.id if row is not None else None, tried, reason, now=now)
        raise _bad_credentials()
    staff = session.get(Staff, row.id, with_for_update=True, populate_existing=True)
    if staff is None or not staff.active:  # disabled (or deleted) since the check above
        session.rollback()
        raise _bad_credentials()
    staff.last_login_at = now
    staff.failed_logins = 0
    role = Role(staff.role)
    refresh, expires_at = _issue_refresh(session, settings, staff, uuid.uuid4().hex, client=client, now=now)
    record(session, f"{role.value}:{staff.username}", "staff.login", "staff", staff.id, tried)
    session.commit()
    access = issue_token(settings, role=role, subject_id=staff.id, name=staff.username, generation=staff.session_epoch)
    return SignedIn(access, role, refresh, expires_at)


def _failed(session: Session, staff_id: int | None, tried: dict[str, str], reason: str, *, now: datetime) -> None:
    if staff_id is not None and reason != "locked":
        counted = 1 if reason == "wrong_password" else 0
        session.execute(
            update(Staff)
            .where(Staff.id == staff_id)
            .values(failed_logins=Staff.failed_logins + counted, last_failed_login_at=now)
        )
    record(session, "anonymous", "staff.login_failed", "staff", staff_id or "-", {**tried, "reason": reason})
    session.commit()


def _issue_refresh(
    session: Session,
    settings: Settings,
    staff: Staff,
    family: str,
    *,
    client: str,
    now: datetime,
    expires_at: datetime | None = None,
) -> tuple[str, datetime]:
    token = secrets.token_urlsafe(32)
    expires_at = expires_at or now + timedelta(hours=settings.refresh_ttl_hours)
    session.add(
        RefreshToken(
            staff_id=staff.id,
            family=family,
            token_hash=_digest(token),
            session_epoch=staff.session_epoch,
            issued_at=now,
            expires_at=expires_at,
            client=client[:64],
        )
    )
    return token, expires_at


def _refused(code: str, en: str, zh: str) -> Unauthorized:
    return Unauthorized(code, f"{en}: sign in again", f"{zh}，请重新登录")


def refresh(session: Session, settings: Settings, token: str, *, client: str, now: datetime) -> SignedIn:
    """A new access token and a new refresh token for a live refresh token (rotation); commits."""
    found = session.scalar(select(RefreshToken.staff_id).where(RefreshToken.token_hash == _digest(token)))
    if found is None:
        raise _refused("invalid_refresh_token", "Unknown refresh token", "刷新令牌无效")
    # Locks in the order everyone takes them: the member, then their tokens (see `end_sessions`).
    staff = session.get(Staff, found, with_for_update=True, populate_existing=True)
    row = session.scalar(
        select(RefreshToken)
        .where(RefreshToken.token_hash == _digest(token))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if staff is None or row is None:
        raise _refused("invalid_refresh_token", "Unknown refresh token", "刷新令牌无效")
    if row.revoked_at is not None or row.session_epoch != staff.session_epoch:
        raise _refused("refresh_revoked", "This sign-in was ended", "该登录已结束")
    if row.rotated_at is not None:
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.family == row.family, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        detail = {"username": staff.username, "client": client[:64], "family_client": row.client}
        record(session, "anonymous", "staff.refresh_reuse", "staff", staff.id, detail)
        session.commit()
        raise _refused(
            "refresh_reused",
            "This refresh token was already used: the sign-in is ended",
            "刷新令牌已被使用，该登录已结束",
        )
    if row.expires_at <= now:
        raise _refused("refresh_expired", "This sign-in has expired", "登录已过期")
    if not staff.active:
        raise _refused("staff_disabled", "This account is disabled", "该账号已停用")
    row.rotated_at = now
    new, expires_at = _issue_refresh(
        session, settings, staff, row.family, client=client, now=now, expires_at=row.expires_at
    )
    session.commit()
    role = Role(staff.role)
    access = issue_token(settings, role=role, subject_id=staff.id, name=staff.username, generation=staff.session_epoch)
    return SignedIn(access, role, new, expires_at)


def logout(session: Session, actor: Principal, staff_id: int, *, forced: bool, now: datetime) -> Staff:
    """End every session of a member (their own sign-out, or an admin's forced logout); audited, commits.

    A forced logout of oneself is refused (409 `own_sessions`): a mis-click on one's own row in the staff list
    would cut an admin off mid-task; `POST /auth/logout` is the way to sign oneself out."""
    if forced and actor.subject_id == staff_id:
        raise Conflict(
            "own_sessions",
            "To end your own sessions, sign out (POST /auth/logout)",
            "结束自己的会话请退出登录（POST /auth/logout）",
        )
    staff = session.get(Staff, staff_id, with_for_update=True, populate_existing=True)
    if staff is None:
        raise not_found("Staff", "员工", staff_id)
    end_sessions(session, staff, now=now)
    action = "staff.force_logout" if forced else "staff.logout"
    record(session, actor, action, "staff", staff.id, {"username": staff.username})
    session.commit()
    return staff


def refresh_sessions(session: Session, staff_id: int, now: datetime) -> int:
    """How many sign-ins of the member can still be refreshed (each family has one live token)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .where(
                RefreshToken.staff_id == staff_id,
                RefreshToken.rotated_at.is_(None),
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > now,
            )
        )
        or 0
    )
