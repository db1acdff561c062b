from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cloud.audit import service
from cloud.audit.schemas import AuditOut
from cloud.deps import Principal, Role, SessionDep, TransactionScopedRoute, require

router = APIRouter(tags=["audit"], route_class=TransactionScopedRoute)


@router.get("/audit")
def list_audit(
    session: SessionDep,
    _: Annotated[Principal, Depends(require(Role.ADMIN, Role.FINANCE))],
    entity: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditOut]:
    return [AuditOut.model_validate(e) for e in service.entries(session, entity=entity, limit=limit)]
