"""Ticket layout settings per site (电子票/纸质票设置): what the e-ticket shows and the paper ticket prints.

The cloud stores and validates the layout; the mini-program's ticket page and the window's printing client
read it (`GET /sites/{id}/ticket-layout`) and lay the ticket out themselves: the e-ticket page asks the QR
image route for the layout's size (`GET /tickets/{id}/qr.png?scale=<qr_scale>`); the printing client prints
the header and footer lines, the price and holder name as set, on 58 or 80 mm paper, `copies` times. The
cloud's own `paper.pdf` stays the fixed 80 mm fallback. A layout is not part of the catalog (no price or
sale depends on it), so changing it does not bump the catalog version.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.deps import Principal
from cloud.products.models import TicketLayout
from cloud.products.schemas import ETicketLayout, PaperTicketLayout, TicketLayoutIn, TicketLayoutOut
from cloud.sites.service import get_site


def get_layout(session: Session, site_id: int) -> TicketLayoutOut:
    """The site's layout; the defaults while none was saved."""
    get_site(session, site_id)
    row = session.get(TicketLayout, site_id)
    if row is None:
        return TicketLayoutOut(site_id=site_id, updated_by=None, updated_at=None)
    return TicketLayoutOut(
        site_id=site_id,
        e_ticket=ETicketLayout.model_validate(row.e_ticket),
        paper=PaperTicketLayout.model_validate(row.paper),
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


def put_layout(
    session: Session, actor: Principal, site_id: int, body: TicketLayoutIn, *, now: datetime
) -> TicketLayoutOut:
    """Replace the site's layout (both halves, as the settings page saves them); audited with the new values."""
    get_site(session, site_id)
    values = body.model_dump(mode="json")
    row = session.get(TicketLayout, site_id)
    if row is None:
        row = TicketLayout(site_id=site_id)
        session.add(row)
    row.e_ticket, row.paper = values["e_ticket"], values["paper"]
    row.updated_by, row.updated_at = actor.actor, now
    record(session, actor, "ticket_layout.set", "site", site_id, values)
    session.commit()
    return get_layout(session, site_id)
