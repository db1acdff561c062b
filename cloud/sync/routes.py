from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from sqlalchemy import select

from cloud.deps import MAX_ID, IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, require
from cloud.errors import Unauthorized
from cloud.sites import gate_rules
from cloud.sites.models import Gate, Site
from cloud.sites.schemas import CODE
from cloud.sites.service import verify_gate
from cloud.sync import dead_letters, gate_status, service, snapshot
from cloud.sync.feed import trusted_key_set
from cloud.sync.schemas import DeadLetterOut, QuarantinedEventOut, SiteSyncOut

router = APIRouter(tags=["sync"], route_class=TransactionScopedRoute)
GateWatchers = Annotated[Principal, Depends(require(Role.ADMIN, Role.GATE_TECH))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
_basic = HTTPBasic(auto_error=False, realm="starfish-sync", description="A gate's own username and secret")


def authenticated_gate(
    session: SessionDep, credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
) -> Gate:
    """The gate whose HTTP Basic credentials came with the request (routes only gates may call)."""
    # verify_gate ends its read in this thread (see TransactionScopedRoute); the gate stays loaded.
    gate = verify_gate(session, credentials.username, credentials.password) if credentials is not None else None
    if gate is None:
        raise _refused()
    return gate


CurrentGate = Annotated[Gate, Depends(authenticated_gate)]


def _refused() -> Unauthorized:
    return Unauthorized("gate_not_authenticated", "Gate credentials are wrong", "闸机凭据错误")


@router.get("/sites/{site_id}/gates/status")
def gates_status(
    site_id: IdPath,
    session: SessionDep,
    _: GateWatchers,
    verify: Annotated[bool, Query(description="Also compare each gate's ticket-set checksum with the cloud's")] = False,
) -> SiteSyncOut:
    """Each gate's online state, applied feed sequence, outbox depth and ticket-set checksum, as it
    last reported them; with `verify`, whether its tickets agree with the cloud's."""
    return gate_status.site_sync_status(session, site_id, verify=verify)


@router.get("/sync/sites/{site_id}/quarantine")
def quarantine(
    site_id: IdPath,
    session: SessionDep,
    _: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[QuarantinedEventOut]:
    """Passage events the site's gates sent that cannot be true (another site's ticket, a gate not
    registered, a time out of bounds...), newest first: kept as evidence, never applied."""
    return service.quarantined_events(session, site_id, limit=limit)


@router.get("/sync/sites/{site_id}/dead-letters")
def dead_letter_list(
    site_id: IdPath,
    session: SessionDep,
    _: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="How many of the newest to skip (the next page)")] = 0,
) -> list[DeadLetterOut]:
    """What the site's gates sent that the cloud refused unread (malformed, over its bounds, a status
    naming another gate, the wrong topic), raw, the most recently received first, a page at a time
    (a letter received again meanwhile moves to the first page). Not the quarantine: those are
    well-formed events judged impossible. A gate is told its refused event ids and drops them. Each
    gate keeps at most 1000 distinct letters; more are counted on its one `overflow` letter."""
    return dead_letters.listed(session, site_id, limit=limit, offset=offset)


@router.get(
    "/sync/sites/{site_code}/snapshot",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
def site_snapshot(
    site_code: Annotated[str, Path(pattern=CODE)], session: SessionDep, settings: SettingsDep, gate: CurrentGate
) -> StreamingResponse:
    """The site's tickets for one of its gates: a SnapshotHeader line, Ticket lines, SnapshotStatus lines."""
    site = session.scalar(select(Site).where(Site.code == site_code))
    if site is None or site.id != gate.site_id:
        raise _refused()  # the same answer for another site's gate and for no such site
    snap = snapshot.build(session, site.id, site.code, trusted_key_set(settings))
    # Read after the snapshot's point: the feed after its seq replays any later change on top (issue 13, H6).
    snap.header = snap.header.model_copy(update={"gate_config": gate_rules.gate_config(session, gate)})
    session.rollback()
    return StreamingResponse(
        snap.lines(), media_type="application/x-ndjson", headers={"X-Starfish-Feed-Seq": str(snap.header.seq)}
    )
