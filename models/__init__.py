"""The wire contract: pydantic v2 types that edge, cloud and sync all speak."""

from models.messages import (
    SCHEMA_VERSION,
    CredentialKind,
    Direction,
    GateConfig,
    Holder,
    Outcome,
    PassageEvent,
    PassageRecord,
    ProductKind,
    Ticket,
    TicketStatus,
)

__all__ = [
    "SCHEMA_VERSION",
    "CredentialKind",
    "Direction",
    "GateConfig",
    "Holder",
    "Outcome",
    "PassageEvent",
    "PassageRecord",
    "ProductKind",
    "Ticket",
    "TicketStatus",
]
