from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

from cloud.deps import IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, public, require
from cloud.staff import service
from cloud.staff.schemas import StaffIn, StaffOut, StaffPatch, TokenOut

router = APIRouter(tags=["staff"], route_class=TransactionScopedRoute)


@router.post("/auth/token", dependencies=[Depends(public)])
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep, settings: SettingsDep
) -> TokenOut:
    """OAuth2 password flow for staff; returns a JWT."""
    token, role = service.authenticate(session, settings, form.username, form.password)
    return TokenOut(access_token=token, role=role)


@router.post("/staff", status_code=201)
def create_staff(
    body: StaffIn, session: SessionDep, actor: Annotated[Principal, Depends(require(Role.ADMIN))]
) -> StaffOut:
    return StaffOut.model_validate(service.create_staff(session, actor, body.username, body.password, body.role))


@router.get("/staff")
def list_staff(session: SessionDep, _: Annotated[Principal, Depends(require(Role.ADMIN))]) -> list[StaffOut]:
    return [StaffOut.model_validate(s) for s in service.list_staff(session)]


@router.patch("/staff/{staff_id}")
def update_staff(
    staff_id: IdPath, body: StaffPatch, session: SessionDep, actor: Annotated[Principal, Depends(require(Role.ADMIN))]
) -> StaffOut:
    """Enable or disable a staff account, set its password or change its role. A change to the gate
    technicians reaches every site's gates on their feed (a disabled technician is locked out after the
    next sync)."""
    staff = service.update_staff(session, actor, staff_id, active=body.active, password=body.password, role=body.role)
    return StaffOut.model_validate(staff)
