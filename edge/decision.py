"""The admission decision: a pure function of credential, ticket, history, gate config and now.

No clock, database or network in here. Each rule denies with its own code (`edge.reasons.Reason`).
Rules, in the order they are applied:

1. Emergency / keep-open mode (or a fire alarm) admits everyone, counting nothing; the barrier
   is held open, so nothing is pulsed.
2. A credential that failed to parse or verify is denied with its own code; a signed token of
   another site: ``wrong_site`` (see `models.credential`).
3. A plain code the cache does not know: ``unknown_ticket``, unless it is one of our voucher codes
   (its check holds under the site's voucher key, `models.voucher`): then its ticket was sold moments
   ago and is on its way down the feed, so ``not_synced_yet`` while the feed is fresh (trying again
   in a moment will work), ``stale_feed`` when it is not (waiting will not help: see staff).
   A signed credential naming this site is enough on its own (a ticket sold after the last sync
   still admits); the cache only adds status. A version 1 token names no site, so it needs the
   site's cache: ``unknown_ticket``.
   A recognised face (`FaceMatch`) needs the cached season pass its template belongs to, held by
   the holder the template names; a face never admits on its own (``unknown_ticket``).
4. Rescan suppression: the same ticket at this reader within ``rescan_seconds`` repeats the
   earlier answer and counts nothing. A repeated admission whose passage was completed does
   not open the barrier again (it was a double read, or a second person); an admission that
   ended with nobody passing counted nothing, so it is simply evaluated afresh.
5. Exit gates (direction ``out``) let any recognised ticket out, whatever its state, counting
   nothing (``ok_exit``): never trap anybody.
6. Revoked, then blocked.
7. Product kind / product id allowed at this gate: ``wrong_gate``.
8. Validity window (``not_yet_valid``, ``expired``); time-window tickets also expire
   ``window_minutes`` after their first counted entry.
9. Entries: ``used_up`` when all entries are counted.
10. Daily limit (the ticket's or the gate's, the smaller): ``daily_limit``.
11. Anti-passback: an entry within ``passback_seconds`` of the last counted entry, with no
    exit between them: ``passback``.

Past all of them: ``ok``, counting one entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from edge.reasons import Reason
from models import Direction, GateConfig, ProductKind, Ticket, TicketStatus
from models.credential import Credential, Invalid, PlainCode, SignedCredential, site_tag
from models.voucher import looks_like_ours


@dataclass(frozen=True, slots=True)
class FaceMatch:
    """A face the gate's matcher recognised: the season pass its template belongs to, and how near it was."""

    ticket_id: str
    holder_id: str
    distance: float

    @property
    def label(self) -> bytes:
        """How the face stands where a code's text would (intake, observers, logs)."""
        return f"face:{self.ticket_id}".encode()


Presented = Credential | FaceMatch


@dataclass(frozen=True, slots=True)
class Passage:
    """A completed passage of one ticket, at this gate or another one of the site."""

    at: datetime
    gate_id: str
    direction: Direction
    counted: bool


@dataclass(frozen=True, slots=True)
class PriorScan:
    """The last answer this reader gave for this ticket, for rescan suppression."""

    at: datetime
    admit: bool
    code: str
    passed: bool | None  # None while the passage is not yet resolved


@dataclass(frozen=True, slots=True)
class History:
    """What the gate knows locally about one ticket's use."""

    passages: Sequence[Passage] = ()
    prior_scan: PriorScan | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    admit: bool
    code: str
    ticket_id: str | None = None
    counts: bool = False  # a completed passage will use up an entry
    repeat: bool = False  # rescan: the earlier answer, repeated
    open_barrier: bool = False
    entries_left: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _deny(code: str, ticket_id: str | None = None) -> Decision:
    """A denial with its code: a `Reason`, or a failed credential's own (`models.credential.Invalid`)."""
    return Decision(admit=False, code=code, ticket_id=ticket_id)


_site_tag = lru_cache(maxsize=8)(site_tag)


def ticket_from_credential(cred: SignedCredential) -> Ticket:
    """The facts a signed credential carries, as a Ticket (used when the cache has none).

    Built without validation: the signature already vouches for these fields, and a season
    pass sold after the last sync has no holder record at the gate yet.
    """
    return Ticket.model_construct(
        ticket_id=cred.ticket_id,
        kind=cred.kind,
        valid_from=cred.valid_from,
        valid_until=cred.valid_until,
        entries=cred.entries,
        window_minutes=cred.window_minutes,
    )


def _face_fits(face: FaceMatch, ticket: Ticket | None) -> bool:
    """A face admits only as its holder's cached season pass."""
    return (
        ticket is not None
        and ticket.ticket_id == face.ticket_id
        and ticket.kind is ProductKind.SEASON
        and ticket.holder is not None
        and ticket.holder.holder_id == face.holder_id
    )


def decide(
    credential: Presented,
    ticket: Ticket | None,
    history: History,
    gate: GateConfig,
    now: datetime,
    *,
    voucher_key: bytes | None = None,
    feed_fresh: bool = False,
) -> Decision:
    """Admit or deny one presented credential; pure.

    `voucher_key` is the site's (None: the gate cannot tell our voucher codes); `feed_fresh` whether the
    ticket feed is recent enough that a ticket sold moments ago will arrive shortly (False without sync).
    """
    if gate.emergency_open:
        return Decision(admit=True, code=Reason.EMERGENCY)  # the barrier is held open; nothing to pulse
    if isinstance(credential, Invalid):
        return _deny(credential.code)
    if isinstance(credential, FaceMatch) and not _face_fits(credential, ticket):
        return _deny(Reason.UNKNOWN_TICKET)
    if (
        isinstance(credential, SignedCredential)
        and credential.site is not None
        and credential.site != _site_tag(gate.site_id)
    ):
        return _deny(Reason.WRONG_SITE, credential.ticket_id)

    if ticket is None:
        if (
            isinstance(credential, PlainCode)
            and voucher_key is not None
            and looks_like_ours(credential.code, voucher_key)
        ):
            return _deny(Reason.NOT_SYNCED_YET if feed_fresh else Reason.STALE_FEED)
        if isinstance(credential, PlainCode | FaceMatch) or credential.site is None:
            return _deny(Reason.UNKNOWN_TICKET)
        ticket = ticket_from_credential(credential)
    tid = ticket.ticket_id

    prior = history.prior_scan
    if (
        prior is not None
        and timedelta(0) <= now - prior.at <= timedelta(seconds=gate.rescan_seconds)
        and (not prior.admit or prior.passed is not False)
    ):
        return Decision(admit=prior.admit, code=prior.code, ticket_id=tid, repeat=True)

    if gate.direction is Direction.OUT:
        # Never trap anybody inside: any ticket the gate recognises may leave, whatever its state.
        return Decision(admit=True, code=Reason.OK_EXIT, ticket_id=tid, open_barrier=True)

    if ticket.status is TicketStatus.REVOKED:
        return _deny(Reason.REVOKED, tid)
    if ticket.status is TicketStatus.BLOCKED:
        return _deny(Reason.BLOCKED, tid)
    if ticket.kind not in gate.allowed_kinds:
        return _deny(Reason.WRONG_GATE, tid)
    if gate.allowed_products is not None and ticket.product_id not in gate.allowed_products:
        return _deny(Reason.WRONG_GATE, tid)

    if now < ticket.valid_from:
        return _deny(Reason.NOT_YET_VALID, tid)
    if now >= ticket.valid_until:
        return _deny(Reason.EXPIRED, tid)

    entries = [p for p in history.passages if p.direction is Direction.IN and p.counted]
    if ticket.kind is ProductKind.TIME_WINDOW and ticket.window_minutes is not None:
        firsts = [p.at for p in entries]
        if ticket.first_entry_at is not None:
            firsts.append(ticket.first_entry_at)
        if firsts and now >= min(firsts) + timedelta(minutes=ticket.window_minutes):
            return _deny(Reason.EXPIRED, tid)

    used = max(len(entries), ticket.entries_used)
    if ticket.entries is not None and used >= ticket.entries:
        return _deny(Reason.USED_UP, tid)

    limits = [x for x in (ticket.daily_limit, gate.daily_limit) if x is not None]
    if limits:
        tz = ZoneInfo(gate.timezone)
        today = now.astimezone(tz).date()
        if sum(1 for p in entries if p.at.astimezone(tz).date() == today) >= min(limits):
            return _deny(Reason.DAILY_LIMIT, tid)

    if gate.passback_seconds > 0:
        last = max(history.passages, key=lambda p: p.at, default=None)
        if (
            last is not None
            and last.direction is Direction.IN
            and last.counted
            and now - last.at < timedelta(seconds=gate.passback_seconds)
        ):
            return _deny(Reason.PASSBACK, tid)

    left = None if ticket.entries is None else ticket.entries - used - 1
    return Decision(admit=True, code=Reason.OK, ticket_id=tid, counts=True, open_barrier=True, entries_left=left)
