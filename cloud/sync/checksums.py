"""Each site's last computed ticket-set checksum (`SiteChecksum`): kept whenever the cloud sums a site.

A snapshot, a `?verify=true` status and the periodic recompute (`cloud.sync.recompute`) all keep what
they summed here; every `FeedHead` the cloud publishes carries it, and the gates' status checksums are
compared with it. The last one computed wins: a checksum is true of its feed sequence forever.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloud.db import dialect_insert, utcnow
from cloud.sites.models import Site
from cloud.sync.models import SiteChecksum, SiteFeedHead


def remember(session: Session, site_id: int, seq: int, checksum: str, *, at: datetime | None = None) -> None:
    """Keep the site's checksum at `seq`. The caller commits."""
    values = {"seq": seq, "checksum": checksum, "at": at or utcnow()}
    stmt = dialect_insert(session)(SiteChecksum).values(site_id=site_id, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=[SiteChecksum.site_id], set_=values))


def cached(session: Session, site_id: int) -> SiteChecksum | None:
    """The site's last computed checksum, if any."""
    return session.get(SiteChecksum, site_id, populate_existing=True)


def by_site_code(session: Session) -> dict[str, tuple[int, str]]:
    """Site code -> (seq, checksum) of every site with one: what the feed heads carry."""
    rows = session.execute(
        select(Site.code, SiteChecksum.seq, SiteChecksum.checksum).join(SiteChecksum, SiteChecksum.site_id == Site.id)
    )
    return {code: (seq, checksum) for code, seq, checksum in rows}


def due(session: Session, now: datetime, interval_s: float) -> list[int]:
    """Sites whose feed moved since their last checksum, computed more than `interval_s` ago (or never)."""
    stale = now - timedelta(seconds=interval_s)
    rows = session.scalars(
        select(SiteFeedHead.site_id)
        .outerjoin(SiteChecksum, SiteChecksum.site_id == SiteFeedHead.site_id)
        .where(or_(SiteChecksum.site_id.is_(None), (SiteChecksum.seq != SiteFeedHead.seq) & (SiteChecksum.at <= stale)))
        .order_by(SiteFeedHead.site_id)
    )
    return list(rows)
