from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from cloud.deps import IdPath, Principal, Role, SessionDep, TransactionScopedRoute, require
from cloud.sites import service
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
