"""The points rules in force: points per whole yuan paid, sign-in points, the 7th-day streak bonus.

Stored in the database, one row per version (`points_rules`); the newest row is in force, and without any row
the settings (`STARFISH_POINTS_PER_YUAN`, `_SIGNIN_POINTS`, `_SIGNIN_STREAK_BONUS`) are. Every use reads the
rules in its own transaction (one primary-key-ordered row), so an admin's change applies to the next payment
or sign-in in every cloud process, without a restart and without a cache to invalidate. A change applies from
then on: points already booked are never recomputed. Each change is audited with the rules before and after;
a PUT of the rules already in force changes nothing and is not audited.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import one_at_a_time
from cloud.deps import Principal
from cloud.points.models import PointsRules
from cloud.settings import Settings

# Upper bounds (also the settings'): one yuan never earns more than 100 points, so an order's points stay
# far below the 32-bit balance limit, and a sign-in is never worth a season pass.
MAX_PER_YUAN = 100
MAX_SIGNIN = 10_000
MAX_STREAK_BONUS = 100_000


@dataclass(frozen=True, slots=True)
class Rules:
    points_per_yuan: int
    signin_points: int
    signin_streak_bonus: int


@dataclass(frozen=True, slots=True)
class RulesInForce:
    rules: Rules
    version: int  # 0: the settings' defaults, no row yet
    changed_at: datetime | None
    changed_by: str | None


def in_force(session: Session, settings: Settings) -> RulesInForce:
    """The rules in force, read in the caller's transaction (one small read)."""
    row = session.execute(
        select(
            PointsRules.id,
            PointsRules.points_per_yuan,
            PointsRules.signin_points,
            PointsRules.signin_streak_bonus,
            PointsRules.changed_at,
            PointsRules.changed_by,
        )
        .order_by(PointsRules.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return RulesInForce(
            Rules(settings.points_per_yuan, settings.signin_points, settings.signin_streak_bonus), 0, None, None
        )
    return RulesInForce(
        Rules(row.points_per_yuan, row.signin_points, row.signin_streak_bonus), row.id, row.changed_at, row.changed_by
    )


def current(session: Session, settings: Settings) -> Rules:
    return in_force(session, settings).rules


def change(session: Session, settings: Settings, actor: Principal, new: Rules, *, now: datetime) -> RulesInForce:
    """Put `new` in force (a new version), audited with before and after; commits. Two admins at once take turns."""
    one_at_a_time(session, "points.rules")
    before = in_force(session, settings)
    if before.rules == new:
        return before
    row = PointsRules(**asdict(new), changed_by=actor.actor, changed_at=now)
    session.add(row)
    session.flush()
    record(
        session,
        actor,
        "points.rules",
        "points_rules",
        row.id,
        {"before": asdict(before.rules), "after": asdict(new), "before_version": before.version},
    )
    session.commit()
    return RulesInForce(new, row.id, now, actor.actor)
