from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from cloud.customers.models import Customer

PHONE = r"^1[3-9]\d{9}$"  # a mainland China mobile number
Phone = Annotated[str, Field(pattern=PHONE, examples=["13800138000"])]
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL in text)

_RESIDENT_ID = re.compile(r"^\d{17}[\dX]$")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def resident_id_ok(number: str) -> bool:
    """The GB 11643 check digit of an 18-character mainland resident ID."""
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17]


class WeChatLoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$", description="From wx.login()")


class CustomerIn(BaseModel):
    """A customer created at the ticket window by phone."""

    model_config = ConfigDict(extra="forbid")

    phone: Phone
    nickname: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64, pattern=PRINTABLE)] = ""


class CustomerOut(BaseModel):
    id: int
    phone: str | None
    nickname: str
    wechat_linked: bool = Field(description="Signed in through the mini-program at least once")
    created_at: datetime

    @classmethod
    def of(cls, customer: Customer) -> CustomerOut:
        return cls(
            id=customer.id,
            phone=customer.phone,
            nickname=customer.nickname,
            wechat_linked=customer.wechat_openid is not None,
            created_at=customer.created_at,
        )


class LoginOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    created: bool = Field(description="True when this login created the account")
    customer: CustomerOut


class HolderIn(BaseModel):
    """A named season-pass holder. Only the last 4 characters of the ID number are kept."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50, pattern=PRINTABLE)]
    id_number: str = Field(
        min_length=6,
        max_length=20,
        pattern=r"^[0-9A-Za-z]+$",
        description="Resident ID (checked) or passport/permit number; only its last 4 characters are stored",
    )

    @field_validator("id_number")
    @classmethod
    def _resident_id_checksum(cls, value: str) -> str:
        value = value.upper()
        if _RESIDENT_ID.match(value) and not resident_id_ok(value):
            raise ValueError("the check digit of this resident ID number is wrong")
        return value


class HolderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    id_number_last4: str
    created_at: datetime
