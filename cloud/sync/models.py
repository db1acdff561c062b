"""Tables of sync: each site's ordered change feed, the passages gates report, and their last status."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, UtcDateTime, utcnow
from models.sync import PROBLEM_MAX


def _new_epoch() -> str:
    return secrets.token_hex(8)


class SiteFeedHead(Base):
    """The last sequence number a site's feed gave out; its row is the per-site lock appends take turns on."""

    __tablename__ = "site_feed_heads"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    # Names this run of the feed: a database restored from a backup starts a new one (see migration 0005),
    # so gates ahead of the restored sequence know to fetch a snapshot instead of ignoring "repeats".
    epoch: Mapped[str] = mapped_column(String(32), default=_new_epoch, server_default="")


class FeedChange(Base):
    """One change of a site's feed; `seq` counts 1, 2, 3 ... per site without gaps."""

    __tablename__ = "feed_changes"
    __table_args__ = (UniqueConstraint("site_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)  # the FeedMessage.change, as JSON
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Set once the broker acknowledged the publication (PUBACK); NULL rows are the publisher's work.
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)


class GatePassage(Base):
    """A passage event as the gate made it, stored once per (sending gate, gate-made `event_id`).

    The sending gate is the topic the broker authenticated, so another gate's login cannot make this
    gate's event a duplicate. An event id stored under one gate is not stored again under another (a
    copy: see `cloud.sync.service`); the constraint leads with `event_id`, which is how events are looked up.
    """

    __tablename__ = "gate_passages"
    __table_args__ = (UniqueConstraint("event_id", "gate_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    gate_id: Mapped[int] = mapped_column(ForeignKey("gates.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)  # the original scan time at the gate
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    direction: Mapped[str] = mapped_column(String(3))
    outcome: Mapped[str] = mapped_column(String(5))
    code: Mapped[str] = mapped_column(String(32))
    ticket_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # The product of the site's ticket `ticket_id` names, set when stored (None: no ticket of the site): the
    # report of entries per product groups a season's passages without joining a million of them to tickets.
    product_id: Mapped[int | None] = mapped_column(Integer)
    passed: Mapped[bool] = mapped_column(Boolean)
    counted: Mapped[bool] = mapped_column(Boolean)
    credential: Mapped[str] = mapped_column(String(8))
    face_distance: Mapped[float | None] = mapped_column(Float)  # credential "face": the matched template's distance
    # Why this passage should not have happened, found when it arrived ("over_use": more counted entries
    # than the ticket allows, e.g. one single-use ticket admitted offline at two gates; "after_revocation").
    conflict: Mapped[str | None] = mapped_column(String(20), index=True)


class GateStatusRecord(Base):
    """The last status a gate reported (retained on the broker, Last Will `offline`)."""

    __tablename__ = "gate_status"

    gate_id: Mapped[int] = mapped_column(ForeignKey("gates.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    state: Mapped[str] = mapped_column(String(8))
    feed_seq: Mapped[int] = mapped_column(Integer, default=0)
    outbox_depth: Mapped[int] = mapped_column(Integer, default=0)
    reported_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the gate's own clock
    checksum: Mapped[str | None] = mapped_column(String(64))  # the gate's ticket-set checksum ...
    checksum_seq: Mapped[int | None] = mapped_column(Integer)  # ... when its feed was at this sequence
    problem: Mapped[str | None] = mapped_column(String(PROBLEM_MAX))  # what the gate says is wrong with its sync
    health: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # its last `models.ops.GateHealth`, as JSON
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)  # the cloud's: last seen


class SiteChecksum(Base):
    """The site's ticket-set checksum the cloud last computed (a snapshot, a verify, the periodic recompute),
    and the feed sequence it was taken at: what every `FeedHead` carries, and gates' checksums are compared with."""

    __tablename__ = "site_checksums"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    checksum: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)  # when it was computed (the cloud's clock)


class QuarantinedEvent(Base):
    """A passage event a gate sent that cannot be true: kept as evidence, never applied.

    `site_code`/`gate_code` are the topic's (what the broker authenticated), `site_id` the topic's site
    when it is registered. One row per event id and sending gate: the same event again is a no-op.
    Reason `id_reused`: an event id another gate's passage keeps (one gate copied the other's event).
    """

    __tablename__ = "quarantined_events"
    __table_args__ = (UniqueConstraint("event_id", "site_code", "gate_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    site_code: Mapped[str] = mapped_column(String(32))
    gate_code: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(String(120))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(String(20), index=True)
    event: Mapped[str] = mapped_column(Text)  # the event's JSON as received, cut at QUARANTINE_EVENT_MAX characters


class DeadLetter(Base):
    """What a gate sent that the cloud refused unread: malformed, over its bounds, on the wrong topic.

    Not a quarantined event (well formed, judged impossible): there is no event here, only the raw text,
    cut at `cloud.sync.dead_letters.RAW_MAX` characters. `site_code`/`gate_code` are the topic's.
    One row per (topic's site, gate, `fingerprint`): the event id when one could be read, else a hash
    of the raw text; the same again counts in `times`. At most
    `cloud.sync.dead_letters.DEAD_LETTERS_PER_GATE` rows per gate, plus its `overflow` row.
    """

    __tablename__ = "dead_letters"
    __table_args__ = (UniqueConstraint("site_code", "gate_code", "fingerprint"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    site_code: Mapped[str] = mapped_column(String(32))
    gate_code: Mapped[str] = mapped_column(String(32))
    fingerprint: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    reason: Mapped[str] = mapped_column(String(32), index=True)
    detail: Mapped[str] = mapped_column(String(200))
    raw: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)  # the first time
    last_received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    times: Mapped[int] = mapped_column(Integer, default=1)
