"""Who changed what: every state-changing service call records an entry in the same transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.models import AuditEntry

if TYPE_CHECKING:
    from cloud.deps import Principal


def record(
    session: Session, actor: Principal | str | None, action: str, entity: str, entity_id: object, detail: dict[str, Any]
) -> None:
    name = actor if isinstance(actor, str) else (actor.actor if actor is not None else "system")
    session.add(AuditEntry(actor=name, action=action, entity=entity, entity_id=str(entity_id), detail=detail))


def entries(session: Session, *, entity: str | None = None, limit: int = 100) -> list[AuditEntry]:
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if entity:
        q = q.where(AuditEntry.entity == entity)
    return list(session.scalars(q))
