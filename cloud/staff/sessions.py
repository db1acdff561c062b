"""Staff sign-in, refresh tokens and sign-out; every sign-in, successful or not, in the audit log.

- Sign-in (`POST /auth/token`, OAuth2 password form): answers an access token (JWT, `jwt_ttl_minutes`) and a
  refresh token: 32 random bytes, only its SHA-256 stored, good until `refresh_ttl_hours` (7 days) after the
  password was typed: refreshing never extends that, so a counter PC left signed in asks for the password weekly.
- Refresh (`POST /auth/refresh`) rotates: the token presented is used up and a new one of the same sign-in (the
  family) comes back with the new access token. A used-up token presented again means two holders (a copy was
  stolen, or a client replayed a lost answer): both must sign in again, so every session of the member ends
  (`end_sessions`: access tokens are only tracked by the member's epoch, so the one already issued to whoever
  refreshed first cannot end alone; the member's other devices sign in again too), audited (`staff.refresh_reuse`).
  Refused while the member is disabled (and fine again once re-enabled, like their access tokens), and for good
  after a forced logout or a password reset (the family is revoked).
- Sign-out (`POST /auth/logout`) ends all of the member's sessions, on every device: access tokens are not
  tracked one by one (no lookup per request), only the member's session epoch (`cloud.deps._StaffCheck`).
- Audit: `staff.login` (actor the member) and `staff.login_failed` (actor `anonymous`) with the username tried
  (64 characters at most), the client's address and the reason: `unknown_user`, `wrong_password`, `disabled` or
  `locked`. Never the password. The client always gets the same 401 `bad_credentials`, except:
- Slow-down, counted per username AND client address (`LoginFailures`): after `LOCK_AFTER` (5) wrong passwords
  in a row for one username from one address, that address's sign-ins as that username are refused (429
  `too_many_attempts`, password not even checked) until `LOCK_S` (60 s) after its last wrong one: about one guess
  a minute per address. The member at their own counter PC (another address) still signs in, whoever guesses
  elsewhere: one wrong password a minute from anywhere cannot lock them out. Not chosen: letting a right password
  through a per-username lock, since then the lock answers "right" or "wrong" for every guess at argon2 speed (an
  oracle), which is no slow-down at all. The price: a guesser with many addresses gets 5 + 1/min on each.
  Each attempt claims its guess before argon2 runs (one conditional upsert ... RETURNING, so N parallel guesses
  cannot all pass the check); the right password takes the claim back (deletes that address's count), and a
  password reset deletes them all. The first refused attempt of a lock window is audited (`locked`), the rest are
  not (they cost no argon2, so they would flood the log). Unknown usernames are not counted (nothing to guess),
  so a locked answer tells that a username exists: staff names are not secrets.
- The address is the one uvicorn gives. Behind the reverse proxy of `deploy/` (same host, reaching 127.0.0.1),
  uvicorn's defaults (proxy headers on, `FORWARDED_ALLOW_IPS` 127.0.0.1) take it from the proxy's
  `X-Forwarded-For`; a proxy that does not set that header makes every client 127.0.0.1 in the audit, and the
  slow-down then counts per username only (safe against guessing, but one guesser locks the member out).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import dialect_insert
from cloud.deps import Principal, Role
from cloud.errors import Conflict, DomainError, Unauthorized, not_found
from cloud.settings import Settings
from cloud.staff.models import LoginFailures, RefreshToken, Staff
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
    """Claim the attempt, check the password outside any transaction (argon2 takes ~50 ms), then record the
    outcome and issue both tokens; commits."""
    tried = {"username": username[:64], "client": client[:64]}
    row = session.execute(select(Staff.id, Staff.password_hash).where(Staff.username == username)).first()
    if row is None:
        session.rollback()
        password_matches(None, password)
        _failed(session, None, tried, "unknown_user", now=now)
        raise _bad_credentials()
    _claim(session, row.id, tried["client"], tried, now=now)
    if not password_matches(row.password_hash, password):
        _failed(session, row.id, tried, "wrong_password", now=now)
        raise _bad_credentials()
    staff = session.get(Staff, row.id, with_for_update=True, populate_existing=True)
    if staff is None or staff.password_hash != row.password_hash:  # reset (or deleted) since it was read
        session.rollback()
        _failed(session, row.id, tried, "wrong_password", now=now)  # the old password is a wrong one now
        raise _bad_credentials()
    session.execute(  # the right password: that was no guess, and this address's count starts over
        delete(LoginFailures).where(LoginFailures.staff_id == staff.id, LoginFailures.client == tried["client"])
    )
    if not staff.active:
        _failed(session, staff.id, tried, "disabled", now=now)
        raise _bad_credentials()
    staff.last_login_at = now
    staff.failed_logins = 0
    role = Role(staff.role)
    refresh, expires_at = _issue_refresh(session, settings, staff, uuid.uuid4().hex, client=client, now=now)
    record(session, f"{role.value}:{staff.username}", "staff.login", "staff", staff.id, tried)
    session.commit()
    access = issue_token(settings, role=role, subject_id=staff.id, name=staff.username, generation=staff.session_epoch)
    return SignedIn(access, role, refresh, expires_at)


def _claim(session: Session, staff_id: int, client: str, tried: dict[str, str], *, now: datetime) -> None:
    """Count this attempt as a wrong password of (member, address) before it is checked, in one statement that
    refuses it while that address is locked (so parallel guesses take turns on the row); commits. Refused: 429,
    audited on the first refusal of the lock window only."""
    key = (LoginFailures.staff_id == staff_id, LoginFailures.client == client)
    claimed = session.execute(
        dialect_insert(session)(LoginFailures)
        .values(staff_id=staff_id, client=client, failed=1, last_failed_at=now, locked_audited=False)
        .on_conflict_do_update(
            index_elements=[LoginFailures.staff_id, LoginFailures.client],
            set_={"failed": LoginFailures.failed + 1, "last_failed_at": now, "locked_audited": False},
            where=(LoginFailures.failed < LOCK_AFTER) | (LoginFailures.last_failed_at <= now - timedelta(0, LOCK_S)),
        )
        .returning(LoginFailures.failed)
    ).first()
    if claimed is not None:
        session.commit()
        return
    last = session.scalar(select(LoginFailures.last_failed_at).where(*key)) or now
    first_refusal = session.execute(
        update(LoginFailures)
        .where(*key, LoginFailures.locked_audited.is_(False))
        .values(locked_audited=True)
        .returning(LoginFailures.client)
    ).first()
    if first_refusal is not None:
        record(session, "anonymous", "staff.login_failed", "staff", staff_id, {**tried, "reason": "locked"})
    session.commit()
    wait = max(1, LOCK_S - int((now - last).total_seconds()))
    raise DomainError(
        "too_many_attempts",
        f"Too many wrong passwords: try again in {wait} s",
        f"密码错误次数过多，请 {wait} 秒后再试",
        status_code=429,
        retry_after_s=wait,
    )


def _failed(session: Session, staff_id: int | None, tried: dict[str, str], reason: str, *, now: datetime) -> None:
    """Audit a refused sign-in; a wrong password also counts in the member's row (shown to admins, `failed_logins`
    in a row from any address: the slow-down itself counts per address, `_claim`); commits."""
    if staff_id is not None:
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
        end_sessions(session, staff, now=now)  # the access token of whoever refreshed first too
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
