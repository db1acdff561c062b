"""Tickets, signed tokens and passage events as tests and bench make them, around an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models import CredentialKind, Direction, Holder, Outcome, PassageEvent, ProductKind, Ticket
from models.credential import issue

# 2026-12-20 09:00 in Beijing: a Sunday morning in the season.
NOW = datetime(2026, 12, 20, 1, 0, tzinfo=UTC)


def make_ticket(kind: ProductKind = ProductKind.DAY, **overrides: Any) -> Ticket:
    """A ticket of `kind` valid around NOW (ticket 1001), with any field overridden."""
    fields: dict[str, Any] = {
        "ticket_id": "1001",
        "kind": kind,
        "valid_from": NOW - timedelta(hours=2),
        "valid_until": NOW + timedelta(hours=14),
    }
    if kind is ProductKind.TIME_WINDOW:
        fields["window_minutes"] = 240
    if kind is ProductKind.PUNCH:
        fields["entries"] = 10
        fields["valid_until"] = NOW + timedelta(days=120)
    if kind is ProductKind.SEASON:
        fields["holder"] = Holder(holder_id="h1", name="张三")
        fields["valid_until"] = NOW + timedelta(days=100)
    fields.update(overrides)
    return Ticket(**fields)


def sign(key: Ed25519PrivateKey, ticket: Ticket, key_id: int = 1, site: str = "nanshan") -> str:
    """The signed token a cashier would print for `ticket` (its id must be digits)."""
    return issue(
        key,
        key_id=key_id,
        kind=ticket.kind,
        ticket_no=int(ticket.ticket_id),
        valid_from=ticket.valid_from,
        valid_until=ticket.valid_until,
        entries=ticket.entries,
        window_minutes=ticket.window_minutes,
        site=site,
    )


def counted_passage(
    ticket_id: str, at: datetime, *, gate: str, site: str, credential: CredentialKind = "signed"
) -> PassageEvent:
    """A gate's event for an admission somebody passed, using up an entry."""
    return PassageEvent(
        gate_id=gate,
        site_id=site,
        at=at,
        direction=Direction.IN,
        outcome=Outcome.ADMIT,
        code="ok",
        ticket_id=ticket_id,
        passed=True,
        counted=True,
        credential=credential,
    )
