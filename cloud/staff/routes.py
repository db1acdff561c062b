from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm

from cloud.db import utcnow
from cloud.deps import (
    STAFF_ROLES,
    IdPath,
    Principal,
    Role,
    SessionDep,
    SettingsDep,
    TransactionScopedRoute,
    public,
    require,
    staff_check,
)
from cloud.errors import not_found
from cloud.settings import Settings
from cloud.staff import service, sessions
from cloud.staff.models import Staff
from cloud.staff.schemas import RefreshIn, StaffDetail, StaffIn, StaffOut, StaffPatch, TokenOut

router = APIRouter(tags=["staff"], route_class=TransactionScopedRoute)
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _token_out(settings: Settings, signed: sessions.SignedIn) -> TokenOut:
    return TokenOut(
        access_token=signed.access_token,
        role=signed.role,
        expires_in=settings.jwt_ttl_minutes * 60,
        refresh_token=signed.refresh_token,
        refresh_expires_at=signed.refresh_expires_at,
    )


@router.post("/auth/token", dependencies=[Depends(public)])
def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
) -> TokenOut:
    """OAuth2 password flow for staff: an access token (JWT) and a refresh token. Every attempt is audited;
    5 wrong passwords in a row slow that username down to one try a minute (429 `too_many_attempts`)."""
    signed = sessions.login(session, settings, form.username, form.password, client=_client(request), now=utcnow())
    return _token_out(settings, signed)


@router.post("/auth/refresh", dependencies=[Depends(public)])
def refresh(request: Request, body: RefreshIn, session: SessionDep, settings: SettingsDep) -> TokenOut:
    """A new access token for a refresh token, which is used up: the answer has the next one. A used-up token
    presented again ends that sign-in (401 `refresh_reused`); refused while the member is disabled."""
    signed = sessions.refresh(session, settings, body.refresh_token, client=_client(request), now=utcnow())
    return _token_out(settings, signed)


@router.post("/auth/logout", status_code=204)
def logout(request: Request, session: SessionDep, me: Annotated[Principal, Depends(require(*STAFF_ROLES))]) -> Response:
    """Sign out everywhere: every access and refresh token of the caller stops working."""
    sessions.logout(session, me, me.subject_id, forced=False, now=utcnow())
    staff_check(request).forget(me.subject_id)
    return Response(status_code=204)


@router.post("/staff", status_code=201)
def create_staff(body: StaffIn, session: SessionDep, actor: Admin) -> StaffOut:
    return StaffOut.model_validate(service.create_staff(session, actor, body.username, body.password, body.role))


@router.get("/staff")
def list_staff(session: SessionDep, _: Admin) -> list[StaffOut]:
    return [StaffOut.model_validate(s) for s in service.list_staff(session)]


@router.get("/staff/{staff_id}")
def staff_detail(staff_id: IdPath, session: SessionDep, _: Admin) -> StaffDetail:
    """One member: role, state, last sign-in and last failed one, sign-ins that can still be refreshed."""
    staff = session.get(Staff, staff_id)
    if staff is None:
        raise not_found("Staff", "员工", staff_id)
    return _detail(session, staff)


def _detail(session: SessionDep, staff: Staff) -> StaffDetail:
    fields = {name: getattr(staff, name) for name in StaffDetail.model_fields if name != "refresh_sessions"}
    return StaffDetail(**fields, refresh_sessions=sessions.refresh_sessions(session, staff.id, utcnow()))


@router.post("/staff/{staff_id}/logout")
def force_logout(request: Request, staff_id: IdPath, session: SessionDep, actor: Admin) -> StaffDetail:
    """Forced logout (强制下线): every access token the member holds stops working within seconds in every cloud
    process (`staff_recheck_s`) and every refresh token is revoked; they can sign in again with their password.
    Audited (`staff.force_logout`)."""
    staff = sessions.logout(session, actor, staff_id, forced=True, now=utcnow())
    staff_check(request).forget(staff_id)
    return _detail(session, staff)


@router.patch("/staff/{staff_id}")
def update_staff(staff_id: IdPath, body: StaffPatch, session: SessionDep, actor: Admin) -> StaffOut:
    """Enable or disable a staff account, set its password or change its role. A new password also ends the
    member's sessions (as a forced logout); like a disabling or a role change, within `staff_recheck_s`. A change
    to the gate technicians reaches every site's gates on their feed (a disabled technician is locked out after
    the next sync)."""
    staff = service.update_staff(session, actor, staff_id, active=body.active, password=body.password, role=body.role)
    return StaffOut.model_validate(staff)
