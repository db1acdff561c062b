"""Dead letters: what gates send that the cloud refuses unread, kept raw for the back office.

A dead letter is a message, or one event of an `EventBatch`, that is not what its topic carries:
not JSON, not a valid event or status, a field or list over its bound (`too_long`), a figure out of
range, a status naming another site or gate than its topic (`wrong_gate`), a message on a gate
topic that is neither events nor status (`wrong_topic`). It is not a quarantined event: that one
is well formed and judged impossible (`service._refusal`), kept as an event; a dead letter has no
event, only its raw text: decoded as UTF-8 (an undecodable byte, and a NUL, as a `\\xNN` escape),
cut at `RAW_MAX` characters. A batch's event is stored as `json.dumps(item, ensure_ascii=False)`:
its characters as received, its spacing and escapes re-serialised.

It is stored in the same transaction as the good events of its message; then the broker's message
is acknowledged and the gate's `EventAck` names each dead letter's event id (when one could be
read) under `refused`, so the gate drops it from its outbox instead of resending it for ever.

The table is bounded: a gate (the site and gate of the topic, which the broker lets only that
gate's login publish on) keeps at most `DEAD_LETTERS_PER_GATE` distinct letters, the first ones;
the same letter again only counts on its row. Once a gate has that many, each further distinct
letter is counted, not kept, on the gate's one `overflow` row (its detail says how many, its raw
text is the last one's; logged as a WARNING), so nothing is silent and a gate sending endless new
junk costs at most about 4 MB. Deleting rows (SQL: there is no route for it) makes room again.

A message whose topic names no gate (`sync.topics.parse_gate_topic`) has nowhere to be filed or
answered: it is only logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import String, cast, func, literal, select
from sqlalchemy.orm import Session

from cloud.db import dialect_insert, one_at_a_time
from cloud.sites.models import Site
from cloud.sites.service import get_site
from cloud.sync.models import DeadLetter
from cloud.sync.schemas import DeadLetterOut
from models import PassageEvent
from models.sync import RefusedEvent

log = logging.getLogger("starfish.cloud.sync")

RAW_MAX = 4096  # characters of the raw text kept (an undecodable byte or a NUL is one 4-character escape)
DETAIL_MAX = 200  # characters
DEAD_LETTERS_PER_GATE = 1000  # distinct letters kept per topic gate, its overflow row aside
OVERFLOW = "overflow"  # the fingerprint of a gate's overflow row (neither a UUID nor a hash)
_KEY = ["site_code", "gate_code", "fingerprint"]

Reason = Literal["malformed", "too_long", "out_of_range", "wrong_gate", "wrong_topic"]
_TOO_LONG = {"string_too_long", "too_long", "bytes_too_long"}
_RANGE = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True, slots=True)
class Refused:
    """One dead letter from the gate of topic (`site`, `gate`), not yet stored.

    Every text is storable: `detail` and `raw` through `storable`, `site` and `gate` being a topic's
    codes (`sync.topics.parse_gate_topic` matched them), `fingerprint` hex or a UUID.
    """

    site: str
    gate: str
    reason: Reason
    detail: str
    raw: str  # cut at RAW_MAX characters
    event_id: uuid.UUID | None
    fingerprint: str  # the event id, or a hash of the whole raw text: what makes a repeat one row


def refused(site: str, gate: str, reason: Reason, detail: str, raw: bytes | str, doc: Any = None) -> Refused:
    """A dead letter of `raw` (a message, or one batch item as JSON; `doc` its decoded JSON if known)."""
    data = raw.encode("utf-8", "backslashreplace") if isinstance(raw, str) else raw
    if doc is None:
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        except RecursionError:  # `[[[[...` deeper than Python's stack: not JSON the cloud can read
            reason, detail = "malformed", f"too deeply nested: {detail}"
    value = doc.get("event_id") if isinstance(doc, dict) else None
    event_id = uuid.UUID(value) if isinstance(value, str) and _UUID.fullmatch(value) else None
    fingerprint = str(event_id) if event_id is not None else hashlib.sha256(data).hexdigest()
    # A character is at most 4 bytes of UTF-8: these bytes hold RAW_MAX whole characters.
    text = storable(data[: 4 * RAW_MAX + 4].decode("utf-8", "backslashreplace"))[:RAW_MAX]
    return Refused(site, gate, reason, storable(detail)[:DETAIL_MAX], text, event_id, fingerprint)


def storable(text: str) -> str:
    """`text` as every database's text column holds it: a NUL or a lone surrogate as a backslash escape.

    PostgreSQL's text holds no NUL, and a validation error's message repeats the bad input, so the
    detail needs this as much as the raw text; the escape keeps what was there readable.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def reason_of(exc: ValidationError) -> Reason:
    """`too_long` or `out_of_range` when that is what is wrong, else `malformed`."""
    kinds = {e["type"] for e in exc.errors()}
    if kinds & _TOO_LONG:
        return "too_long"
    if kinds & _RANGE:
        return "out_of_range"
    return "malformed"


def short(exc: ValidationError) -> str:
    """The first errors of `exc`, on one line."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()[:3])


def batch_items(site: str, gate: str, payload: bytes) -> list[Refused]:
    """The events of a batch that are not valid `PassageEvent`s (`models.sync.parse_events` left them out)."""
    try:
        items = json.loads(payload).get("events")
    except (ValueError, AttributeError):
        return []
    except RecursionError:
        return [refused(site, gate, "malformed", "the batch", payload)]  # its events unread: one letter
    out = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        text = json.dumps(item, ensure_ascii=False)  # as received, but for the spacing and escapes json chose
        try:
            PassageEvent.model_validate_json(text)
        except ValidationError as exc:
            out.append(refused(site, gate, reason_of(exc), f"event {i + 1} of {len(items)}: {short(exc)}", text, item))
    return out


def store(session: Session, letters: Sequence[Refused], now: datetime) -> dict[tuple[str, str], list[RefusedEvent]]:
    """Keep each dead letter (one row per topic gate and fingerprint, counted, within the gate's bound); no commit.

    One `INSERT ... ON CONFLICT DO UPDATE` in the caller's transaction: two consumers storing the same
    letter at once (a redelivery, `cloud serve --workers 2`) make one row counted twice, never a
    unique violation. Returns, per (site, gate) code, the refused event ids to name in that gate's
    `EventAck` (a letter counted on the overflow row is refused all the same).
    """
    named: dict[tuple[str, str], dict[uuid.UUID, RefusedEvent]] = defaultdict(dict)
    if not letters:
        return {}
    codes = {d.site for d in letters}
    sites = {code: site_id for code, site_id in session.execute(select(Site.code, Site.id).where(Site.code.in_(codes)))}
    counted: dict[tuple[str, str, str], tuple[Refused, int]] = {}
    for d in letters:
        key = (d.site, d.gate, d.fingerprint)
        first, times = counted.get(key, (d, 0))
        counted[key] = (first, times + 1)  # one row of a statement may not be updated twice
        if d.event_id is not None:
            named[(d.site, d.gate)][d.event_id] = RefusedEvent(event_id=d.event_id, reason=d.reason)
    rows: list[dict[str, Any]] = []
    # Gate by gate in one order (the advisory locks), each gate's letters in the order they came.
    for (site, gate), group in groupby(sorted(counted, key=lambda key: key[:2]), key=lambda key: key[:2]):
        keys = list(group)
        known, free = _room(session, site, gate, [fingerprint for _, _, fingerprint in keys])
        new = [key for key in keys if key[2] not in known]
        kept = [key for key in keys if key[2] in known] + new[:free]
        rows.extend(_row(*counted[key], sites.get(site), now) for key in kept)
        if over := new[free:]:
            not_kept = sum(counted[key][1] for key in over)
            log.warning(
                "gate %s/%s: %d dead letters not kept, it has %d already", site, gate, not_kept, DEAD_LETTERS_PER_GATE
            )
            _count_overflow(session, counted[over[-1]][0], not_kept, sites.get(site), now)
    if rows:
        _upsert(session, rows)
    return {key: list(by_id.values()) for key, by_id in named.items()}


def _room(session: Session, site: str, gate: str, fingerprints: list[str]) -> tuple[set[str], int]:
    """Which of `fingerprints` the gate has a row for, and how many more distinct letters it may keep."""
    one_at_a_time(session, f"dead_letters/{site}/{gate}")  # two consumers counting at once would both see room
    mine = (DeadLetter.site_code == site) & (DeadLetter.gate_code == gate)
    known = set(session.scalars(select(DeadLetter.fingerprint).where(mine, DeadLetter.fingerprint.in_(fingerprints))))
    held = session.scalar(select(func.count()).where(mine, DeadLetter.fingerprint != OVERFLOW)) or 0
    return known, max(0, DEAD_LETTERS_PER_GATE - held)


def _count_overflow(session: Session, last: Refused, times: int, site_id: int | None, now: datetime) -> None:
    """Count `times` more letters not kept on the gate's overflow row; its raw text is the last one's."""
    tail = f" dead letters not kept: the gate has {DEAD_LETTERS_PER_GATE} already; raw is the last of them"
    row = {**_row(last, times, site_id, now), "fingerprint": OVERFLOW, "event_id": None, "reason": "overflow"}
    stmt = dialect_insert(session)(DeadLetter).values({**row, "detail": f"{times}{tail}"})
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=_KEY,
            set_={
                "times": DeadLetter.times + stmt.excluded.times,
                "last_received_at": stmt.excluded.last_received_at,
                "detail": cast(DeadLetter.times + stmt.excluded.times, String) + literal(tail),
                "raw": stmt.excluded.raw,
            },
        )
    )


def _row(d: Refused, times: int, site_id: int | None, now: datetime) -> dict[str, Any]:
    return {
        "site_id": site_id,
        "site_code": d.site,
        "gate_code": d.gate,
        "fingerprint": d.fingerprint,
        "event_id": d.event_id,
        "reason": d.reason,
        "detail": d.detail,
        "raw": d.raw,
        "received_at": now,
        "last_received_at": now,
        "times": times,
    }


def _upsert(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert `rows`; a row already kept keeps its text and counts `times` more."""
    stmt = dialect_insert(session)(DeadLetter).values(rows)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=_KEY,
            set_={"times": DeadLetter.times + stmt.excluded.times, "last_received_at": stmt.excluded.last_received_at},
        )
    )


def listed(session: Session, site_id: int, *, limit: int = 100, offset: int = 0) -> list[DeadLetterOut]:
    """The site's dead letters, the most recently received first, from the `offset`-th on."""
    get_site(session, site_id)
    rows = session.scalars(
        select(DeadLetter)
        .where(DeadLetter.site_id == site_id)
        .order_by(DeadLetter.last_received_at.desc(), DeadLetter.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [DeadLetterOut.model_validate(row, from_attributes=True) for row in rows]
