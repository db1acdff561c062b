"""Each gate's last reported status: stored as it arrives, shown against the site's feed head."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.faces.deletions import confirm as confirm_deletions
from cloud.sites.models import Gate
from cloud.sites.service import get_site
from cloud.sync import snapshot
from cloud.sync.feed import head_seq
from cloud.sync.inbound import StatusIn
from cloud.sync.models import GateStatusRecord
from cloud.sync.schemas import GateSyncOut, SiteSyncOut


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


def site_sync_status(session: Session, site_id: int, *, verify: bool = False) -> SiteSyncOut:
    """Each gate of the site with its last reported status, against the site's feed head.

    `verify` also sums the cloud's ticket set (one pass over the site's tickets) and says, of each
    gate whose checksum was taken at the feed head, whether its ticket set equals the cloud's.
    """
    site = get_site(session, site_id)
    cloud_checksum = None
    if verify:
        summed = snapshot.site_checksum(session, site.id)
        head, cloud_checksum = summed.seq, summed.checksum
    else:
        head = head_seq(session, site.id)
    rows = session.execute(
        select(Gate, GateStatusRecord)
        .outerjoin(GateStatusRecord, GateStatusRecord.gate_id == Gate.id)
        .where(Gate.site_id == site_id)
        .order_by(Gate.id)
    )
    gates = []
    for gate, status in rows:
        reported: dict[str, Any] = {
            "state": "unknown",
            "feed_seq": None,
            "outbox_depth": None,
            "last_seen": None,
            "reported_at": None,
        }
        if status is not None:
            compared = cloud_checksum is not None and status.checksum is not None and status.checksum_seq == head
            reported = {
                "state": status.state,
                "feed_seq": status.feed_seq,
                "outbox_depth": status.outbox_depth,
                "last_seen": status.updated_at,
                "reported_at": status.reported_at,
                "checksum": status.checksum,
                "checksum_seq": status.checksum_seq,
                "problem": status.problem,
                "in_step": status.checksum == cloud_checksum if compared else None,
            }
        gates.append(GateSyncOut(gate_id=gate.id, code=gate.code, name=gate.name, **reported))
    return SiteSyncOut(site_id=site.id, site_code=site.code, feed_seq=head, checksum=cloud_checksum, gates=gates)
