"""A process's cache of what each site sells (products, price changes, holidays), for the sell path.

Contract for every writer: any change to a site's products, their prices or price changes, its
holidays, or the site row itself calls `bump(session, site_id)` in the same transaction. A cached
catalog is used only while the site's `catalog_version` equals the one it was loaded at, so another
process's committed change is seen by the next sale everywhere.

How a sale checks the version, cheaply and correctly across processes:

* `current(session, site_id)` reads the site's version (one small SELECT on the primary key) in the
  sale's own transaction and reloads when it differs. For paths that have no statement to carry it.
* `cached(session, site_id)` + `confirm(catalog, version)`: the counter sale prices its lines from the
  cached catalog without asking, then reads the version in a statement it runs anyway (the order's
  INSERT ... RETURNING the site's `catalog_version`). A different version raises `Stale`: the caller
  rolls the whole transaction back, and sells again from a reloaded catalog. So a sale never commits
  prices older than the catalog its own transaction saw; a change committed after that read orders
  after the sale (the sale happened first), exactly as if the sale had read the rows themselves.
* A load reads the version first, then the rows (each statement may see a later commit under READ
  COMMITTED): rows newer than their label only cause one needless reload; the reverse cannot happen.

The cache is per engine (a new app, a new database: a new cache). Cached products are transient
`Product` objects that belong to no session: read them, never change or add them.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from cloud.errors import not_found
from cloud.products import prices
from cloud.products.models import Holiday, PriceChange, Product
from cloud.sites.models import Site


def bump(session: Session, site_id: int) -> None:
    """Mark the site's catalog changed (caches reload it); in the caller's transaction, which commits."""
    session.execute(update(Site).where(Site.id == site_id).values(catalog_version=Site.catalog_version + 1))


class Stale(Exception):
    """The catalog a sale was priced from is older than its transaction's: roll back and sell again."""


@dataclass(frozen=True, slots=True)
class SiteCatalog:
    """One site's products, price changes and holidays as of `version`."""

    version: int
    site_id: int
    code: str
    timezone: ZoneInfo
    products: dict[int, Product]
    changes: dict[int, list[prices.Change]]
    holidays: frozenset[date] = field(default_factory=frozenset)

    def day_type(self, day: date) -> str:
        """holiday, weekend or weekday (`cloud.products.service.day_type` without a query)."""
        if day in self.holidays:
            return "holiday"
        return "weekend" if day.weekday() >= 5 else "weekday"

    def price_fen(self, product: Product, day: date, now: datetime) -> tuple[str, int]:
        """(day type, unit price) for a visit on `day` sold at `now` (`cloud.products.service.price_fen`)."""
        kind = self.day_type(day)
        base = prices.Prices(product.weekday_price_fen, product.weekend_price_fen, product.holiday_price_fen)
        return kind, prices.effective(base, self.changes.get(product.id, []), now).for_day_type(kind)


_caches: weakref.WeakKeyDictionary[Engine, dict[int, SiteCatalog]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _cache(session: Session) -> dict[int, SiteCatalog]:
    engine = session.get_bind()
    key = engine if isinstance(engine, Engine) else engine.engine
    with _lock:
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = {}
        return cache


def load(session: Session, site_id: int) -> SiteCatalog:
    """Read the site's catalog (version first, then its rows) in the session's transaction and cache it."""
    site = session.execute(select(Site.catalog_version, Site.code, Site.timezone).where(Site.id == site_id)).first()
    if site is None:
        raise not_found("Site", "场地", site_id)
    columns = Product.__table__.columns
    products = {
        row.id: Product(**{c.key: row._mapping[c] for c in columns})
        for row in session.execute(select(*columns).where(Product.site_id == site_id))
    }
    changes: dict[int, list[prices.Change]] = {}
    if products:
        rows = session.execute(select(PriceChange).where(PriceChange.product_id.in_(products)))
        for (c,) in rows:
            changes.setdefault(c.product_id, []).append(
                prices.Change(
                    c.id,
                    c.effective_at,
                    prices.Prices(c.weekday_price_fen, c.weekend_price_fen, c.holiday_price_fen),
                    c.withdrawn_at is not None,
                )
            )
    holidays = frozenset(session.scalars(select(Holiday.day).where(Holiday.site_id == site_id)))
    tz = ZoneInfo(site.timezone)
    catalog = SiteCatalog(site.catalog_version, site_id, site.code, tz, products, changes, holidays)
    _cache(session)[site_id] = catalog
    return catalog


def cached(session: Session, site_id: int) -> SiteCatalog:
    """The cached catalog without asking the database (loaded if this process has none): `confirm` it later."""
    return _cache(session).get(site_id) or load(session, site_id)


def confirm(catalog: SiteCatalog, version: int | None) -> None:
    """Raise `Stale` (and drop the cached copy) unless `version`, read in this transaction, is the catalog's."""
    if version != catalog.version:
        _forget(catalog)
        raise Stale(f"site {catalog.site_id}: catalog {catalog.version}, database {version}")


def _forget(catalog: SiteCatalog) -> None:
    with _lock:
        for cache in _caches.values():
            if cache.get(catalog.site_id) is catalog:
                del cache[catalog.site_id]


def current(session: Session, site_id: int) -> SiteCatalog:
    """The site's catalog as this transaction sees it: the version read now, the rows from cache if equal."""
    version = session.scalar(select(Site.catalog_version).where(Site.id == site_id))
    if version is None:
        raise not_found("Site", "场地", site_id)
    catalog = _cache(session).get(site_id)
    if catalog is None or catalog.version != version:
        catalog = load(session, site_id)
    return catalog
