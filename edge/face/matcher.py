"""From the faces of one camera frame to a face credential: quality, threshold, margin, k of m.

Pure: no clock (`now` is a monotonic reading passed in), no I/O but a rate-limited log line.
Per frame, in this order:

1. No face: nothing (no vote, no count beyond `no_face`).
2. The largest face must pass the quality gates (`QualityGates.failed`); a face that fails is
   skipped and counted per gate (``face_too_small``, ``blurry``, ...) for the technician.
3. The gallery's nearest template must be within the rule's threshold for the gallery's size
   (`FaceRule.same`) and at least `FaceRule.margin` nearer than the nearest *other* holder's.
   Otherwise the frame votes for nobody: ``unknown`` (nobody near) or ``ambiguous`` (two holders
   near). An unknown face is counted once per appearance (frames of it closer together than
   `vote_max_age_s` are one), logged as one summary line at most every `unknown_log_every_s`,
   and never journaled: a stranger walking past is not an event.
4. The same holder must win `k` of the last `m` frames that had a matchable face. Frames with no
   face (or a skipped one) neither vote nor reset the count: a skier who blinks or turns for a frame
   keeps their votes. Votes older than `vote_max_age_s` age out, so a holder seen a minute ago
   does not lend a vote to a stranger now.
5. A holder admitted (offered to the decision task) is not offered again while they stay in view:
   every frame that still matches them pushes that back, as `edge.daemon.Debouncer` does for a QR
   code, until `readmit_after_s` without seeing them. The decision itself (passback, rescan
   suppression) is `decide()`'s.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from edge.decision import FaceMatch

if TYPE_CHECKING:
    from drivers.face import Encoding, FaceFound, QualityGates
    from edge.face.gallery import Hit

log = logging.getLogger("starfish.gate")

UNKNOWN = "face_unknown"


class Rule(Protocol):
    """What the matcher needs of `edge.face.rule.FaceRule`."""

    @property
    def margin(self) -> float: ...
    @property
    def k(self) -> int: ...
    @property
    def m(self) -> int: ...

    def same(self, distance: float, n: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Vote:
    at: float
    holder_id: str | None
    ticket_id: str | None = None
    distance: float = 0.0


@dataclass
class FaceCounts:
    """What the matcher saw since start, for diagnostics."""

    frames: int = 0
    no_face: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # per failed quality gate
    unknown: int = 0  # appearances of a face nobody in the gallery is near
    ambiguous: int = 0  # frames near two holders (within the margin)
    offered: int = 0  # matches handed to the decision task


class Matcher:
    """Turns the faces of successive frames into at most one `FaceMatch` per holder in view."""

    def __init__(
        self,
        rule: Rule,
        gates: QualityGates,
        *,
        vote_max_age_s: float = 2.0,
        readmit_after_s: float = 5.0,
        unknown_log_every_s: float = 60.0,
    ) -> None:
        if not 1 <= rule.k <= rule.m:
            raise ValueError(f"k must be 1..m (k={rule.k}, m={rule.m})")
        self.rule = rule
        self.gates = gates
        self.vote_max_age_s = vote_max_age_s
        self.readmit_after_s = readmit_after_s
        self.unknown_log_every_s = unknown_log_every_s
        self.counts = FaceCounts()
        self._votes: deque[_Vote] = deque(maxlen=rule.m)
        self._in_view: dict[str, float] = {}  # admitted holder -> last frame that matched them
        self._unknown_seen = -math.inf
        self._unknown_logged_at = -math.inf
        self._unknown_logged = 0

    def probe(self, faces: list[FaceFound], now: float) -> Encoding | None:
        """The encoding worth searching for: the largest face's, if it passes the quality gates."""
        self.counts.frames += 1
        if not faces:
            self.counts.no_face += 1
            return None
        failed = self.gates.failed(faces[0].quality)
        if failed is not None:  # the encoder leaves such a face unencoded: count it as what it is
            self.counts.skipped[failed] = self.counts.skipped.get(failed, 0) + 1
            return None
        if faces[0].encoding is None:
            self.counts.no_face += 1
            return None
        return faces[0].encoding

    def frame(
        self, faces: list[FaceFound], search: Callable[[Encoding], tuple[Hit | None, int]], now: float
    ) -> FaceMatch | None:
        """One frame's faces; `search` answers the nearest template and the gallery's size."""
        probe = self.probe(faces, now)
        if probe is None:
            return None
        hit, n = search(probe)
        return self.vote(hit, n, now)

    def vote(self, hit: Hit | None, n: int, now: float) -> FaceMatch | None:
        """A matchable face's nearest template (None: empty gallery) in a gallery of `n`."""
        self._forget(now)
        holder = self._verdict(hit, n, now)
        if holder is None or hit is None:
            self._votes.append(_Vote(now, None))
            return None
        if holder in self._in_view:
            self._in_view[holder] = now  # still in view after being offered: not again
            return None
        self._votes.append(_Vote(now, holder, hit.ticket_id, hit.distance))
        if sum(1 for v in self._votes if v.holder_id == holder) < self.rule.k:
            return None
        self._votes.clear()
        self._in_view[holder] = now
        self.counts.offered += 1
        return FaceMatch(ticket_id=hit.ticket_id, holder_id=holder, distance=hit.distance)

    def _verdict(self, hit: Hit | None, n: int, now: float) -> str | None:
        if hit is None or not self.rule.same(hit.distance, n):
            self._unknown(now)
            return None
        if hit.second is not None and hit.second - hit.distance < self.rule.margin:
            self.counts.ambiguous += 1
            return None
        return hit.holder_id

    def _forget(self, now: float) -> None:
        while self._votes and now - self._votes[0].at > self.vote_max_age_s:
            self._votes.popleft()
        for holder in [h for h, seen in self._in_view.items() if now - seen >= self.readmit_after_s]:
            del self._in_view[holder]

    def _unknown(self, now: float) -> None:
        if now - self._unknown_seen > self.vote_max_age_s:
            self.counts.unknown += 1
        self._unknown_seen = now
        if now - self._unknown_logged_at >= self.unknown_log_every_s and self.counts.unknown > self._unknown_logged:
            log.info("%s: %d unknown face(s) since start", UNKNOWN, self.counts.unknown)
            self._unknown_logged_at = now
            self._unknown_logged = self.counts.unknown
