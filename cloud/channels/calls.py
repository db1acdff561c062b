"""The persisted verify calls: made in the transaction that counted an entry, sent later, retried, never lost.

Decisions:
- One call per entry used (a gate's passage or a handheld's verification) of a ticket whose order came from a
  platform; its idempotency key (a fresh uuid4 hex) and data never change, so every attempt is a resend.
- A call is claimed before it is sent: its `next_at` moves `LEASE` ahead and that commits, then the platform
  is asked with no transaction open (SQLite's one write lock is never held across a network wait), then the
  result is stored. A process that dies while sending leaves the call to be sent again after the lease, under
  the same key. Several cloud processes take different calls (`skip_locked`).
- One at a time per order, in order: a call waits while an earlier pending call of its order exists (Ctrip
  counts used quantities cumulatively).
- Back-off: 5 s x 2^attempts, at most 30 min apart; after `MAX_ATTEMPTS` failures, or a refusal for good,
  the call is `failing` (shown in the back office, retry makes it pending again).
- A channel that is disabled or has lost its secrets keeps its calls pending, asked again every `PARKED`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session, aliased

from cloud.channels import registry
from cloud.channels.base import CallResult, ChannelAccount, UsedEntry, VerifyCall
from cloud.channels.models import Channel, ChannelCall, ChannelMessage, ChannelOrder
from cloud.db import utcnow
from cloud.orders.models import Order
from cloud.settings import Settings
from cloud.tickets.models import Ticket

log = logging.getLogger("starfish.cloud.channels")

MAX_ATTEMPTS = 16
BATCH = 50  # calls tried per `send_due`
FIRST_WAIT = timedelta(seconds=5)
LONGEST_WAIT = timedelta(minutes=30)
LEASE = timedelta(minutes=5)
PARKED = timedelta(minutes=5)
SOURCE_MAX = 64


@dataclass(frozen=True, slots=True)
class EntryUse:
    """One entry counted on a ticket: by a gate's passage or a handheld's verification (`source`)."""

    ticket_id: int
    order_id: int
    used_at: datetime
    source: str


def gate_source(site: str, gate: str, event_id: uuid.UUID) -> str:
    """The call's source for a gate's passage; the event id alone when the codes make it too long."""
    text = f"gate:{site}/{gate}:{event_id}"
    return text if len(text) <= SOURCE_MAX else f"gate:{event_id}"


def handheld_source(event_id: uuid.UUID) -> str:
    """The call's source for a handheld's verification: its event id (known before the row is stored)."""
    return f"handheld:{event_id}"


def on_entries_used(session: Session, uses: Sequence[EntryUse], now: datetime) -> int:
    """One pending verify call per use whose order came from a platform; how many. The caller commits."""
    if not uses:
        return 0
    rows = session.execute(
        select(ChannelOrder.order_id, ChannelOrder.channel).where(ChannelOrder.order_id.in_({u.order_id for u in uses}))
    )
    channels: dict[int, str] = {order_id: channel for order_id, channel in rows}
    calls = [
        ChannelCall(
            channel=channels[u.order_id],
            kind="verify",
            idempotency_key=uuid.uuid4().hex,
            order_id=u.order_id,
            ticket_id=u.ticket_id,
            source=u.source[:SOURCE_MAX],
            used_at=u.used_at,
            state="pending",
            attempts=0,
            next_at=now,
            reply={},
            created_at=now,
        )
        for u in uses
        if u.order_id in channels
    ]
    session.add_all(calls)
    return len(calls)


def cancel_for_source(session: Session, source: str, now: datetime) -> bool:
    """Cancel the call of this source if it never went out (a handheld verification undone first): pending, never
    tried and not claimed by a sender right now (a claim moves `next_at` ahead). No commit."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(ChannelCall)
            .where(
                ChannelCall.source == source[:SOURCE_MAX],
                ChannelCall.state == "pending",
                ChannelCall.attempts == 0,
                ChannelCall.next_at <= now,
            )
            .values(state="cancelled")
            .execution_options(synchronize_session=False)
        ),
    )
    return result.rowcount > 0


def backoff(attempts: int) -> timedelta:
    return min(FIRST_WAIT * 2**attempts, LONGEST_WAIT)


def send_due(
    session: Session,
    settings: Settings,
    *,
    now: datetime | None = None,
    http: httpx.Client | None = None,
    limit: int = BATCH,
) -> int:
    """Send the verify calls due at `now` (default: the clock, read again for every claim and every result, so a
    slow platform cannot make a lease or a back-off start in the past), one by one, each result committed; how
    many were tried. Never raises for one bad call: it is logged and marked."""
    fixed = now

    def clock() -> datetime:
        return fixed or utcnow()

    client = http or httpx.Client(timeout=10)
    tried = 0
    try:
        for _ in range(limit):
            claimed = _claim(session, settings, clock())
            if claimed is None:
                break
            tried += 1
            if isinstance(claimed, int):
                continue  # parked: the channel is off
            call_id, verify, account = claimed
            try:
                result = registry.adapter(account.code).send(verify, account, client, clock())
            except Exception as exc:  # an adapter's bug: this call waits, the others go on
                log.exception("verify call %s to %s failed in its adapter", call_id, account.code)
                result = CallResult("retry", f"adapter error: {type(exc).__name__}")
            _settle(session, call_id, result, clock())
    finally:
        if http is None:
            client.close()
    return tried


def _claim(session: Session, settings: Settings, now: datetime) -> tuple[int, VerifyCall, ChannelAccount] | int | None:
    """Take the next due call (leased, committed) and build what is sent from the stored rows only."""
    earlier = aliased(ChannelCall)
    waiting = (
        select(earlier.id)
        .where(earlier.order_id == ChannelCall.order_id, earlier.state == "pending", earlier.id < ChannelCall.id)
        .exists()
    )
    call = session.scalar(
        select(ChannelCall)
        .where(ChannelCall.state == "pending", ChannelCall.next_at <= now, ~waiting)
        .order_by(ChannelCall.next_at, ChannelCall.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if call is None:
        session.rollback()
        return None
    account = registry.account(session, settings, call.channel)
    if account is None:
        call.next_at, call.last_error = now + PARKED, "the channel is disabled or not configured"
        session.commit()
        return call.id
    if (problem := registry.base_url_problem(settings, account.code, account.base_url)) is not None:
        call.next_at, call.last_error = now + PARKED, problem[:300]  # never send credentials elsewhere
        session.commit()
        return call.id
    call.next_at = now + LEASE
    verify = _verify_call(session, call)
    call_id = call.id
    session.commit()
    return call_id, verify, account


def _verify_call(session: Session, call: ChannelCall) -> VerifyCall:
    corder = session.scalar(select(ChannelOrder).where(ChannelOrder.order_id == call.order_id))
    order = session.get(Order, call.order_id)
    ticket = session.get(Ticket, call.ticket_id)
    assert corder is not None and order is not None and ticket is not None
    lines = {x.get("item_id"): x for x in corder.extra.get("_lines", [])}
    # Cumulative (Ctrip's useQuantity): the order's uses the platform took, and this one. Never a use it refused
    # (a failing call), and never less than a total already sent (a failing call retried later comes after).
    done = select(func.count(ChannelCall.id)).where(
        ChannelCall.order_id == call.order_id, ChannelCall.state == "done", ChannelCall.id != call.id
    )
    used_total = (session.scalar(done) or 0) + 1
    quantity = session.scalar(select(func.count(Ticket.id)).where(Ticket.order_id == call.order_id))
    entry = UsedEntry(
        ticket_id=ticket.id,
        code=ticket.code or "",
        line_ref=str(lines.get(ticket.order_item_id, {}).get("ref", "")),
        used_at=call.used_at,
    )
    return VerifyCall(
        call_id=call.id,
        idempotency_key=call.idempotency_key,
        created_at=call.created_at,
        order_ref=corder.order_ref,
        order_number=order.number,
        order_extra=dict(corder.extra),
        entries=(entry,),
        used_total=used_total,
        quantity_total=int(quantity or 0),
    )


def _settle(session: Session, call_id: int, result: CallResult, now: datetime) -> None:
    call = session.get(ChannelCall, call_id, with_for_update=True, populate_existing=True)
    if call is None or call.state != "pending":  # cancelled or retried by someone meanwhile
        session.rollback()
        return
    if result.verdict == "done":
        call.state, call.done_at, call.reply, call.last_error = "done", now, dict(result.reply), None
    else:
        call.attempts += 1
        call.last_error = result.detail[:300]
        if result.verdict == "give_up" or call.attempts >= MAX_ATTEMPTS:
            call.state = "failing"
            log.warning("verify call %s to %s is failing: %s", call.id, call.channel, call.last_error)
        else:
            call.next_at = now + backoff(call.attempts)
    session.commit()


def retry(session: Session, call: ChannelCall, now: datetime) -> None:
    """A failing call becomes pending again, due now, with a fresh count of attempts. The caller commits."""
    call.state, call.next_at, call.attempts = "pending", now, 0


def sweep_messages(session: Session, now: datetime) -> int:
    """Forget messages older than twice their channel's freshness (at least a day): a resend that old is stale
    anyway, and orders and refunds stay idempotent by the platform's ids. Commits; how many were deleted."""
    windows: dict[str, int] = {code: s for code, s in session.execute(select(Channel.code, Channel.freshness_s))}
    deleted = 0
    for code, freshness in windows.items():
        keep = max(timedelta(seconds=2 * freshness), timedelta(days=1))
        result = session.execute(
            delete(ChannelMessage).where(ChannelMessage.channel == code, ChannelMessage.received_at < now - keep)
        )
        deleted += cast(CursorResult[Any], result).rowcount
    session.commit()
    return deleted
