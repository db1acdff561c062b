"""Staff accounts, password hashing (argon2) and JWT sessions."""

from __future__ import annotations

from datetime import datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import add_unique, one_at_a_time, utcnow
from cloud.deps import STAFF_ROLES, Principal, Role
from cloud.errors import Conflict, DomainError, not_found
from cloud.settings import Settings
from cloud.staff import technicians
from cloud.staff.models import LoginFailures, RefreshToken, Staff

_hasher = PasswordHasher()
# Verifying against a dummy hash when the user does not exist keeps login timing uniform.
_DUMMY_HASH = _hasher.hash("dummy password for timing")


def issue_token(settings: Settings, *, role: Role, subject_id: int, name: str, generation: int = 0) -> str:
    """An access token (JWT, `jwt_ttl_minutes`); a staff member's carries their session epoch as `gen`."""
    now = utcnow()
    claims = {
        "sub": str(subject_id),
        "role": role.value,
        "name": name,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=settings.jwt_ttl_minutes)).timestamp()),
    }
    if generation:
        claims["gen"] = generation
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def password_matches(password_hash: str | None, password: str) -> bool:
    """Argon2 check; without a hash (no such user) a dummy one is checked, so both take as long."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def end_sessions(session: Session, staff: Staff, *, now: datetime) -> None:
    """Every access token of the member issued until now stops working (within `staff_recheck_s` in every
    process) and every refresh token is revoked. Not audited here, not committed: the caller does both."""
    staff.session_epoch += 1
    staff.sessions_ended_at = now
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.staff_id == staff.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def create_staff(session: Session, actor: Principal | str | None, username: str, password: str, role: Role) -> Staff:
    if role not in STAFF_ROLES:
        raise DomainError("bad_role", f"{role.value} is not a staff role", f"{role.value} 不是员工角色")
    taken = Conflict("username_taken", f"Username {username} is taken", f"用户名 {username} 已存在")
    if session.scalar(select(Staff.id).where(Staff.username == username)) is not None:
        raise taken
    staff = Staff(username=username, password_hash=_hasher.hash(password), role=role.value, active=True)
    add_unique(session, staff, taken)
    record(session, actor, "staff.create", "staff", staff.id, {"username": username, "role": role.value})
    if technicians.is_technician(staff.role, staff.active):
        technicians.announce(session)
    session.commit()
    return staff


def update_staff(
    session: Session,
    actor: Principal | str | None,
    staff_id: int,
    *,
    active: bool | None = None,
    password: str | None = None,
    role: Role | None = None,
) -> Staff:
    """Enable or disable an account, set its password, change its role; audited (never the password).

    A new password (an admin's reset) also ends the member's sessions (`end_sessions`) and clears their failed
    logins (the sign-in slow-down's counts too). Disabling only suspends: their tokens are refused while disabled
    and work again if re-enabled (a mistaken click costs nobody their shift); to end sessions for good, log the
    member out (`POST /staff/{id}/logout`).

    A change that touches the gate technicians (`cloud.staff.technicians`) sends every site's gates the
    new list in the same transaction. The last active admin cannot be disabled or given another role:
    nobody could then manage staff.
    """
    staff = session.get(Staff, staff_id, with_for_update=True)
    if staff is None:
        raise not_found("Staff", "员工", staff_id)
    if role is not None and role not in STAFF_ROLES:
        raise DomainError("bad_role", f"{role.value} is not a staff role", f"{role.value} 不是员工角色")
    was_technician = technicians.is_technician(staff.role, staff.active)
    was_admin = staff.active and staff.role == Role.ADMIN.value
    changed: dict[str, object] = {}
    if active is not None and active != staff.active:
        staff.active = changed["active"] = active
    if role is not None and role.value != staff.role:
        changed["role"] = {"from": staff.role, "to": role.value}
        staff.role = role.value
    if password is not None:
        staff.password_hash = _hasher.hash(password)
        staff.failed_logins = 0
        session.execute(delete(LoginFailures).where(LoginFailures.staff_id == staff.id))  # the slow-down's counts
        end_sessions(session, staff, now=utcnow())
        changed["password"] = "changed"  # which also ended the member's sessions
    if was_admin and not (staff.active and staff.role == Role.ADMIN.value):
        _keep_an_admin(session)
    if changed:
        record(session, actor, "staff.update", "staff", staff.id, {"username": staff.username, **changed})
    is_technician = technicians.is_technician(staff.role, staff.active)
    if was_technician != is_technician or (is_technician and "password" in changed):
        technicians.announce(session)
    session.commit()
    return staff


def _keep_an_admin(session: Session) -> None:
    """Refuse a change that leaves no active admin (two admins disabling each other at once take turns)."""
    session.flush()
    one_at_a_time(session, "staff.admins")
    admins = session.scalar(
        select(func.count()).select_from(Staff).where(Staff.role == Role.ADMIN.value, Staff.active.is_(True))
    )
    if not admins:
        raise Conflict(
            "last_admin",
            "This is the last active admin: enable or appoint another admin first",
            "这是最后一位在职管理员：请先启用或任命另一位管理员",
        )


def list_staff(session: Session) -> list[Staff]:
    return list(session.scalars(select(Staff).order_by(Staff.id)))
