"""The gate's side of event upload: what to send next, and what the cloud's answer changes.

Functions over a `GateStore`, called only by its owner; `apply_batch` commits once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from edge.store import journal, outbox, tickets
from edge.store.gate_store import GateStore
from models import PassageEvent
from models.sync import EVENT_CLOCK_SKEW, implausible_time

REMOTE = journal.REMOTE  # resolution of a passage learnt from another gate of the site


def outbox_after(store: GateStore, after: int, limit: int) -> list[tuple[int, str, str]]:
    """(outbox seq, event id, event JSON) of the oldest events queued after `after`."""
    return outbox.after(store.conn, after, limit)


def apply_batch(
    store: GateStore,
    *,
    acknowledged: Iterable[uuid.UUID] = (),
    remote: Iterable[PassageEvent] = (),
    now: datetime,
) -> list[tuple[PassageEvent, str]]:
    """In one transaction: drop events the cloud confirmed from the outbox, and journal other
    gates' completed passages so decisions here count them (never into the outbox).

    An event that is no completed passage of a ticket is skipped; one already known is kept once.
    One whose time cannot be true by this gate's clock `now` is not recorded (an event dated 2099
    would answer `passback` until 2099): dated out of `models.sync.implausible_time`'s bounds, or a
    counted entry dated before its cached ticket became valid (less the clock skew). Those are
    returned, each with why ("future", "too_old", "before_validity").
    """
    passages = [e for e in remote if e.passed and e.ticket_id is not None]
    starts = tickets.valid_from(store.conn, {e.ticket_id for e in passages if e.counted and e.ticket_id is not None})
    refused: list[tuple[PassageEvent, str]] = []
    kept: list[PassageEvent] = []
    for e in passages:
        start = starts.get(e.ticket_id or "") if e.counted else None
        why: str | None = implausible_time(e.at, now)
        if why is None and start is not None and e.at < start - EVENT_CLOCK_SKEW:
            why = "before_validity"
        if why is not None:
            refused.append((e, why))
            continue
        kept.append(e)
    with store.conn as c:
        outbox.acknowledge(c, acknowledged)
        journal.record_remote(c, kept, REMOTE)
    return refused
