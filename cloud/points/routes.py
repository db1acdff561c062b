from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from cloud.db import utcnow
from cloud.deps import IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, require
from cloud.points import rules, service
from cloud.points.schemas import AdjustIn, EntryOut, LedgerOut, PointsOut, RulesIn, RulesOut, SignInOut, SpendIn

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


def _rules_out(current: rules.RulesInForce) -> RulesOut:
    return RulesOut(
        points_per_yuan=current.rules.points_per_yuan,
        signin_points=current.rules.signin_points,
        signin_streak_bonus=current.rules.signin_streak_bonus,
        version=current.version,
        changed_at=current.changed_at,
        changed_by=current.changed_by,
    )


@router.get("/points/rules")
def get_rules(
    session: SessionDep, settings: SettingsDep, _: Annotated[Principal, Depends(require(Role.ADMIN, Role.FINANCE))]
) -> RulesOut:
    """The points rules in force (version 0: the settings' defaults, never changed)."""
    return _rules_out(rules.in_force(session, settings))


@router.put("/points/rules")
def put_rules(body: RulesIn, session: SessionDep, settings: SettingsDep, actor: Admin) -> RulesOut:
    """Change the points rules: the next payment and sign-in in every cloud process use them, no restart;
    points already booked stay. Audited with the rules before and after."""
    new = rules.Rules(body.points_per_yuan, body.signin_points, body.signin_streak_bonus)
    return _rules_out(rules.change(session, settings, actor, new, now=utcnow()))
