from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from cloud.deps import IdPath, Principal, Role, SessionDep, TransactionScopedRoute, require
from cloud.tickets import blocks, render, service
from cloud.tickets.models import TicketState
from cloud.tickets.schemas import TicketOut
from models.sync import REASON_MAX

router = APIRouter(tags=["tickets"], route_class=TransactionScopedRoute)
# A customer reaches only their own orders' tickets; the service answers 404 for anyone else's.
Readers = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.FINANCE, Role.CUSTOMER))]
# Ids are 32-bit INTEGER columns: a larger number is a 422, never a database error.
Scale = Annotated[int, Query(ge=1, le=20, description="Pixels (PNG) or units (SVG) per QR module")]
# Who blocks a lost or misused ticket and lifts the block (`cloud.tickets.blocks`): the window and admins.
Blockers = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER))]


class BlockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=REASON_MAX, description="Why: a lost card, a misuse... (the gates log it)"
    )


class BlockOut(BaseModel):
    """One block of a ticket; `lifted_at` None: in force."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    ticket_id: int
    previous_status: TicketState
    reason: str
    blocked_by: str
    blocked_at: datetime
    lift_reason: str | None
    lifted_by: str | None
    lifted_at: datetime | None


@router.get("/orders/{order_id}/tickets")
def order_tickets(order_id: IdPath, session: SessionDep, actor: Readers) -> list[TicketOut]:
    return [TicketOut.model_validate(t) for t in service.tickets_of_order(session, order_id, actor)]


@router.get("/tickets/{ticket_id}")
def get_ticket(ticket_id: IdPath, session: SessionDep, actor: Readers) -> TicketOut:
    return TicketOut.model_validate(service.get_ticket(session, ticket_id, actor))


@router.get("/tickets/{ticket_id}/qr.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def qr_png(ticket_id: IdPath, session: SessionDep, actor: Readers, scale: Scale = 8) -> Response:
    """The ticket's QR code (error level M) as PNG."""
    ticket = service.get_ticket(session, ticket_id, actor)
    return Response(render.qr_png(ticket.token, scale=scale), media_type="image/png")


@router.get("/tickets/{ticket_id}/qr.svg", response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}})
def qr_svg(ticket_id: IdPath, session: SessionDep, actor: Readers, scale: Scale = 8) -> Response:
    """The ticket's QR code (error level M) as SVG."""
    ticket = service.get_ticket(session, ticket_id, actor)
    return Response(render.qr_svg(ticket.token, scale=scale), media_type="image/svg+xml")


@router.get(
    "/tickets/{ticket_id}/paper.pdf", response_class=Response, responses={200: {"content": {"application/pdf": {}}}}
)
def paper_pdf(ticket_id: IdPath, session: SessionDep, actor: Readers) -> Response:
    """A paper ticket for the window printer (80 mm wide)."""
    ticket = service.get_ticket(session, ticket_id, actor)
    pdf = render.paper_pdf(service.paper_ticket(session, ticket))
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="ticket-{ticket.id}.pdf"'},
    )


@router.post("/tickets/{ticket_id}/block")
def block_ticket(ticket_id: IdPath, body: BlockIn, session: SessionDep, actor: Blockers) -> BlockOut:
    """Block the ticket at every gate of its site, offline ones too once they sync (a lost card, a misuse)."""
    return BlockOut.model_validate(blocks.block(session, actor, ticket_id, body.reason))


@router.post("/tickets/{ticket_id}/unblock")
def unblock_ticket(ticket_id: IdPath, body: BlockIn, session: SessionDep, actor: Blockers) -> BlockOut:
    """Lift the ticket's block: its gates admit it again under their rules."""
    return BlockOut.model_validate(blocks.unblock(session, actor, ticket_id, body.reason))


@router.get("/tickets/{ticket_id}/blocks")
def ticket_blocks(ticket_id: IdPath, session: SessionDep, _: Blockers) -> list[BlockOut]:
    """The ticket's blocks, the latest first, lifted ones included."""
    return [BlockOut.model_validate(b) for b in blocks.history(session, ticket_id)]
