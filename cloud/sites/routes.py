from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from cloud.deps import IdPath, Principal, Role, SessionDep, TransactionScopedRoute, require
from cloud.sites import gate_rules, service
from cloud.sites.gate_rules import GateRulesIn, GateRulesOut
from cloud.sites.schemas import GateCredentials, GateIn, GateOut, SiteIn, SiteOut

router = APIRouter(tags=["sites"], route_class=TransactionScopedRoute)
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Staff = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.FINANCE, Role.GATE_TECH))]


@router.post("/sites", status_code=201)
def create_site(body: SiteIn, session: SessionDep, actor: Admin) -> SiteOut:
    return SiteOut.model_validate(service.create_site(session, actor, body.code, body.name, body.timezone))


@router.get("/sites")
def list_sites(session: SessionDep, _: Staff) -> list[SiteOut]:
    return [SiteOut.model_validate(s) for s in service.list_sites(session)]


@router.post("/sites/{site_id}/gates", status_code=201)
def create_gate(site_id: IdPath, body: GateIn, session: SessionDep, actor: Admin) -> GateCredentials:
    gate, secret = service.create_gate(session, actor, site_id, body.code, body.name, body.direction)
    return GateCredentials(**GateOut.model_validate(gate).model_dump(), secret=secret)


@router.get("/sites/{site_id}/gates")
def list_gates(
    site_id: IdPath, session: SessionDep, _: Annotated[Principal, Depends(require(Role.ADMIN, Role.GATE_TECH))]
) -> list[GateOut]:
    return [GateOut.model_validate(g) for g in service.list_gates(session, site_id)]


@router.post("/gates/{gate_id}/rotate-secret")
def rotate_gate_secret(gate_id: IdPath, session: SessionDep, actor: Admin) -> GateCredentials:
    gate, secret = service.rotate_gate_secret(session, actor, gate_id)
    return GateCredentials(**GateOut.model_validate(gate).model_dump(), secret=secret)


@router.get("/gates/{gate_id}/rules")
def get_gate_rules(
    gate_id: IdPath, session: SessionDep, _: Annotated[Principal, Depends(require(Role.ADMIN, Role.GATE_TECH))]
) -> GateRulesOut:
    """The rules the cloud holds for this gate (source cloud), or none: it runs by its own file's (local)."""
    return gate_rules.get(session, gate_id)


@router.put("/gates/{gate_id}/rules")
def put_gate_rules(gate_id: IdPath, body: GateRulesIn, session: SessionDep, actor: Admin) -> GateRulesOut:
    """Set the gate's rules from the cloud; they reach it down its site's feed and win over its file's."""
    return gate_rules.put(session, actor, gate_id, body)


@router.delete("/gates/{gate_id}/rules")
def delete_gate_rules(gate_id: IdPath, session: SessionDep, actor: Admin) -> GateRulesOut:
    """Withdraw the cloud's rules: the gate goes back to its own file's."""
    return gate_rules.delete(session, actor, gate_id)
