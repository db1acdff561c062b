from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud.deps import Role


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    role: Role


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
