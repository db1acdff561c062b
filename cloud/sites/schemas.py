from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CODE = r"^[a-z0-9][a-z0-9-]{0,31}$"


class SiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=CODE)
    name: str = Field(min_length=1, max_length=100)
    timezone: str = Field(default="Asia/Shanghai", max_length=64)


class SiteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name: str
    timezone: str


class GateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=CODE)
    name: str = Field(min_length=1, max_length=100)
    direction: Literal["in", "out"] = "in"


class GateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    site_id: int
    code: str
    name: str
    direction: str
    username: str


class GateCredentials(GateOut):
    """Returned once, when the gate is registered or its secret rotated; the secret is not stored."""

    secret: str
