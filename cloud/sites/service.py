"""Sites (resorts) and their gates; each gate gets its own credentials."""

from __future__ import annotations

import re
import secrets
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import add_unique, one_at_a_time
from cloud.deps import MAX_ID, Principal
from cloud.errors import Conflict, DomainError, not_found
from cloud.sites.models import Gate, Site
from cloud.sync.feed import append_roster
from models.credential import site_tag
from sync.mosquitto_passwd import hash_password

_hasher = PasswordHasher()
_GATE_USERNAME = re.compile(r"gate-([1-9][0-9]{0,9})")  # ASCII digits only: str.isdigit() takes "²" and "٣"


def create_site(session: Session, actor: Principal, code: str, name: str, timezone: str) -> Site:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DomainError("bad_timezone", f"Unknown time zone {timezone}", f"未知时区 {timezone}") from exc
    taken = Conflict("site_exists", f"Site {code} exists", f"场地 {code} 已存在")
    if session.scalar(select(Site.id).where(Site.code == code)) is not None:
        raise taken
    # A token names its site by a 32-bit tag of the code: two sites must never share one. Sites are
    # created one at a time (SQLite's writer lock; a transaction-scoped advisory lock on PostgreSQL,
    # which unlike a table lock holds up nothing else), so the look below holds.
    one_at_a_time(session, "sites/create")
    tag = site_tag(code)
    for other in session.scalars(select(Site.code)):
        if other != code and site_tag(other) == tag:  # the same code is `add_unique`'s site_exists
            raise Conflict(
                "site_tag_clash",
                f"Site code {code} is indistinguishable from {other} in tickets; choose another code",
                f"场地编码 {code} 与 {other} 在门票中无法区分，请换一个编码",
            )
    site = Site(code=code, name=name, timezone=timezone)
    add_unique(session, site, taken)
    record(session, actor, "site.create", "site", site.id, {"code": code})
    session.commit()
    return site


def get_site(session: Session, site_id: int) -> Site:
    site = session.get(Site, site_id)
    if site is None:
        raise not_found("Site", "场地", site_id)
    return site


def list_sites(session: Session) -> list[Site]:
    return list(session.scalars(select(Site).order_by(Site.id)))


def create_gate(
    session: Session, actor: Principal, site_id: int, code: str, name: str, direction: str
) -> tuple[Gate, str]:
    get_site(session, site_id)
    taken = Conflict("gate_exists", f"Gate {code} exists at this site", f"闸机 {code} 已存在")
    if session.scalar(select(Gate.id).where(Gate.site_id == site_id, Gate.code == code)) is not None:
        raise taken
    secret = secrets.token_urlsafe(24)
    gate = Gate(
        site_id=site_id,
        code=code,
        name=name,
        direction=direction,
        secret_hash=_hasher.hash(secret),
        mqtt_hash=hash_password(secret),
    )
    add_unique(session, gate, taken)
    record(session, actor, "gate.create", "gate", gate.id, {"site_id": site_id, "code": code})
    append_roster(session, site_id)  # the site's gates learn their new peer (and whom else to believe)
    session.commit()
    return gate, secret


def rotate_gate_secret(session: Session, actor: Principal, gate_id: int) -> tuple[Gate, str]:
    gate = get_gate(session, gate_id)
    secret = secrets.token_urlsafe(24)
    gate.secret_hash = _hasher.hash(secret)
    gate.mqtt_hash = hash_password(secret)
    record(session, actor, "gate.rotate_secret", "gate", gate.id, {})
    session.commit()
    return gate, secret


def get_gate(session: Session, gate_id: int) -> Gate:
    gate = session.get(Gate, gate_id)
    if gate is None:
        raise not_found("Gate", "闸机", gate_id)
    return gate


def list_gates(session: Session, site_id: int) -> list[Gate]:
    get_site(session, site_id)
    return list(session.scalars(select(Gate).where(Gate.site_id == site_id).order_by(Gate.id)))


def verify_gate(session: Session, username: str, secret: str) -> Gate | None:
    """The gate whose credentials these are, or None (used by sync: snapshot HTTP and MQTT).

    Any username but `gate-<id>` with an id a gate could have is refused before the database is
    asked: `gate-` and 5,000 digits, or an id past the 32-bit column, is a wrong login, not a 500.
    """
    match = _GATE_USERNAME.fullmatch(username)
    if match is None or int(match[1]) > MAX_ID:
        return None
    gate = session.get(Gate, int(match[1]))
    # The read ends before the slow hash check: on SQLite even a read holds the one write lock.
    session.commit()
    if gate is None:
        return None
    try:
        _hasher.verify(gate.secret_hash, secret)
    except (VerificationError, InvalidHashError):
        return None
    return gate
