"""Dependency aliases every route uses: SessionDep, SettingsDep, and `require(...)` for who may call."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import jwt
from fastapi import Depends, Path, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from cloud.errors import Forbidden, Unauthorized
from cloud.settings import Settings


class Role(StrEnum):
    ADMIN = "admin"
    CASHIER = "cashier"
    FINANCE = "finance"
    GATE_TECH = "gate_tech"
    CUSTOMER = "customer"  # a signed-in mini-program customer, not staff


STAFF_ROLES = (Role.ADMIN, Role.CASHIER, Role.FINANCE, Role.GATE_TECH)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns on PostgreSQL
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a staff member (with a role) or a customer."""

    role: Role
    subject_id: int
    name: str

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.name}"


def principal_from_token(token: str | None, settings: Settings) -> Principal:
    if not token:
        raise Unauthorized("not_authenticated", "Sign in first", "请先登录")
    try:
        claims = jwt.decode(token, settings.jwt_secret.get_secret_value(), algorithms=["HS256"])
        return Principal(role=Role(claims["role"]), subject_id=int(claims["sub"]), name=str(claims["name"]))
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise Unauthorized("invalid_token", "The session is invalid or expired", "登录已失效，请重新登录") from exc


class require:
    """A dependency that lets only the given roles through; routes declare who may call them."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, settings: SettingsDep, token: Annotated[str | None, Depends(oauth2)]) -> Principal:
        # async: checking a JWT is a few microseconds of CPU, not worth a hop to the thread pool
        principal = principal_from_token(token, settings)
        if principal.role not in self.roles:
            raise Forbidden(
                "forbidden",
                f"Role {principal.role.value} may not do this",
                f"角色 {principal.role.value} 无此权限",
            )
        return principal


def public() -> None:
    """Marks a route as open to anyone (login, payment notifications): declared, not forgotten."""
