"""Who the gate technicians are, and telling every site's gates when that changes.

Staff have no site: the resort is one operator, and a technician walks to whichever turnstile is
stuck, so every active staff member with the role ``gate_tech`` is a technician of every site's
gates. A staff change that touches that set (a gate_tech created, disabled or enabled, their password
changed, a role changed to or from gate_tech) appends one `models.sync.Technicians` with the whole new
list to every site's feed, in the change's own transaction; every snapshot header carries the list too.

An account whose stored hash is not argon2 (no password was ever set: it cannot log in to the cloud
either) is left out of the list: gates accept argon2 hashes only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.deps import Role
from cloud.errors import Conflict
from cloud.sites.models import Gate, Site
from cloud.staff.models import Staff
from cloud.sync.feed import append_change, lock_feed
from cloud.sync.models import FeedChange
from models.ops import TECHNICIANS_MAX, TechnicianAccount
from models.sync import Technicians


def is_technician(role: str, active: bool) -> bool:
    """Does a staff member with this role and state log in to the gates?"""
    return active and role == Role.GATE_TECH.value


def accounts(session: Session) -> list[TechnicianAccount]:
    """The active gate technicians with an argon2 password hash, sorted by username (as the gates get them)."""
    rows = session.execute(
        select(Staff.username, Staff.password_hash).where(
            Staff.role == Role.GATE_TECH.value, Staff.active.is_(True), Staff.password_hash.startswith("$argon2")
        )
    )
    listed = sorted(rows, key=lambda row: row[0])  # Python's order, not the database's collation
    return [TechnicianAccount(username=username, password_hash=hashed) for username, hashed in listed]


def announce(session: Session, *, now: datetime | None = None) -> list[int]:
    """Append the technicians, as this transaction sees them, to every site's feed; returns those sites.
    The caller commits.

    Every site's feed lock is taken (in site order, as everyone takes them) before the staff are read, so
    of two staff changes at once the later list has both.
    """
    sites = list(session.scalars(select(Site.id).order_by(Site.id)))
    for site_id in sites:
        lock_feed(session, site_id)
    change = _change(session)
    for site_id in sites:
        append_change(session, site_id, change, now=now)
    return sites


def ensure(session: Session, *, now: datetime | None = None) -> list[int]:
    """At start-up: append the technicians to every site with gates whose feed's last list differs, and commit;
    returns those sites.

    A cloud upgraded to technician lists announces them to gates that are already up to date; a feed
    that never had a list gets none while there are no technicians (its gates keep their break-glass
    account until a snapshot or a first technician tells them otherwise).
    """
    changed = []
    for site_id in session.scalars(select(Site.id).where(Site.id.in_(select(Gate.site_id))).order_by(Site.id)):
        lock_feed(session, site_id)
        last = session.scalar(
            select(FeedChange.body)
            .where(FeedChange.site_id == site_id, FeedChange.kind == "technicians")
            .order_by(FeedChange.seq.desc())
            .limit(1)
        )
        change = _change(session)
        if (last is None and not change.accounts) or (last is not None and Technicians.model_validate(last) == change):
            continue
        append_change(session, site_id, change, now=now)
        changed.append(site_id)
    session.commit()
    return changed


def _change(session: Session) -> Technicians:
    listed = accounts(session)
    if len(listed) > TECHNICIANS_MAX:
        raise Conflict(
            "too_many_technicians",
            f"At most {TECHNICIANS_MAX} gate technicians can be active",
            f"最多可有 {TECHNICIANS_MAX} 名在职闸机技术员",
            limit=TECHNICIANS_MAX,
        )
    return Technicians(accounts=listed)
