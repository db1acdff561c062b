"""The sync wire contract: what travels over MQTT between cloud, site broker and gates.

Topics (``sync/topics.py`` builds them): ``sf/<site>/feed`` (cloud → gates, the ordered change
feed), ``sf/<site>/gate/<gate>/events`` (a gate's passage events, read by the cloud and by the
other gates of the site), ``sf/<site>/gate/<gate>/acks`` (cloud → gate: events stored),
``sf/<site>/gate/<gate>/status`` (retained gate status, Last Will ``offline``), ``sf/<site>/head``
(cloud → gates, retained: the feed's head, refreshed every few seconds as a heartbeat).
``<site>`` is the site code and ``<gate>`` the gate code of the cloud's registry.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer

from models.face import SEALED_MAX
from models.messages import CODE_MAX, ID_MAX, GateConfig, Message, PassageEvent, Ticket, TicketStatus
from models.ops import TECHNICIANS_MAX, GateHealth, TechnicianAccount

EVENT_BATCH_MAX = 500
PROBLEM_MAX = 500  # a gate status's problem sentence
# The largest payload a reader takes; a longer one is dropped unread. The largest legitimate message,
# an EventBatch of EVENT_BATCH_MAX events with every field at its bound, is 240 KB (575 KB were every
# character of its ids 4-byte UTF-8); a feed message is at most 250 KB (a gate config of 1000 products).
MAX_MESSAGE_BYTES = 1024 * 1024
KEYS_MAX = 64  # trusted public keys in one set: the signing key and those still honoured
REASON_MAX = 200  # a revocation's or a block's reason, as the cloud stores it

Code = Annotated[str, Field(min_length=1, max_length=ID_MAX, description="A site's or a gate's code")]
TicketId = Annotated[str, Field(min_length=1, max_length=ID_MAX)]
PublicKeys = Annotated[
    dict[int, Annotated[str, Field(max_length=64)]],
    Field(max_length=KEYS_MAX, description="Key id -> base64 raw Ed25519 public key"),
]


class TicketUpsert(Message):
    kind: Literal["ticket"] = "ticket"
    ticket: Ticket


class StatusChange(Message):
    """A revocation (refund), a block, or a block lifted (status valid)."""

    kind: Literal["status"] = "status"
    ticket_id: TicketId
    status: TicketStatus
    reason: str = Field(default="", max_length=REASON_MAX)


class KeySet(Message):
    """The full set of trusted public keys (key id -> base64 raw Ed25519), replacing the old set.

    `signature` is the key-set root's over `keys` (`models.keyset`): a gate installs no set without it.
    """

    kind: Literal["keys"] = "keys"
    keys: PublicKeys
    signature: str = Field(default="", max_length=128, description="The key-set root's signature, base64")


class GateConfigChange(Message):
    """The cloud's rules for gate `gate_id` (`config`: the gate's ids, direction and time zone as the cloud
    knows them, and its rules), replacing earlier ones; every gate of the site receives it, only that gate
    keeps it. `config` None: the cloud withdrew its rules and the gate goes back to its YAML file's.

    The gate applies the rules (allowed kinds and products, rescan, passback, daily limit, keep-open) over
    its file's, live; its ids, direction and time zone stay the file's (the installation's), and a config
    naming another site or gate is refused and logged. A withdrawal (None) came with issue 13: a gate of an
    earlier release refuses the message and catches up by snapshot; it never applied cloud rules anyway.
    """

    kind: Literal["gate_config"] = "gate_config"
    gate_id: Code
    config: GateConfig | None


GATES_MAX = 1000  # gates of one site in a roster


class GateRoster(Message):
    """The codes of all the site's gates, replacing the last roster. A gate takes the other gates'
    passage events only from gates on it: a code not on it is no gate of the site."""

    kind: Literal["gates"] = "gates"
    gates: list[Code] = Field(max_length=GATES_MAX)


class FaceUpsert(Message):
    """A season-pass holder's face template for their pass `ticket_id` at this site, replacing any earlier one.

    `sealed` is `models.face.seal` of the 512-byte encoding under the site's face key, with
    `models.face.template_aad(site, ticket_id, holder_id)`: only the site's gates open it. None: the
    template was deleted after this change was written (the cloud scrubs its feed), a `FaceDelete` follows.
    """

    kind: Literal["face"] = "face"
    ticket_id: TicketId
    holder_id: str = Field(min_length=1, max_length=ID_MAX)
    sealed: str | None = Field(max_length=SEALED_MAX)


class FaceDelete(Message):
    """Delete the face template of this pass (pass ended, refunded or blocked, consent withdrawn, or the
    holder asked). A gate whose status reports a feed seq at or past this change's has deleted it."""

    kind: Literal["face_delete"] = "face_delete"
    ticket_id: TicketId


class Technicians(Message):
    """The site's active gate technicians (`models.ops`), replacing the last list: an account left out
    (disabled, deleted, no longer `gate_tech`) can no longer log in to the site's gates."""

    kind: Literal["technicians"] = "technicians"
    accounts: list[TechnicianAccount] = Field(max_length=TECHNICIANS_MAX)


DEVICE_MAX = 32  # a handheld's name, as the cloud stores it


class Usage(Message):
    """An entry a staff member's handheld verified (核销) on `ticket_id`, or gave back (`undone`).

    A gate journals it as another gate's completed passage (made by the handheld `device` of `site` at
    `at`, known by the handheld's `event_id`), so its single-entry, daily-limit and passback rules count it
    offline; `undone` removes that passage. `entries_used` and `first_entry_at` are the ticket's, as the
    cloud counts them after this change: a gate that took a snapshot after the verification (which
    counted it in the ticket line) learns of the undo as well. Added with issue 12: a gate of an earlier
    release cannot read this kind, refuses the message and catches up by snapshot (the ticket line
    carries the count), so upgrade the gates before handhelds go into service.
    """

    kind: Literal["usage"] = "usage"
    ticket_id: TicketId
    event_id: uuid.UUID
    at: AwareDatetime
    site: Code
    device: str = Field(min_length=1, max_length=DEVICE_MAX)
    undone: bool = False
    entries_used: int = Field(ge=0)
    first_entry_at: AwareDatetime | None = None


Change = Annotated[
    TicketUpsert
    | StatusChange
    | KeySet
    | GateConfigChange
    | GateRoster
    | FaceUpsert
    | FaceDelete
    | Technicians
    | Usage,
    Field(discriminator="kind"),
]


Epoch = Annotated[str, Field(max_length=32, description="Names the feed's run: another epoch means start again")]


class FeedMessage(Message):
    """One change of a site's feed. `seq` increases by exactly 1 per change: a jump is a gap.

    `epoch` names the run of the feed; a cloud restored from an older backup starts a new one, and a
    gate seeing another epoch than its own fetches a snapshot (its seq means nothing in the new run).
    """

    site: Code
    epoch: Epoch = ""
    seq: int = Field(ge=1)
    at: AwareDatetime
    change: Change


class FeedHead(Message):
    """The cloud's heartbeat for a site's feed, retained: every change up to `seq` has been published.

    A gate at `seq` or beyond knows it was up to date at `at` (the cloud's clock), so a quiet feed
    does not go stale while the link lives; a gate that stays below `seq` lost a message.

    `checksum` is the cloud's ticket-set checksum (`TicketSetChecksum`) when its feed was at
    `checksum_seq`, the last it computed: a gate whose own checksum at that seq is the same is in step.
    """

    site: Code
    epoch: Epoch = ""
    seq: int = Field(ge=0)
    at: AwareDatetime
    checksum: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    checksum_seq: int | None = Field(default=None, ge=0)

    @model_serializer(mode="wrap")
    def _older_peers_read_it(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _omit_unset_additions(handler(self), checksum=None, checksum_seq=None)


class EventBatch(Message):
    """Several of one gate's passage events in one message, oldest first: how a backlog goes up.

    A gate publishes a single event as a plain `PassageEvent` and a backlog in batches; readers
    take both (`parse_events`). One MQTT message per event would cost more than the event itself.
    """

    events: list[PassageEvent] = Field(min_length=1, max_length=EVENT_BATCH_MAX)


def event_batch_json(bodies: Sequence[str]) -> str:
    """An `EventBatch` from passage events already serialised (the outbox keeps them as JSON)."""
    if len(bodies) == 1:
        return bodies[0]
    return '{"schema_version":1,"events":[' + ",".join(bodies) + "]}"


class _LooseBatch(Message):
    events: list[Any] = Field(min_length=1, max_length=EVENT_BATCH_MAX)


def parse_events(payload: bytes | bytearray | str, refused: list[str] | None = None) -> list[PassageEvent]:
    """The events of a message on an events topic: an `EventBatch` or one `PassageEvent`.

    An event of a batch that is not a valid `PassageEvent` is left out, and why goes into
    `refused`, so one bad event never holds up the others. Raises `ValidationError` when the
    message is neither a batch nor an event.
    """
    # The key "events" can only appear unescaped in a batch (or as a whole string value, hence the fallback).
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    if b'"events"' in raw:
        try:
            return EventBatch.model_validate_json(raw).events
        except ValidationError:
            pass
        try:
            loose = _LooseBatch.model_validate_json(raw)
        except ValidationError:
            pass
        else:
            good = []
            for i, item in enumerate(loose.events):
                try:
                    good.append(PassageEvent.model_validate_json(json.dumps(item)))
                except ValidationError as exc:
                    err = exc.errors()[0]
                    where = ".".join(str(p) for p in err["loc"])
                    if refused is not None:
                        refused.append(f"event {i + 1} of {len(loose.events)}: {where}: {err['msg']}")
            return good
    return [PassageEvent.model_validate_json(raw)]


# How far a passage event's time may be from the clock of whoever receives it (cloud or peer gate).
EVENT_CLOCK_SKEW = timedelta(minutes=5)  # clocks of the cloud and of gates (NTP) disagree by less
EVENT_MAX_AGE = timedelta(days=30)  # an outbox a month old is a case for an administrator, not the count


def implausible_time(at: datetime, now: datetime) -> Literal["future", "too_old"] | None:
    """Why a passage event dated `at` cannot be true by a clock reading `now`, or None.

    Never more than `EVENT_CLOCK_SKEW` ahead of `now` (an event dated 2099 must not deny a ticket
    until 2099) nor older than `EVENT_MAX_AGE` (a gate offline that long has its backlog looked at).
    """
    if at > now + EVENT_CLOCK_SKEW:
        return "future"
    if at < now - EVENT_MAX_AGE:
        return "too_old"
    return None


class RefusedEvent(Message):
    """An event the cloud will never store (malformed, over its bounds, another gate's), and why."""

    event_id: uuid.UUID
    reason: str = Field(min_length=1, max_length=CODE_MAX, description="A stable code, e.g. malformed, wrong_gate")


def _omit_unset_additions(data: dict[str, Any], **additions: object) -> dict[str, Any]:
    """Leave out fields added to a message after its first release while they hold their default.

    Gates and the cloud are upgraded one at a time, and every message forbids unknown fields: a
    message that needs no new field must read exactly as the previous release wrote it, so a peer one
    release older still takes it. (`EventAck.refused` and `GateStatus.problem` came with issue 9.)
    """
    for name, default in additions.items():
        if name in data and data[name] == default:
            del data[name]
    return data


class EventAck(Message):
    """The cloud stored these events (duplicates included); the gate may drop them from its outbox.

    `refused` names events the cloud will never store: the gate drops those ids from its outbox too
    (resending cannot help), and the cloud keeps them in its dead-letter table for an administrator.
    """

    event_ids: list[uuid.UUID] = Field(max_length=EVENT_BATCH_MAX)
    refused: list[RefusedEvent] = Field(default=[], max_length=EVENT_BATCH_MAX)

    @model_serializer(mode="wrap")
    def _older_peers_read_it(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _omit_unset_additions(handler(self), refused=[])


class GateStatus(Message):
    """A gate's retained status. `checksum` is its ticket-set checksum when its feed was at
    `checksum_seq` (computed now and then, not per change): the cloud compares it with its own."""

    site: Code
    gate: Code
    state: Literal["online", "offline"]
    feed_seq: int = Field(default=0, ge=0)
    outbox_depth: int = Field(default=0, ge=0)
    at: AwareDatetime | None = None
    checksum: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    checksum_seq: int | None = Field(default=None, ge=0)
    problem: str | None = Field(
        default=None,
        max_length=PROBLEM_MAX,
        description="Why this gate's sync cannot work as configured (its name is not in the cloud's roster, "
        "the broker refuses what it publishes); None: nothing known to be wrong",
    )
    health: GateHealth | None = Field(default=None, description="Devices, backlog and disk (None: an older gate)")

    @model_serializer(mode="wrap")
    def _older_peers_read_it(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _omit_unset_additions(handler(self), problem=None, health=None)


class SnapshotHeader(Message):
    """First line of a snapshot (NDJSON): then one `Ticket` per line, then `SnapshotStatus` lines, then
    `faces` `SnapshotFace` lines (in ticket-id order)."""

    site: str = Field(max_length=ID_MAX)  # "" in the cloud's own checksum summary (`site_checksum`)
    epoch: Epoch = ""
    seq: int = Field(ge=0, description="Resume the feed after this sequence")
    tickets: int = Field(ge=0)
    checksum: str = Field(pattern=r"^[0-9a-f]{64}$")
    keys: PublicKeys
    keys_signature: str = Field(default="", max_length=128, description="The key-set root's signature of `keys`")
    gates: list[Code] | None = Field(
        default=None, max_length=GATES_MAX, description="The site's gate roster (None: a cloud that sends none)"
    )
    faces: int | None = Field(
        default=None, ge=0, description="Face template lines after the status lines (None: none, or an older cloud)"
    )
    technicians: list[TechnicianAccount] | None = Field(
        default=None,
        max_length=TECHNICIANS_MAX,
        description="The site's active gate technicians (None: a cloud that sends none; the gate keeps its list)",
    )
    gate_config: GateConfig | None = Field(
        default=None,
        description="The cloud's rules for the gate that asked (`GateConfigChange.config`); None: none, the "
        "gate's file rules (an older cloud never sends rules). Set only for gates of issue 13 or later: an "
        "older gate refuses a header with it",
    )

    @model_serializer(mode="wrap")
    def _older_peers_read_it(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _omit_unset_additions(handler(self), faces=None, technicians=None, gate_config=None)


class SnapshotStatus(Message):
    ticket_id: TicketId
    status: TicketStatus


class SnapshotFace(Message):
    """A face template line of a snapshot: as `FaceUpsert` carries it."""

    ticket_id: TicketId
    holder_id: str = Field(min_length=1, max_length=ID_MAX)
    sealed: str = Field(min_length=1, max_length=SEALED_MAX)


_STATUS_VALUES = frozenset(status.value for status in TicketStatus)


class TicketSetChecksum:
    """The ticket-set checksum, fed one (ticket id, status) at a time in ticket-id order, then the face
    templates (`add_face`) in ticket-id order.

    Ids must come in Python string order (code points: SQLite's BINARY, PostgreSQL's "C"
    collation), so a million tickets can be summed as they stream, never held in memory.
    A set without face templates sums as it did before templates existed.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._last: str | None = None
        self._last_face: str | None = None

    def add(self, ticket_id: str, status: TicketStatus | str) -> None:
        if self._last_face is not None:
            raise ValueError("tickets after face templates")
        if self._last is not None and ticket_id <= self._last:
            raise ValueError(f"ticket ids out of order: {ticket_id!r} after {self._last!r}")
        self._last = ticket_id
        self._h.update(f"{ticket_id}:{TicketStatus(status).value}\n".encode())

    def add_many(self, ticket_ids: Sequence[str], statuses: Sequence[str]) -> None:
        """`add` for each (ticket id, status value) in turn, the same sum and the same checks, at the cost of a
        few passes in C instead of a million calls (a snapshot's tickets, a batch at a time)."""
        if not ticket_ids:
            return
        if self._last_face is not None:
            raise ValueError("tickets after face templates")
        if len(ticket_ids) != len(statuses):
            raise ValueError(f"{len(ticket_ids)} ticket ids, {len(statuses)} statuses")
        increasing = all(map(operator.lt, ticket_ids, itertools.islice(ticket_ids, 1, None)))
        if not increasing or (self._last is not None and ticket_ids[0] <= self._last):
            raise ValueError(f"ticket ids out of order after {self._last!r}")
        valid = TicketStatus.VALID.value
        if statuses.count(valid) == len(statuses):  # the usual batch: one join
            self._h.update((f":{valid}\n".join(ticket_ids) + f":{valid}\n").encode())
        elif _STATUS_VALUES.issuperset(statuses):
            self._h.update("".join([f"{i}:{s}\n" for i, s in zip(ticket_ids, statuses, strict=True)]).encode())
        else:
            raise ValueError(f"not a ticket status: {sorted(set(statuses) - _STATUS_VALUES)}")
        self._last = ticket_ids[-1]

    def add_face(self, ticket_id: str, holder_id: str, sealed: str) -> None:
        """A face template, after all tickets: its pass, holder and a digest of its sealed text (a
        re-enrolled face is another template under the same ids)."""
        if self._last_face is not None and ticket_id <= self._last_face:
            raise ValueError(f"face template ids out of order: {ticket_id!r} after {self._last_face!r}")
        self._last_face = ticket_id
        digest = hashlib.sha256(sealed.encode()).hexdigest()[:32]
        self._h.update(f"face:{ticket_id}:{holder_id}:{digest}\n".encode())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def ticket_set_checksum(items: Iterable[tuple[str, TicketStatus]]) -> str:
    """A checksum of a ticket set (id and effective status), equal on cloud and gate when they agree."""
    checksum = TicketSetChecksum()
    for ticket_id, status in sorted(items):
        checksum.add(ticket_id, status)
    return checksum.hexdigest()
