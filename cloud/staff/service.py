"""Staff accounts, password hashing (argon2) and JWT sessions."""

from __future__ import annotations

from datetime import timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import add_unique, one_at_a_time, utcnow
from cloud.deps import STAFF_ROLES, Principal, Role
from cloud.errors import Conflict, DomainError, Unauthorized, not_found
from cloud.settings import Settings
from cloud.staff import technicians
from cloud.staff.models import Staff

_hasher = PasswordHasher()
# Verifying against a dummy hash when the user does not exist keeps login timing uniform.
_DUMMY_HASH = _hasher.hash("dummy password for timing")


def issue_token(settings: Settings, *, role: Role, subject_id: int, name: str) -> str:
    now = utcnow()
    claims = {
        "sub": str(subject_id),
        "role": role.value,
        "name": name,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=settings.jwt_ttl_minutes)).timestamp()),
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def authenticate(session: Session, settings: Settings, username: str, password: str) -> tuple[str, Role]:
    staff = session.scalar(select(Staff).where(Staff.username == username))
    try:
        _hasher.verify(staff.password_hash if staff else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        staff = None
    if staff is None or not staff.active:
        raise Unauthorized("bad_credentials", "Wrong username or password", "用户名或密码错误")
    role = Role(staff.role)
    return issue_token(settings, role=role, subject_id=staff.id, name=staff.username), role


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
        changed["password"] = "changed"
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
