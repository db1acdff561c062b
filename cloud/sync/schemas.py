from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class GateSyncOut(BaseModel):
    gate_id: int
    code: str
    name: str
    state: Literal["online", "offline", "unknown"] = Field(description="unknown: the gate never reported")
    feed_seq: int | None = Field(description="Last feed sequence the gate applied")
    outbox_depth: int | None = Field(description="Passage events the gate holds that the cloud has not confirmed")
    last_seen: datetime | None = Field(description="When the cloud last received the gate's status")
    reported_at: datetime | None = Field(description="The time the gate put on that status (its own clock)")


class SiteSyncOut(BaseModel):
    site_id: int
    site_code: str
    feed_seq: int = Field(description="The site feed's last sequence: a gate below it is catching up")
    gates: list[GateSyncOut]
