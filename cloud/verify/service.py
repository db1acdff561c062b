"""Handheld verification (核销): look a code up, verify it (one entry, the gates' rules), undo, list.

A verification counts on the very counters gate passages count on (`Ticket.entries_used`,
`first_entry_at`, status `used`; see `cloud.sync.service`), with the ticket's row locked in the
same transaction, so the two ways of using a ticket see each other:

- gate then handheld: the gate's passage, once it reached the cloud, has counted the entry, and the
  handheld is refused ``used_up`` (a gate still holding its passage in its outbox is the known window);
- handheld then gate: each accepted verification, and each undo, goes down the site's feed as a
  `models.sync.Usage` change in the same transaction, so every gate of the site counts it like another
  gate's passage and denies a used-up ticket offline (a gate that admitted it before the change arrived
  sends a passage the cloud flags ``over_use``, as it would for two gates). A gate that takes a snapshot
  instead finds the verification counted in the ticket line (`entries_used`, `first_entry_at`).

Each verification is stored once per handheld-made `event_id`, refusals too: a handheld replaying its
offline queue gets the same answer again. The rules are applied at the handheld's scan time `at`
(an admission made offline stays one), which must be plausible (`models.sync.implausible_time`, and
no earlier than the ticket's sale, as sync judges a gate's passage): else 422, nothing stored.
Undo gives the entry back within `STARFISH_VERIFY_UNDO_MINUTES` of the verification reaching the
cloud (the handheld's clock is not trusted for that), audited with its reason; undoing again
answers the undone verification again.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.channels.calls import EntryUse, cancel_for_source, handheld_source, on_entries_used
from cloud.customers.models import Customer, Holder
from cloud.deps import MAX_ID, Principal
from cloud.errors import Conflict, DomainError, not_found
from cloud.orders.models import Order
from cloud.settings import Settings
from cloud.sites.models import Site
from cloud.sites.service import get_site
from cloud.sync.feed import append_change
from cloud.sync.models import GatePassage
from cloud.tickets.models import Ticket, TicketState
from cloud.verify import rules
from cloud.verify.models import Verification
from cloud.verify.schemas import LookupOut, TicketLookupOut, VerificationOut, VerifyIn
from models.credential import Invalid, PlainCode, SignedCredential, load_public_key, parse, site_tag
from models.sync import EVENT_CLOCK_SKEW, Usage, implausible_time

PHONE = re.compile(r"1\d{10}")  # a mainland mobile number; ticket numbers have at most 10 digits
LOOKUP_MAX = 50


def verify(session: Session, settings: Settings, actor: Principal, body: VerifyIn, *, now: datetime) -> Verification:
    """Verify one code for the handheld's site: consume one entry, or store why not. Commits."""
    if (bad := implausible_time(body.at, now)) is not None:
        raise DomainError(
            "implausible_time",
            f"The scan time {body.at.isoformat()} cannot be right ({bad}): check the handheld's clock",
            f"扫码时间 {body.at.isoformat()} 不可信（{bad}）：请检查手持机时间",
            status_code=422,
        )
    get_site(session, body.site_id)
    if (done := _stored(session, body)) is not None:
        return done
    if session.scalar(select(GatePassage.id).where(GatePassage.event_id == body.event_id).limit(1)) is not None:
        raise Conflict(
            "event_id_taken", "This event id is a gate's passage: a handheld makes its own", "该事件编号已被闸机使用"
        )
    ticket, refused = _locked_ticket(session, settings, body.code, body.site_id)
    if (done := _stored(session, body)) is not None:  # the same event, committed while we waited for the lock
        return done
    if ticket is not None and body.at < ticket.issued_at - EVENT_CLOCK_SKEW:
        raise DomainError(
            "before_sale",
            "The scan time is before the ticket was sold: check the handheld's clock",
            "扫码时间早于售票时间：请检查手持机时间",
            status_code=422,
        )
    verdict = rules.judge(ticket, body.site_id, body.at) if ticket is not None else rules.refusal(refused or "")
    row = Verification(
        event_id=body.event_id,
        site_id=body.site_id,
        device=body.device,
        staff_id=actor.subject_id,
        staff_name=actor.name[:64],
        code=body.code,
        ticket_id=ticket.id if ticket is not None else None,
        at=body.at,
        received_at=now,
        accepted=verdict.ok,
        reason=verdict.code,
        entries_left=verdict.entries_left,
    )
    if ticket is not None:
        row.channel, row.ota_channel = _channel(session, ticket)
        if verdict.ok:
            _count(ticket, body.at)
            row.entries_left = rules.entries_left(ticket)
            _tell_gates(session, ticket, row, now=now)
            # An OTA ticket's platform is told of the use (a persisted call, sent after this commits).
            use = EntryUse(ticket.id, ticket.order_id, body.at, handheld_source(body.event_id))
            on_entries_used(session, [use], now)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # the same event id, stored by a concurrent request in between
        session.rollback()
        if (done := _stored(session, body)) is not None:
            return done
        raise
    return row


def _tell_gates(session: Session, ticket: Ticket, v: Verification, *, now: datetime) -> None:
    """Append the verification (or its undo) to the ticket's site's feed, counts as they now stand, under
    the feed's lock: taken after the ticket's row lock, as every writer of a ticket and the feed takes them."""
    site = session.scalar(select(Site.code).where(Site.id == ticket.site_id))
    assert site is not None
    usage = Usage(
        ticket_id=str(ticket.id),
        event_id=v.event_id,
        at=v.at,
        site=site,
        device=v.device,
        undone=v.undone_at is not None,
        entries_used=ticket.entries_used,
        first_entry_at=ticket.first_entry_at,
    )
    append_change(session, ticket.site_id, usage, now=now)


def _stored(session: Session, body: VerifyIn) -> Verification | None:
    """The verification already stored under this event id; another code or site under it is refused."""
    row = session.scalar(select(Verification).where(Verification.event_id == body.event_id))
    if row is not None and (row.code, row.site_id, row.device) != (body.code, body.site_id, body.device):
        raise Conflict(
            "event_id_reused",
            f"Event {body.event_id} was stored for another code or handheld",
            f"事件 {body.event_id} 已用于其他票码或手持机",
            verification_id=row.id,
        )
    return row


def _keys(settings: Settings) -> dict[int, Ed25519PublicKey]:
    keys = {kid: load_public_key(b64) for kid, b64 in settings.sync_previous_public_keys.items()}
    keys[settings.signing_key_id] = settings.signing_key.public_key()
    return keys


def _locked_ticket(session: Session, settings: Settings, code: str, site_id: int) -> tuple[Ticket | None, str | None]:
    """The ticket `code` names, its row locked; or None and the refusal's code (`wrong_site` when another
    site's ticket, so the skier is sent to the right resort rather than told the code does not exist)."""
    q = select(Ticket).with_for_update()
    if code.isascii() and code.isdigit() and len(code) <= 10:  # a ticket number typed from the paper ticket
        ticket = session.scalar(q.where(Ticket.id == _no(int(code))))
        return ticket, None if ticket is not None else "unknown_ticket"
    credential = parse(code, _keys(settings))
    if isinstance(credential, Invalid):
        return None, credential.code
    if isinstance(credential, SignedCredential):
        if credential.site is not None and credential.site != site_tag(get_site(session, site_id).code):
            return None, "wrong_site"
        found = session.scalar(q.where(Ticket.id == _no(credential.ticket_no)))
        return (found, None) if found is not None else (None, "unknown_ticket")
    assert isinstance(credential, PlainCode)
    ticket = session.scalar(q.where(Ticket.site_id == site_id, Ticket.code == credential.code))
    if ticket is not None:
        return ticket, None
    elsewhere = session.scalar(select(Ticket.id).where(Ticket.code == credential.code).limit(1))
    return None, "wrong_site" if elsewhere is not None else "unknown_ticket"


def _no(ticket_no: int) -> int:
    """A ticket number as the id column holds it; 0 (no ticket's) when out of its range."""
    return ticket_no if 0 < ticket_no <= MAX_ID else 0


def _count(ticket: Ticket, at: datetime) -> None:
    """One entry used, exactly as a gate passage counts it (`cloud.sync.service._count_entry`)."""
    ticket.entries_used += 1
    if ticket.first_entry_at is None or at < ticket.first_entry_at:
        ticket.first_entry_at = at
    if ticket.status == TicketState.VALID and ticket.entries is not None and ticket.entries_used >= ticket.entries:
        ticket.status = TicketState.USED.value


def _channel(session: Session, ticket: Ticket) -> tuple[str | None, str | None]:
    row = session.execute(select(Order.channel, Order.ota_channel).where(Order.id == ticket.order_id)).first()
    return (row.channel, row.ota_channel) if row is not None else (None, None)


def undo(
    session: Session, settings: Settings, actor: Principal, verification_id: int, reason: str, *, now: datetime
) -> Verification:
    """Give a verification's entry back, within the undo window; audited. Commits."""
    first = session.get(Verification, verification_id)
    if first is None:
        raise not_found("Verification", "核销记录", verification_id)
    ticket = None
    if first.ticket_id is not None:
        ticket = session.scalar(select(Ticket).where(Ticket.id == first.ticket_id).with_for_update())
    v = session.scalar(
        select(Verification)
        .where(Verification.id == verification_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert v is not None
    if v.undone_at is not None:
        return v  # undone already: the handheld's retry gets the same answer
    if not v.accepted or ticket is None:
        raise Conflict("not_accepted", "A refused verification counted nothing to undo", "该核销未成功，无需撤销")
    window = timedelta(minutes=settings.verify_undo_minutes)
    if now - v.received_at > window:
        raise Conflict(
            "undo_window_passed",
            f"A verification can be undone within {settings.verify_undo_minutes} minutes only",
            f"核销仅可在 {settings.verify_undo_minutes} 分钟内撤销",
            verified_at=v.received_at.isoformat(),
        )
    ticket.entries_used = max(ticket.entries_used - 1, 0)
    if ticket.status == TicketState.USED and (ticket.entries is None or ticket.entries_used < ticket.entries):
        ticket.status = TicketState.VALID.value
    ticket.first_entry_at = _first_entry(session, ticket, but=v.id)
    v.undone_at, v.undone_by, v.undo_reason = now, actor.actor[:100], reason
    v.entries_left = rules.entries_left(ticket)
    _tell_gates(session, ticket, v, now=now)
    # A platform call not sent yet is called off; one already sent stays told (no platform undo is sent).
    called_off = cancel_for_source(session, handheld_source(v.event_id), now)
    detail = {"ticket_id": ticket.id, "reason": reason, "at": str(v.at), "platform_call_cancelled": called_off}
    record(session, actor, "verify.undo", "verification", v.id, detail)
    session.commit()
    return v


def _first_entry(session: Session, ticket: Ticket, *, but: int) -> datetime | None:
    """The earliest counted use left on the ticket: gate passages and verifications not undone."""
    gate = session.scalar(
        select(func.min(GatePassage.at)).where(
            GatePassage.site_id == ticket.site_id,
            GatePassage.ticket_id == str(ticket.id),
            GatePassage.passed.is_(True),
            GatePassage.counted.is_(True),
        )
    )
    hand = session.scalar(
        select(func.min(Verification.at)).where(
            Verification.ticket_id == ticket.id,
            Verification.accepted.is_(True),
            Verification.undone_at.is_(None),
            Verification.id != but,
        )
    )
    return min((t for t in (gate, hand) if t is not None), default=None)


def lookup(session: Session, settings: Settings, q: str, site_id: int | None, *, now: datetime) -> LookupOut:
    """What `q` names: a signed QR, a plain/OTA code, a ticket number or a holder's phone, and its tickets."""
    q = q.strip()
    base = select(Ticket).order_by(Ticket.id.desc()).limit(LOOKUP_MAX)
    if PHONE.fullmatch(q):
        kind = "phone"
        stmt = base.join(Order, Order.id == Ticket.order_id).join(Customer, Customer.id == Order.customer_id)
        stmt = stmt.where(Customer.phone == q)
    elif q.isascii() and q.isdigit() and len(q) <= 10:
        kind, stmt = "ticket_no", base.where(Ticket.id == _no(int(q)))
    else:
        credential = parse(q, _keys(settings))
        if isinstance(credential, Invalid):
            verdict = rules.refusal(credential.code)
            raise DomainError(verdict.code, verdict.en, verdict.zh, status_code=422)
        if isinstance(credential, SignedCredential):
            kind, stmt = "signed", base.where(Ticket.id == _no(credential.ticket_no))
        else:
            kind, stmt = "code", base.where(Ticket.code == q)
    tickets = list(session.scalars(stmt))
    return LookupOut(matched_as=kind, tickets=[_view(session, t, site_id, now) for t in tickets])


def _view(session: Session, ticket: Ticket, site_id: int | None, now: datetime) -> TicketLookupOut:
    verdict = rules.judge(ticket, site_id, now)
    channel, ota_channel = _channel(session, ticket)
    site_code = session.scalar(select(Site.code).where(Site.id == ticket.site_id)) or ""
    holder = session.scalar(select(Holder.name).where(Holder.id == ticket.holder_id)) if ticket.holder_id else None
    return TicketLookupOut(
        ticket_id=ticket.id,
        site_id=ticket.site_id,
        site_code=site_code,
        product_id=ticket.product_id,
        kind=ticket.kind,
        status=ticket.status,
        code=ticket.code,
        channel=channel or "",
        ota_channel=ota_channel,
        visit_date=ticket.visit_date,
        valid_from=ticket.valid_from,
        valid_until=ticket.valid_until,
        entries=ticket.entries,
        entries_used=ticket.entries_used,
        entries_left=rules.entries_left(ticket),
        first_entry_at=ticket.first_entry_at,
        holder_name=holder,
        valid_now=verdict.ok,
        reason=verdict.code,
        message=verdict.en,
        message_zh=verdict.zh,
    )


def listing(
    session: Session,
    settings: Settings,
    *,
    site_id: int | None = None,
    channel: str | None = None,
    staff: str | None = None,
    gate: str | None = None,
    window: tuple[datetime, datetime] | None = None,
    accepted: bool | None = None,
    limit: int = 1000,
) -> list[Verification]:
    """Handheld verifications, oldest first, by site, channel (the order's, or its OTA platform), staff member,
    handheld (`gate`), time window (`cloud.verify.listing.day_bounds`) and outcome."""
    stmt: Select[Verification] = select(Verification).order_by(Verification.at, Verification.id).limit(limit)
    if site_id is not None:
        stmt = stmt.where(Verification.site_id == site_id)
    if channel:
        stmt = stmt.where((Verification.channel == channel) | (Verification.ota_channel == channel))
    if staff:
        stmt = stmt.where(Verification.staff_name == staff)
    if gate:
        stmt = stmt.where(Verification.device == gate)
    if accepted is not None:
        stmt = stmt.where(Verification.accepted.is_(accepted))
    if window is not None:
        stmt = stmt.where(Verification.at >= window[0], Verification.at < window[1])
    return list(session.scalars(stmt))


def out(v: Verification) -> VerificationOut:
    """A stored verification with its answer's sentences."""
    en, zh = rules.TEXTS.get(v.reason, rules.TEXTS["unreadable"])
    fields = {
        name: getattr(v, name)
        for name in VerificationOut.model_fields
        if name not in ("source", "message", "message_zh")
    }
    return VerificationOut(**fields, source="handheld", message=en, message_zh=zh)
