"""The admission service: credential -> cached ticket -> decision -> journal.

It owns the store and knows nothing of the barrier's I/O: the daemon asks it to evaluate a
scan, to journal the decision (committed before the barrier moves), and later to record how
the passage ended.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.decision import Decision, FaceMatch, History, Presented, decide, ticket_from_credential
from edge.reasons import Reason
from edge.store import GateStore, JournalEntry
from models import CredentialKind, GateConfig, Outcome, Ticket
from models.credential import Invalid, PlainCode, SignedCredential, load_public_key, parse

log = logging.getLogger("starfish.gate")


@dataclass(frozen=True, slots=True)
class Evaluation:
    credential: Presented
    decision: Decision


def _credential_kind(cred: Presented) -> CredentialKind:
    if isinstance(cred, FaceMatch):
        return "face"
    if isinstance(cred, SignedCredential):
        return "signed"
    if isinstance(cred, PlainCode):
        return "plain"
    return "none"


def _rules_text(config: GateConfig) -> str:
    return ", ".join(f"{name}={getattr(config, name)!r}" for name in RULES)


def _resolution(decision: Decision, pending: bool) -> str | None:
    if pending:
        return None
    if decision.repeat:
        return "repeat"
    return "free_passage" if decision.admit else "denied"


# What the cloud's rules for a gate set (`models.sync.GateConfigChange`); the rest stays the file's.
RULES = ("allowed_kinds", "allowed_products", "rescan_seconds", "passback_seconds", "daily_limit", "emergency_open")


@dataclass(frozen=True, slots=True)
class RulesSource:
    """Whose rules the gate runs by: the cloud's (since when this gate took them on) or its file's
    (`problem`: why cloud rules it holds were refused)."""

    source: Literal["cloud", "local"]
    since: datetime | None = None
    problem: str | None = None


class GateService:
    """Decisions for one gate, with their journal. Single owner: the daemon's decision task.

    `config` is the gate's rules in force: the file's (`config = ...` sets those: the daemon, a reload, a
    technician's keep-open), or the cloud's when the store holds rules the cloud set for this gate
    (`reload_rules`, after each change). The cloud's replace the file's rules as one set; the gate's ids,
    direction and time zone stay the file's; keep-open is on when either side (or the technician) says so.
    """

    def __init__(self, *, store: GateStore, config: GateConfig) -> None:
        self.store = store
        self._local = config
        self._cloud: GateConfig | None = None
        self._config = config
        self.rules = RulesSource("local")
        # Told when the cloud's rules changed what is in force (the daemon holds the barrier open or not).
        self.on_rules: Callable[[GateConfig], None] | None = None
        self._keys: dict[int, Ed25519PublicKey] = store.keys()
        self.alarm = False
        # Set by sync: is the ticket feed too old to trust the cache for plain codes and faces?
        self.feed_stale: Callable[[datetime], bool] | None = None
        # The site's voucher key (`vouchers` in the config): tells our codes not synced yet from unknown ones.
        self.voucher_key: bytes | None = None

        self.reload_rules()

    @property
    def config(self) -> GateConfig:
        """The rules in force (see the class)."""
        return self._config

    @config.setter
    def config(self, local: GateConfig) -> None:
        self._local = local
        self._config = self._merged()

    @property
    def cloud_keep_open(self) -> bool:
        """Does the cloud hold this gate open (only the cloud can end it)?"""
        return self._cloud is not None and self._cloud.emergency_open

    def _merged(self) -> GateConfig:
        cloud, local = self._cloud, self._local
        if cloud is None:
            return local
        update = {name: getattr(cloud, name) for name in RULES}
        update["emergency_open"] = cloud.emergency_open or local.emergency_open
        return local.model_copy(update=update)

    def reload_rules(self) -> None:
        """Take the cloud's rules for this gate from the store (or go back to the file's when it holds none)."""
        from edge.store.feed import cloud_rules

        stored = cloud_rules(self.store)
        local = self._local
        if stored is None:
            self._cloud, self.rules = None, RulesSource("local")
        elif (stored[0].site_id, stored[0].gate_id) != (local.site_id, local.gate_id):
            problem = (
                f"cloud rules for {stored[0].site_id}/{stored[0].gate_id} refused: this gate is "
                f"{local.site_id}/{local.gate_id}"
            )
            log.error("gate rules: %s; running by the file's", problem)
            self._cloud, self.rules = None, RulesSource("local", problem=problem)
        else:
            cloud, since = stored
            if (cloud.direction, cloud.timezone) != (local.direction, local.timezone):
                log.warning(
                    "gate rules: the cloud knows this gate as %s in %s, its file says %s in %s: the file's stay",
                    cloud.direction.value,
                    cloud.timezone,
                    local.direction.value,
                    local.timezone,
                )
            self._cloud, self.rules = cloud, RulesSource("cloud", since)
        before, self._config = self._config, self._merged()
        if self._config != before:
            log.warning("gate rules now in force: %s (%s)", self.rules.source, _rules_text(self._config))
            if self.on_rules is not None:
                self.on_rules(self._config)

    def reload_keys(self) -> None:
        self._keys = self.store.keys()

    def use_keys(self, keys: dict[int, str]) -> None:
        """Trust these keys (base64) for this service only, without writing the store."""
        self._keys = {**self._keys, **{k: load_public_key(v) for k, v in keys.items()}}

    @property
    def effective_config(self) -> GateConfig:
        if self.alarm and not self.config.emergency_open:
            return self.config.model_copy(update={"emergency_open": True})
        return self.config

    def lookup(self, cred: Presented) -> Ticket | None:
        """The cached ticket for a credential, with revocations and blocks applied."""
        if isinstance(cred, Invalid):
            return None
        if isinstance(cred, FaceMatch):
            ticket = self.store.ticket(cred.ticket_id)
        elif isinstance(cred, PlainCode):
            ticket = self.store.ticket_by_code(cred.code)
        else:
            ticket = self.store.ticket(cred.ticket_id)
            if ticket is None and cred.site is not None:  # a version 1 token needs the cache (see decide)
                ticket = ticket_from_credential(cred)
        if ticket is None:
            return None
        status = self.store.status(ticket.ticket_id)
        if status is not None and status is not ticket.status:
            ticket = ticket.model_copy(update={"status": status})
        return ticket

    def evaluate(self, data: bytes | str | FaceMatch, now: datetime) -> Evaluation:
        """What the gate would answer now to a code or a recognised face; reads the store, writes nothing."""
        cred: Presented = data if isinstance(data, FaceMatch) else parse(data, self._keys)
        ticket = self.lookup(cred)
        history = History() if ticket is None else self.store.history(ticket.ticket_id, self.config.gate_id)
        stale = self.feed_stale
        fresh = stale is not None and not stale(now)
        config = self.effective_config
        decision = decide(cred, ticket, history, config, now, voucher_key=self.voucher_key, feed_fresh=fresh)
        if decision.counts and isinstance(cred, PlainCode | FaceMatch) and stale is not None and not fresh:
            # A plain code or a face is only as good as the cache (a face's gallery comes down the same
            # feed), and a stale cache may not know of a refund, a block or a deletion.
            decision = Decision(admit=False, code=Reason.STALE_FEED, ticket_id=decision.ticket_id)
        return Evaluation(cred, decision)

    def journal(self, ev: Evaluation, now: datetime, *, barrier_ok: bool = True) -> JournalEntry:
        """Commit the decision. An admission that opens the barrier stays pending until `complete`."""
        decision = ev.decision
        if decision.admit and decision.open_barrier and not barrier_ok:
            decision = Decision(admit=False, code=Reason.BARRIER_FAULT, ticket_id=decision.ticket_id)
        pending = decision.admit and decision.open_barrier
        return self._record(
            now,
            ticket_id=decision.ticket_id,
            credential=_credential_kind(ev.credential),
            admit=decision.admit,
            code=decision.code,
            passed=None if pending else False,
            counted=decision.counts,
            resolution=_resolution(decision, pending),
            face_distance=ev.credential.distance if isinstance(ev.credential, FaceMatch) else None,
        )

    def _record(
        self,
        now: datetime,
        *,
        ticket_id: str | None,
        credential: CredentialKind,
        admit: bool,
        code: str,
        passed: bool | None,
        counted: bool,
        resolution: str | None,
        face_distance: float | None = None,
    ) -> JournalEntry:
        entry = JournalEntry(
            event_id=uuid.uuid4(),
            at=now,
            gate_id=self.config.gate_id,
            site_id=self.config.site_id,
            direction=self.config.direction,
            ticket_id=ticket_id,
            credential=credential,
            outcome=Outcome.ADMIT if admit else Outcome.DENY,
            code=code,
            passed=passed,
            counted=counted,
            resolution=resolution,
            face_distance=None if face_distance is None else round(face_distance, 4),
        )
        self.store.record(entry)
        return entry

    def complete(self, entry: JournalEntry, *, passed: bool, how: str) -> JournalEntry:
        """Record how a pending admission ended; it counts only when somebody passed."""
        return self.store.resolve(entry.event_id, passed=passed, counted=entry.counted, resolution=how)

    def barrier_failed(self, entry: JournalEntry, detail: str) -> JournalEntry:
        """The barrier did not open: the admission becomes a `barrier_fault` denial."""
        return self.store.resolve(
            entry.event_id,
            passed=False,
            counted=False,
            resolution=f"barrier_fault: {detail}"[:200],
            code=Reason.BARRIER_FAULT,
            outcome=Outcome.DENY,
        )

    def record_alarm(self, on: bool, now: datetime) -> JournalEntry:
        """Journal a fire-alarm edge; while it is on the gate gives free passage."""
        self.alarm = on
        return self._record(
            now,
            ticket_id=None,
            credential="none",
            admit=on,
            code=Reason.FIRE_ALARM_ON if on else Reason.FIRE_ALARM_OFF,
            passed=False,
            counted=False,
            resolution="alarm",
        )
