"""Blocking a ticket from the cloud (SKIDATA's one-click block): a lost season-pass card, a misuse.

A block suspends the ticket until it is lifted: its status becomes ``blocked`` and a `StatusChange`
(blocked) goes onto its site's feed in the same transaction, so every gate of the site denies it
(``blocked``), offline too, and handhelds refuse it. Lifting it puts the ticket back as the gates' counts
say (valid, or used when its entries are used up) with a `StatusChange` (valid). Each block is kept with
who blocked and lifted it, when and why (`TicketBlock`), and both are audited.

Decisions for the resort's staff:
- Admins and cashiers block and lift (the ticket window takes the lost-card call and hands the found card
  back); finance and gate technicians cannot.
- Any valid or used ticket can be blocked, not only season passes; a blocked ticket cannot be blocked
  again (``already_blocked``), a refunded or revoked one cannot be blocked at all (it never admits again),
  and lifting needs a block (``not_blocked``).
- A blocked ticket stays refundable under its product's rules (a lost card, unused, can be paid back): the
  refund revokes it, and its block stays in the history, never lifted.
- A blocked season pass keeps its face template on its gates: the pass comes back when the block is
  lifted, and its gates deny a face match on a blocked pass by its status meanwhile.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import utcnow
from cloud.deps import Principal
from cloud.errors import Conflict, not_found
from cloud.sync.feed import append_change
from cloud.tickets.models import Ticket, TicketBlock, TicketState
from models import TicketStatus
from models.sync import StatusChange

_BLOCKABLE = (TicketState.VALID.value, TicketState.USED.value)
_ENDED = (TicketState.REFUNDED.value, TicketState.REVOKED.value)


def _ticket(session: Session, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise not_found("Ticket", "门票", ticket_id)
    return ticket


def _refuse_ended(ticket: Ticket) -> None:
    if ticket.status in _ENDED:
        raise Conflict(
            "ticket_revoked",
            f"Ticket {ticket.id} was refunded or revoked: it never admits again",
            f"门票 {ticket.id} 已退款或作废，不会再放行",
            ticket_id=ticket.id,
            status=ticket.status,
        )


def _set_status(session: Session, ticket: Ticket, allowed: tuple[str, ...], to: str) -> bool:
    """Move the ticket to `to` if its status is still one of `allowed` (the guard that holds under concurrency)."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Ticket)
            .where(Ticket.id == ticket.id, Ticket.status.in_(allowed))
            .values(status=to)
            .execution_options(synchronize_session="fetch")
        ),
    )
    return result.rowcount == 1


def platform_state(status: str) -> Literal["valid", "used", "refunded", "revoked"]:
    """A ticket's state as an OTA platform is told it: a block is the resort's own suspension, the
    platform's voucher stands (valid)."""
    platform: dict[TicketState, Literal["valid", "used", "refunded", "revoked"]] = {
        TicketState.VALID: "valid",
        TicketState.USED: "used",
        TicketState.REFUNDED: "refunded",
        TicketState.REVOKED: "revoked",
        TicketState.BLOCKED: "valid",
    }
    return platform[TicketState(status)]


def open_block(session: Session, ticket_id: int) -> TicketBlock | None:
    return session.scalar(
        select(TicketBlock)
        .where(TicketBlock.ticket_id == ticket_id, TicketBlock.lifted_at.is_(None))
        .order_by(TicketBlock.id.desc())
        .limit(1)
    )


def block(
    session: Session, actor: Principal, ticket_id: int, reason: str, *, now: datetime | None = None
) -> TicketBlock:
    """Block a ticket: stored, audited and on its site's feed, committed."""
    now = now or utcnow()
    ticket = _ticket(session, ticket_id)
    _refuse_ended(ticket)
    previous = ticket.status
    if previous == TicketState.BLOCKED or not _set_status(session, ticket, _BLOCKABLE, TicketState.BLOCKED.value):
        session.rollback()
        ticket = _ticket(session, ticket_id)
        _refuse_ended(ticket)  # refunded meanwhile
        raise Conflict(
            "already_blocked",
            f"Ticket {ticket_id} is already blocked",
            f"门票 {ticket_id} 已被冻结",
            ticket_id=ticket_id,
        )
    row = TicketBlock(
        ticket_id=ticket.id, previous_status=previous, reason=reason, blocked_by=actor.actor[:100], blocked_at=now
    )
    session.add(row)
    append_change(
        session, ticket.site_id, StatusChange(ticket_id=str(ticket.id), status=TicketStatus.BLOCKED, reason=reason)
    )
    session.flush()
    record(session, actor, "ticket.block", "ticket", ticket.id, {"reason": reason, "block_id": row.id})
    session.commit()
    return row


def unblock(
    session: Session, actor: Principal, ticket_id: int, reason: str, *, now: datetime | None = None
) -> TicketBlock:
    """Lift a ticket's block: it is valid again (used, when its entries are used up); audited, on the feed."""
    now = now or utcnow()
    ticket = _ticket(session, ticket_id)
    _refuse_ended(ticket)
    used_up = ticket.entries is not None and ticket.entries_used >= ticket.entries
    to = TicketState.USED if used_up else TicketState.VALID
    current = open_block(session, ticket.id)
    if current is None or not _set_status(session, ticket, (TicketState.BLOCKED.value,), to.value):
        session.rollback()
        _refuse_ended(_ticket(session, ticket_id))
        raise Conflict(
            "not_blocked", f"Ticket {ticket_id} is not blocked", f"门票 {ticket_id} 未被冻结", ticket_id=ticket_id
        )
    current.lifted_at, current.lifted_by, current.lift_reason = now, actor.actor[:100], reason
    # "used" is the cloud's summary: a gate decides from the counts, so both are "valid" on the wire.
    append_change(
        session, ticket.site_id, StatusChange(ticket_id=str(ticket.id), status=TicketStatus.VALID, reason=reason)
    )
    record(session, actor, "ticket.unblock", "ticket", ticket.id, {"reason": reason, "block_id": current.id})
    session.commit()
    return current


def history(session: Session, ticket_id: int) -> list[TicketBlock]:
    """The ticket's blocks, the latest first."""
    _ticket(session, ticket_id)
    return list(
        session.scalars(select(TicketBlock).where(TicketBlock.ticket_id == ticket_id).order_by(TicketBlock.id.desc()))
    )
