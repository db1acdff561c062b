from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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


class StaffOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    active: bool
