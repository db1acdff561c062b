from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from cloud.deps import IdPath, Principal, Role, SessionDep, TransactionScopedRoute, require
from cloud.tickets import render, service
from cloud.tickets.schemas import TicketOut

router = APIRouter(tags=["tickets"], route_class=TransactionScopedRoute)
# A customer reaches only their own orders' tickets; the service answers 404 for anyone else's.
Readers = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.FINANCE, Role.CUSTOMER))]
# Ids are 32-bit INTEGER columns: a larger number is a 422, never a database error.
Scale = Annotated[int, Query(ge=1, le=20, description="Pixels (PNG) or units (SVG) per QR module")]


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
