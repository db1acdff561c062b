"""Each gate's last reported status: stored as it arrives, shown against the site's feed head, with why
a gate needs a technician (`attention`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import utcnow
from cloud.faces.deletions import confirm as confirm_deletions
from cloud.sites.models import Gate
from cloud.sites.service import get_site
from cloud.sync import checksums, snapshot
from cloud.sync.feed import head_seq
from cloud.sync.inbound import StatusIn
from cloud.sync.models import FeedChange, GateStatusRecord
from cloud.sync.schemas import Attention, GateSyncOut, SiteSyncOut
from models.ops import GateHealth

SILENT_AFTER = timedelta(seconds=90)  # online, but no status for 3 of the gates' status intervals (30 s)
BEHIND_AFTER = timedelta(seconds=60)  # a gate still lacking a change published this long ago is stuck
BACKLOG_S = 300  # an unconfirmed passage older than this: the gate's events are not getting through
DISK_LOW_MB = 500


def store_status(session: Session, m: StatusIn, ids: tuple[int, int], now: datetime) -> None:
    site_id, gate_id = ids
    row = session.get(GateStatusRecord, gate_id)
    if row is None:
        row = GateStatusRecord(gate_id=gate_id, site_id=site_id, feed_seq=0, outbox_depth=0)
        session.add(row)
    row.state = m.state
    row.updated_at = now
    # A Last Will is composed when the gate connects, so its figures are older than the last online
    # status's: an offline status brings figures only when it is newer (a clean shutdown's).
    status = m.status
    if status is None:
        return
    newer = status.at is not None and (row.reported_at is None or status.at > row.reported_at)
    if m.state == "online" or newer:
        # Face deletions this gate has now applied are confirmed, once, as of its status's time.
        before = row.feed_seq or 0
        confirm_deletions(session, site_id, gate_id, before, status.feed_seq, status.at or now)
        row.feed_seq = status.feed_seq
        row.outbox_depth = status.outbox_depth
        row.reported_at = status.at or row.reported_at
        if status.checksum is not None and status.checksum_seq is not None:
            row.checksum, row.checksum_seq = status.checksum, status.checksum_seq
        row.problem = status.problem
        row.health = status.health.model_dump(mode="json") if status.health is not None else None


@dataclass(frozen=True, slots=True)
class Seen:
    """What the cloud knows of a gate, for `attention`."""

    state: str  # online, offline, unknown (never reported)
    last_seen: datetime | None  # the cloud's clock
    reported_at: datetime | None  # the gate's clock
    lag: int | None
    missing_since: datetime | None  # when the first change this gate lacks was published (the cloud's clock)
    in_step: bool | None
    problem: str | None
    health: GateHealth | None


def attention(gate: Seen, now: datetime) -> list[Attention]:
    """Why this gate needs a technician, in a fixed order; empty: it does not.

    Devices, backlog and disk are judged on the health the gate last reported, also once it is offline:
    what it said last is still the best guess of what the technician will find.
    """
    codes: list[Attention] = []
    if gate.state == "unknown" or gate.reported_at is None:
        codes.append("never_reported")
    if gate.state == "offline":
        codes.append("offline")
    if gate.state == "online" and gate.last_seen is not None and now - gate.last_seen > SILENT_AFTER:
        codes.append("silent")
    if gate.lag and gate.missing_since is not None and now - gate.missing_since > BEHIND_AFTER:
        # Judged by the change it lacks, not by its status's age: a live gate reports every 30 s
        # even while it is stuck, and a quiet feed that just moved (or a publisher that is behind) is
        # no gate's fault yet.
        codes.append("behind")
    h = gate.health
    if h is not None and h.oldest_unacked_s is not None and h.oldest_unacked_s > BACKLOG_S:
        codes.append("backlog")
    if gate.in_step is False:
        codes.append("not_in_step")
    if gate.problem:
        codes.append("problem")
    if h is not None:
        devices: list[tuple[bool, Attention]] = [
            (h.barrier == "error", "barrier_fault"),
            (h.camera == "error", "camera_error"),
            (h.scanner == "error", "scanner_error"),
            (h.disk_free_mb is not None and h.disk_free_mb < DISK_LOW_MB, "disk_low"),
            (h.fire_alarm, "fire_alarm"),
            (h.keep_open, "keep_open"),
        ]
        codes.extend(code for on, code in devices if on)
    return codes


def _published_at(session: Session, site_id: int, seq: int) -> datetime | None:
    """When the broker took feed change `seq` (None: not yet published, which is the cloud's delay, no gate's)."""
    return session.scalar(select(FeedChange.published_at).where(FeedChange.site_id == site_id, FeedChange.seq == seq))


def site_sync_status(
    session: Session, site_id: int, *, verify: bool = False, now: datetime | None = None
) -> SiteSyncOut:
    """Each gate of the site with its last reported status and health, against the site's feed head, and
    which gates need a technician.

    `in_step` compares the gate's checksum with the cloud's last computed one (`cloud.sync.checksums`) when
    both were taken at the same feed sequence; `verify` sums the cloud's ticket set first (one pass over
    the site's tickets, kept as the last one), so a gate whose checksum is at the head is compared now.
    When the cloud cannot compare, the gate's own verdict against the checksum its feed head carried
    (`health.in_step`) is shown.
    """
    site = get_site(session, site_id)
    fresh = None
    if verify:
        summed = snapshot.site_checksum(session, site.id)
        head, fresh = summed.seq, summed.checksum
    else:
        head = head_seq(session, site.id)
    now = now or utcnow()
    last = checksums.cached(session, site.id)
    cloud_checksum = (last.seq, last.checksum) if last is not None else None
    rows = session.execute(
        select(Gate, GateStatusRecord)
        .outerjoin(GateStatusRecord, GateStatusRecord.gate_id == Gate.id)
        .where(Gate.site_id == site_id)
        .order_by(Gate.id)
    )
    gates = []
    for gate, status in rows:
        seen = Seen("unknown", None, None, None, None, None, None, None)
        reported: dict[str, Any] = {
            "state": "unknown",
            "feed_seq": None,
            "outbox_depth": None,
            "last_seen": None,
            "reported_at": None,
        }
        if status is not None:
            health = GateHealth.model_validate(status.health) if status.health is not None else None
            in_step = health.in_step if health is not None else None
            if cloud_checksum is not None and status.checksum is not None and status.checksum_seq == cloud_checksum[0]:
                in_step = status.checksum == cloud_checksum[1]
            lag = max(head - status.feed_seq, 0) if status.reported_at is not None else None
            missing_since = _published_at(session, site.id, status.feed_seq + 1) if lag else None
            seen = Seen(
                status.state, status.updated_at, status.reported_at, lag, missing_since, in_step, status.problem, health
            )
            reported = {
                "state": status.state,
                "feed_seq": status.feed_seq,
                "outbox_depth": status.outbox_depth,
                "last_seen": status.updated_at,
                "reported_at": status.reported_at,
                "checksum": status.checksum,
                "checksum_seq": status.checksum_seq,
                "problem": status.problem,
                "in_step": in_step,
                "health": health,
                "lag": lag,
            }
        codes = attention(seen, now)
        gates.append(
            GateSyncOut(
                gate_id=gate.id,
                code=gate.code,
                name=gate.name,
                attention=codes,
                needs_technician=bool(codes),
                **reported,
            )
        )
    return SiteSyncOut(
        site_id=site.id,
        site_code=site.code,
        feed_seq=head,
        checksum=fresh,
        gates=gates,
        needing_technician=[g.code for g in gates if g.needs_technician],
    )
