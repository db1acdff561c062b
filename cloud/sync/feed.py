"""Each site's change feed: appended in the caller's transaction, published by `cloud.sync.mqtt` after commit.

Sequence numbers are handed out under a per-site lock (the site's `site_feed_heads` row, taken by an
upsert that returns the new head), so they count 1, 2, 3 ... without gaps, and one site's changes
commit in sequence order: a publisher that sees seq n committed has seen every seq below it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence, Set
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import bindparam, event, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from cloud.audit.service import record
from cloud.db import dialect_insert, utcnow
from cloud.settings import Settings
from cloud.sites.models import Gate, Site
from cloud.sync.models import FeedChange, SiteFeedHead, _new_epoch
from models.credential import public_key_b64
from models.keyset import sign_key_set
from models.sync import Change, GateRoster, KeySet

# Set on a session that appended changes, so an after-commit hook knows to wake the publisher.
APPENDED = "starfish.feed_appended"
# PostgreSQL's NOTIFY channel of feed appends: the lease holder in another process wakes on it (`cloud.sync.leader`).
CHANNEL = "starfish_feed"

log = logging.getLogger("starfish.cloud.sync")

_change = TypeAdapter[Change](Change)


def append_change(session: Session, site_id: int, change: Change, *, now: datetime | None = None) -> FeedChange:
    """Append one change to the site's feed. The caller commits."""
    return append_changes(session, site_id, [change], now=now)[0]


def append_changes(
    session: Session, site_id: int, changes: Sequence[Change], *, now: datetime | None = None
) -> list[FeedChange]:
    """Append changes to the site's feed in this order, taking as many sequence numbers. The caller commits."""
    if not changes:
        return []
    head = _advance_head(session, site_id, len(changes))
    at = now or utcnow()
    rows = [
        FeedChange(site_id=site_id, seq=seq, kind=change.kind, body=change.model_dump(mode="json"), created_at=at)
        for seq, change in zip(range(head - len(changes) + 1, head + 1), changes, strict=True)
    ]
    session.add_all(rows)
    session.info[APPENDED] = True
    return rows


def head_seq(session: Session, site_id: int) -> int:
    """The last sequence number of the site's feed (0 when it has none)."""
    return head(session, site_id)[0]


def head(session: Session, site_id: int) -> tuple[int, str]:
    """(last sequence number, epoch) of the site's feed; (0, "") when it has none."""
    row = session.execute(select(SiteFeedHead.seq, SiteFeedHead.epoch).where(SiteFeedHead.site_id == site_id)).first()
    return (0, "") if row is None else (row[0], row[1])


def new_epoch(session: Session, site_id: int) -> str:
    """Start a new run of the site's feed (after restoring an older backup): every gate fetches a snapshot.
    The caller commits."""
    epoch = _new_epoch()
    _advance_head(session, site_id, 0)
    session.execute(update(SiteFeedHead).where(SiteFeedHead.site_id == site_id).values(epoch=epoch))
    session.info[APPENDED] = True  # wakes the publisher: the new head goes out
    return epoch


def notify_on_commit(factory: sessionmaker[Session]) -> None:
    """On PostgreSQL, a transaction of `factory` that appended changes also sends a NOTIFY on `CHANNEL`:
    delivered on its commit to every cloud process, so the one publishing wakes at once."""
    engine = factory.kw.get("bind")
    if (
        engine is not None
        and engine.dialect.name == "postgresql"
        and not event.contains(factory, "before_commit", _notify)
    ):
        event.listen(factory, "before_commit", _notify)


def _notify(session: Session) -> None:
    if session.info.get(APPENDED):
        session.execute(text(f"NOTIFY {CHANNEL}"))


def restart_behind(session: Session, heads: Mapping[str, tuple[str, int]]) -> dict[str, str]:
    """Start a new epoch for every site whose head on the broker (site code -> (epoch, seq), as the gates were
    told) is in this feed's epoch but beyond its last seq: this database is older than what the gates hold
    (restored from a backup), and its next changes would reuse seqs they took already. Audited, committed;
    returns site code -> new epoch. Only the feed's publisher calls it, before it publishes anything."""
    started = {}
    for site_id, code in session.execute(select(Site.id, Site.code).order_by(Site.id)).all():
        if code not in heads:
            continue
        lock_feed(session, site_id)
        seq, epoch = head(session, site_id)
        their_epoch, their_seq = heads[code]
        if their_epoch != epoch or their_seq <= seq:
            continue
        started[code] = new_epoch(session, site_id)
        detail = {"old_epoch": epoch, "seq": seq, "broker_seq": their_seq, "epoch": started[code]}
        record(session, "system", "feed.new_epoch", "site", site_id, detail)
        log.warning(
            "site %s: the broker's feed head is at seq %d of epoch %s, this database only at %d (restored from a "
            "backup?): started feed epoch %s, every gate of the site fetches a snapshot",
            code,
            their_seq,
            epoch,
            seq,
            started[code],
        )
    session.commit()
    return started


def lock_feed(session: Session, site_id: int) -> None:
    """Take the site's feed lock until this transaction ends (before reading what the next change is made of)."""
    _advance_head(session, site_id, 0)


def _advance_head(session: Session, site_id: int, by: int) -> int:
    # INSERT .. ON CONFLICT DO UPDATE .. RETURNING: one round trip that locks the head row until commit
    # (PostgreSQL); SQLite transactions here begin IMMEDIATE, so writers take turns anyway.
    # Built once per dialect, the numbers as parameters: building and keying it was most of a sale's feed cost.
    dialect = session.get_bind().dialect.name
    stmt = _ADVANCE.get(dialect)
    if stmt is None:
        stmt = _ADVANCE[dialect] = (
            dialect_insert(session)(SiteFeedHead)
            .values(site_id=bindparam("site"), seq=bindparam("by"))
            .on_conflict_do_update(
                index_elements=[SiteFeedHead.site_id], set_={"seq": SiteFeedHead.seq + bindparam("by")}
            )
            .returning(SiteFeedHead.seq)
        )
    return int(session.execute(stmt, {"site": site_id, "by": by}).scalar_one())


_ADVANCE: dict[str, Any] = {}


def trusted_keys(settings: Settings) -> dict[int, str]:
    """The public keys gates should trust: the signing key's, plus older ones kept for rotation."""
    keys = dict(settings.sync_previous_public_keys)
    keys[settings.signing_key_id] = public_key_b64(settings.signing_key.public_key())
    return keys


def trusted_key_set(settings: Settings) -> KeySet:
    """`trusted_keys`, signed by the key-set root: what gates install (on the feed and in snapshots)."""
    keys = trusted_keys(settings)
    return KeySet(keys=keys, signature=sign_key_set(settings.keyset_root_key, keys))


def ensure_key_sets(session: Session, key_set: KeySet, *, now: datetime | None = None) -> list[int]:
    """Append `key_set` to every site whose feed's last one differs (keys or signature), and commit;
    returns those sites."""
    return _ensure_latest(session, "keys", lambda _site_id: key_set, now)


def gate_codes(session: Session, site_id: int) -> list[str]:
    """The codes of the site's gates, sorted: its roster."""
    return sorted(session.scalars(select(Gate.code).where(Gate.site_id == site_id)))


def append_roster(session: Session, site_id: int, *, now: datetime | None = None) -> FeedChange:
    """Append the site's gate roster as this transaction sees it. The caller commits.

    The site's feed lock is taken before the gates are read, so of two gates added at once the
    later roster names both.
    """
    _advance_head(session, site_id, 0)
    return append_change(session, site_id, GateRoster(gates=gate_codes(session, site_id)), now=now)


def ensure_rosters(session: Session, *, now: datetime | None = None) -> list[int]:
    """Append a GateRoster to every site whose feed's last one differs from its gates (a feed from before
    rosters: gates learn theirs), and commit; returns those sites. A site without gates needs none."""

    def roster(site_id: int) -> GateRoster | None:
        codes = gate_codes(session, site_id)
        return GateRoster(gates=codes) if codes else None

    return _ensure_latest(session, "gates", roster, now)


def _ensure_latest(
    session: Session, kind: str, wanted: Callable[[int], Change | None], now: datetime | None
) -> list[int]:
    """Append `wanted(site)` to every site whose feed's last change of `kind` is another, and commit;
    returns those sites. `wanted` gives None for a site that needs no such change."""
    changed = []
    for site_id in session.scalars(select(Site.id).order_by(Site.id)):
        _advance_head(session, site_id, 0)  # take the site's lock before looking, so two starts append once
        last = session.scalar(
            select(FeedChange.body)
            .where(FeedChange.site_id == site_id, FeedChange.kind == kind)
            .order_by(FeedChange.seq.desc())
            .limit(1)
        )
        change = wanted(site_id)
        if change is not None and (last is None or _change.validate_python(last) != change):
            append_change(session, site_id, change, now=now)
            changed.append(site_id)
    session.commit()
    return changed


def unpublished(
    session: Session, *, limit: int, skip: Set[int] = frozenset()
) -> list[tuple[int, str, str, int, datetime, dict[str, Any]]]:
    """Committed changes the broker has not acknowledged, but those in `skip` (in flight), in order:
    (id, site code, feed epoch, seq, created_at, body)."""
    oldest = session.scalars(
        select(FeedChange.id)
        .where(FeedChange.published_at.is_(None))
        .order_by(FeedChange.site_id, FeedChange.seq)
        .limit(limit + len(skip))
    )
    ids = [i for i in oldest if i not in skip][:limit]
    if not ids:
        return []
    rows = session.execute(
        select(FeedChange.id, Site.code, SiteFeedHead.epoch, FeedChange.seq, FeedChange.created_at, FeedChange.body)
        .join(Site, Site.id == FeedChange.site_id)
        .join(SiteFeedHead, SiteFeedHead.site_id == FeedChange.site_id)
        .where(FeedChange.id.in_(ids))
        .order_by(FeedChange.site_id, FeedChange.seq)
    )
    return [(i, code, epoch, seq, at, body) for i, code, epoch, seq, at, body in rows]


def mark_published(session: Session, change_ids: Sequence[int], *, now: datetime | None = None) -> None:
    """Record that the broker acknowledged these changes, and commit."""
    at = now or utcnow()
    for i in range(0, len(change_ids), 500):
        session.execute(
            update(FeedChange)
            .where(FeedChange.id.in_(change_ids[i : i + 500]), FeedChange.published_at.is_(None))
            .values(published_at=at)
        )
    session.commit()


def published_heads(session: Session, now: datetime) -> list[tuple[str, str, int, datetime]]:
    """(site code, feed epoch, seq, as of) per site: every change of the site's feed up to seq has been published,
    and a gate that has them all knew the site as of `as of`: `now` (taken before this read), or just
    before the oldest change still unpublished."""
    unpublished = {
        site_id: (seq, at)
        for site_id, seq, at in session.execute(
            select(FeedChange.site_id, func.min(FeedChange.seq), func.min(FeedChange.created_at))
            .where(FeedChange.published_at.is_(None))
            .group_by(FeedChange.site_id)
        )
    }
    rows = session.execute(
        select(Site.id, Site.code, SiteFeedHead.epoch, SiteFeedHead.seq)
        .join(SiteFeedHead, SiteFeedHead.site_id == Site.id)
        .order_by(Site.id)
    )
    heads = []
    for site_id, code, epoch, seq in rows:
        if site_id in unpublished:
            first, oldest = unpublished[site_id]
            heads.append((code, epoch, first - 1, min(now, oldest)))
        else:
            heads.append((code, epoch, seq, now))
    return heads
