from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud.deps import Role


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    role: Role
    expires_in: int = Field(description="Seconds the access token lives")
    refresh_token: str = Field(description="Opaque; POST it to /auth/refresh for a new access token (once: rotated)")
    refresh_expires_at: datetime = Field(description="When this sign-in ends; then the password again")


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=200)


class StaffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=10, max_length=200)
    role: Role


class StaffPatch(BaseModel):
    """Any of: enable or disable the account, set a new password, change the role (at least one)."""

    model_config = ConfigDict(extra="forbid")

    active: bool | None = None
    password: str | None = Field(default=None, min_length=10, max_length=200)
    role: Role | None = None

    @model_validator(mode="after")
    def _something(self) -> StaffPatch:
        if self.active is None and self.password is None and self.role is None:
            raise ValueError("give at least one of active, password, role")
        return self


class StaffOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    active: bool


class StaffDetail(StaffOut):
    created_at: datetime
    last_login_at: datetime | None
    last_failed_login_at: datetime | None
    failed_logins: int = Field(description="Wrong passwords in a row since the last sign-in (5: slowed down)")
    sessions_ended_at: datetime | None = Field(description="The last forced logout, sign-out or password reset")
    refresh_sessions: int = Field(description="Sign-ins that can still be refreshed")
