"""Staff accounts, password hashing (argon2) and JWT sessions."""

from __future__ import annotations

from datetime import timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import add_unique, utcnow
from cloud.deps import STAFF_ROLES, Principal, Role
from cloud.errors import Conflict, DomainError, Unauthorized
from cloud.settings import Settings
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
    session.commit()
    return staff


def list_staff(session: Session) -> list[Staff]:
    return list(session.scalars(select(Staff).order_by(Staff.id)))
