from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from models.ops import GateHealth

# Why a gate needs a technician (`cloud.sync.gate_status.attention` says when each applies).
Attention = Literal[
    "never_reported",
    "offline",
    "silent",
    "behind",
    "backlog",
    "not_in_step",
    "problem",
    "barrier_fault",
    "camera_error",
    "scanner_error",
    "disk_low",
    "fire_alarm",
    "keep_open",
]


class GateSyncOut(BaseModel):
    gate_id: int
    code: str
    name: str
    state: Literal["online", "offline", "unknown"] = Field(description="unknown: the gate never reported")
    feed_seq: int | None = Field(description="Last feed sequence the gate applied")
    outbox_depth: int | None = Field(description="Passage events the gate holds that the cloud has not confirmed")
    last_seen: datetime | None = Field(description="When the cloud last received the gate's status")
    reported_at: datetime | None = Field(description="The time the gate put on that status (its own clock)")
    checksum: str | None = Field(default=None, description="The gate's ticket-set checksum at `checksum_seq`")
    checksum_seq: int | None = Field(default=None, description="The feed sequence the gate's checksum was taken at")
    problem: str | None = Field(
        default=None, description="What the gate last said is wrong with its sync (e.g. its name is not in the roster)"
    )
    in_step: bool | None = Field(
        default=None,
        description="The gate's checksum equals the cloud's last one at the same feed sequence (True) or not "
        "(False); with verify the cloud's is summed now, at the feed head. None: not comparable (another "
        "sequence); then the gate's own comparison with the checksum in the feed head, when it reported one",
    )
    health: GateHealth | None = Field(
        default=None,
        description="Devices, backlog and disk, as the gate last reported them (None: never, or an older gate)",
    )
    lag: int | None = Field(
        default=None, description="Feed changes the gate has yet to apply: the feed head minus its feed_seq"
    )
    attention: list[Attention] = Field(
        default_factory=list,
        description="Why the gate needs a technician: never_reported; offline; silent (online, but no status for "
        "90 s); behind (lag, and its status is over 60 s old); backlog (an unconfirmed passage over 300 s old); "
        "not_in_step; problem (its sync says something is wrong); barrier_fault, camera_error, scanner_error; "
        "disk_low (under 500 MB); fire_alarm; keep_open",
    )
    needs_technician: bool = Field(default=False, description="attention is not empty")


class SiteSyncOut(BaseModel):
    site_id: int
    site_code: str
    feed_seq: int = Field(description="The site feed's last sequence: a gate below it is catching up")
    checksum: str | None = Field(
        default=None, description="With verify: the cloud's ticket-set checksum of the site at `feed_seq`"
    )
    gates: list[GateSyncOut]
    needing_technician: list[str] = Field(
        default_factory=list, description="The codes of the gates that need a technician (their attention is not empty)"
    )


# Why the cloud holds a well-formed event back: one list for the code that decides it and the API.
QuarantineReason = Literal[
    "unknown_gate", "wrong_site", "gate_mismatch", "future", "too_old", "unknown_ticket", "before_sale", "id_reused"
]


class QuarantinedEventOut(BaseModel):
    event_id: uuid.UUID
    site_code: str = Field(description="The site of the topic it came on (what the broker authenticated)")
    gate_code: str = Field(description="The gate of the topic it came on")
    topic: str
    received_at: datetime
    reason: QuarantineReason = Field(
        description="unknown_gate: the topic's gate is not registered; wrong_site / gate_mismatch: the event "
        "names another site / gate than its topic; future: dated more than the clock skew ahead; too_old: "
        "older than the longest a gate may hold an event; unknown_ticket: counts an entry on a ticket that "
        "is not one of the site's (e.g. another site's); before_sale: dated before its ticket was issued; "
        "id_reused: another gate's event already holds this id (a copy)"
    )
    event: str = Field(description="The event's JSON as received (cut at 4000 characters)")


class DeadLetterOut(BaseModel):
    event_id: uuid.UUID | None = Field(description="The event's id, when one could be read from the raw text")
    site_code: str = Field(description="The site of the topic it came on (what the broker authenticated)")
    gate_code: str = Field(description="The gate of the topic it came on")
    reason: Literal["malformed", "too_long", "out_of_range", "wrong_gate", "wrong_topic", "overflow"] = Field(
        description="malformed: not JSON, or not a valid event or status; too_long: a field or a list over "
        "its bound; out_of_range: a figure out of its range; wrong_gate: a status naming another site or "
        "gate than its topic; wrong_topic: a message on a gate topic that is neither events nor status; "
        "overflow: the gate's one row counting (`times`) the letters not kept once it had 1000 others"
    )
    detail: str = Field(description="What was wrong, in short (at most 200 characters)")
    raw: str = Field(
        description="The message or batch item as received (cut at 4096 characters; an undecodable byte or a "
        "NUL written as a \\xNN escape; a batch item re-serialised as JSON, its characters unescaped)"
    )
    received_at: datetime = Field(description="When it first came")
    last_received_at: datetime = Field(description="When it last came")
    times: int = Field(description="How often it came")
