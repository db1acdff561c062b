"""A process's cache of what each site sells (products, price changes, holidays), for the sell path.

Contract for every writer: any change to a site's products, their prices or price changes, its
holidays, or the site row itself calls `bump(session, site_id)` in the same transaction. A cached
catalog is used only while the site's `catalog_version` equals the one it was loaded at, so another
process's committed change is seen by the next sale everywhere.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from cloud.sites.models import Site


def bump(session: Session, site_id: int) -> None:
    """Mark the site's catalog changed (caches reload it); in the caller's transaction, which commits."""
    session.execute(update(Site).where(Site.id == site_id).values(catalog_version=Site.catalog_version + 1))
