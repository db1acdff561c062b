"""Deletions confirmed per gate: a gate whose status reports a feed seq at or past a `FaceDelete`'s has
applied it (changes apply strictly in order, and a snapshot taken later holds no such template)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.faces.models import FaceDeletion, FaceDeletionConfirmation
from cloud.faces.schemas import DeletionOut, GateConfirmation
from cloud.sites.models import Gate, Site


def confirm(session: Session, site_id: int, gate_id: int, before: int, after: int, at: datetime) -> int:
    """Record, once, that the gate applied the site's deletions with `before < seq <= after`; how many.

    Called with the gate's feed seq before and after its status; a seq going down (another epoch) confirms nothing.
    """
    if after <= before:
        return 0
    ids = session.scalars(
        select(FaceDeletion.id).where(
            FaceDeletion.site_id == site_id, FaceDeletion.seq > before, FaceDeletion.seq <= after
        )
    ).all()
    if not ids:
        return 0
    known = set(
        session.scalars(
            select(FaceDeletionConfirmation.deletion_id).where(
                FaceDeletionConfirmation.gate_id == gate_id, FaceDeletionConfirmation.deletion_id.in_(ids)
            )
        )
    )
    fresh = [i for i in ids if i not in known]
    session.add_all(FaceDeletionConfirmation(deletion_id=i, gate_id=gate_id, at=at) for i in fresh)
    return len(fresh)


def describe(session: Session, deletions: Sequence[FaceDeletion]) -> list[DeletionOut]:
    """Each deletion with the gates that confirmed it (and when, on the site's clock) and those still pending."""
    if not deletions:
        return []
    site_ids = {d.site_id for d in deletions}
    sites = {s.id: s for s in session.scalars(select(Site).where(Site.id.in_(site_ids)))}
    gates: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for gate_id, gate_site, code in session.execute(
        select(Gate.id, Gate.site_id, Gate.code).where(Gate.site_id.in_(site_ids)).order_by(Gate.code)
    ):
        gates[gate_site].append((gate_id, code))
    confirmed: dict[int, dict[int, datetime]] = defaultdict(dict)
    for deletion_id, gate_id, at in session.execute(
        select(
            FaceDeletionConfirmation.deletion_id, FaceDeletionConfirmation.gate_id, FaceDeletionConfirmation.at
        ).where(FaceDeletionConfirmation.deletion_id.in_([d.id for d in deletions]))
    ):
        confirmed[deletion_id][gate_id] = at
    out = []
    for d in deletions:
        site = sites[d.site_id]
        tz = ZoneInfo(site.timezone)
        done = [(code, confirmed[d.id][gid]) for gid, code in gates[d.site_id] if gid in confirmed[d.id]]
        out.append(
            DeletionOut(
                id=d.id,
                site_code=site.code,
                ticket_id=d.ticket_id,
                holder_id=d.holder_id,
                reason=d.reason,
                requested_at=d.requested_at,
                feed_seq=d.seq,
                confirmed=[GateConfirmation(gate=code, at=at) for code, at in done],
                pending=[code for gid, code in gates[d.site_id] if gid not in confirmed[d.id]],
                summary=[f"deleted on {code} at {at.astimezone(tz):%H:%M:%S}" for code, at in done],
            )
        )
    return out


def of_site(session: Session, site_id: int, *, pending_only: bool = False, limit: int = 100) -> list[DeletionOut]:
    """The site's deletions, newest first."""
    rows = session.scalars(
        select(FaceDeletion).where(FaceDeletion.site_id == site_id).order_by(FaceDeletion.id.desc()).limit(limit)
    ).all()
    described = describe(session, rows)
    return [d for d in described if d.pending] if pending_only else described


def of_holder(session: Session, holder_id: int) -> list[DeletionOut]:
    rows = session.scalars(
        select(FaceDeletion).where(FaceDeletion.holder_id == holder_id).order_by(FaceDeletion.id.desc()).limit(100)
    ).all()
    return describe(session, rows)
