from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from cloud.db import utcnow
from cloud.deps import IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, require
from cloud.points import service
from cloud.points.schemas import AdjustIn, EntryOut, LedgerOut, PointsOut, SignInOut, SpendIn

router = APIRouter(tags=["points"], route_class=TransactionScopedRoute)
Me = Annotated[Principal, Depends(require(Role.CUSTOMER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


@router.get("/points")
def my_points(session: SessionDep, who: Me, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> PointsOut:
    """The balance, what of it can be spent now, and the most recent ledger entries."""
    entries = service.recent_entries(session, who.subject_id, limit)
    balance = entries[0].balance_after if entries else 0
    spendable = max(0, balance - service.held(session, who.subject_id, utcnow())) if balance else 0
    return PointsOut(balance=balance, spendable=spendable, entries=[EntryOut.model_validate(e) for e in entries])


@router.post("/points/signin", status_code=201)
def sign_in(session: SessionDep, settings: SettingsDep, who: Me) -> SignInOut:
    """每日签到: once per local day; 409 `already_signed_in` on a second call."""
    row, balance = service.signin(session, settings, who.subject_id, now=utcnow())
    return SignInOut(day=row.day, streak=row.streak, points=row.points, balance=balance)


@router.post("/points/spend", status_code=201)
def spend(body: SpendIn, response: Response, session: SessionDep, who: Me) -> LedgerOut:
    """Spend points; 409 `insufficient_points` rather than a negative balance. A repeated ref answers 200."""
    entry, created = service.spend(session, who.subject_id, body.points, body.ref, now=utcnow())
    if not created:
        response.status_code = 200
    return LedgerOut(balance=service.balance(session, who.subject_id), entry=EntryOut.model_validate(entry))


@router.post("/customers/{customer_id}/points/adjust", status_code=201)
def adjust(customer_id: IdPath, body: AdjustIn, session: SessionDep, actor: Admin) -> LedgerOut:
    """A manual correction (audit-logged); it cannot take the balance below 0."""
    entry = service.adjust(session, actor, customer_id, body.delta, body.reason, now=utcnow())
    return LedgerOut(balance=entry.balance_after, entry=EntryOut.model_validate(entry))
