"""When is a face the same person: a distance threshold that tightens as the gallery grows, a margin, k of m.

The gallery holds N templates. A stranger (or a holder not in view of their own template) is falsely
accepted when any of the N templates lies under the threshold; for that chance to stay at the target T
per attempt, each comparison may false-match at most f = T / N. With dlib's impostor distances modelled as
normal (mean mu, sd sigma), the threshold is the f-quantile:

    threshold(N) = min(base_threshold, mu + sigma * NormalDist().inv_cdf(T / N)),   never below `floor`

The impostor model. Jack Grimes compared all 81.9M pairs of 12,797 LFW images (5,467 people) with
face_recognition (jackgrimes.net/projects/face_recognition: precision 0.91 / recall 0.84 at 0.50,
0.98 / 0.59 at 0.45, 0.71 / 0.96 at 0.55, 0.34 / 0.99 at 0.60). Turned into false-match rates (about 240k
genuine pairs against 81.6M impostor pairs) these are 5.7e-3 at 0.60, 1.2e-3 at 0.55, 2.4e-4 at 0.50 and
3.5e-5 at 0.45, which a normal with mu = 0.86, sigma = 0.10 fits to within 0.02 in distance; the
shared photos here give impostor distances of 0.70-1.01, median 0.85 (`python -m bench.face_photos`).
LFW is mostly faces of European descent. dlib's encoder is known to put East Asian faces closer together
(face_recognition's README: accuracy varies between ethnic groups; ageitgey/face_recognition#431: in a
10k gallery East Asian faces were confused at tolerances where others were not, and needed a lower one),
which is what a Beijing resort's gallery mostly holds. We take the conservative side: the LFW mean moved
down by 0.10 (a tolerance of 0.50 playing the part 0.60 plays on LFW), mu = 0.76, sigma = 0.10. A
resort should replace them with figures measured on its own enrolled holders.

The floor. Genuine distances between the shared photos are 0.32-0.42 (Biden's two photos 0.424; a soft
video still of a turned head 0.49-0.52 from the same man's photos); a threshold under 0.42 would refuse
the holders themselves, so the threshold is clamped at FLOOR = 0.42 and
the rule says what that costs (`false_accept_chance`, `max_gallery`) instead of raising: a resort expects
its face lanes to keep working when the next holder enrolls; the diagnostics show the real chance, and
the margin and the k-of-m vote (frames of one walk-past are correlated, so no multiplying) add to it.

The target. T = 1e-3 per attempt: a false accept lets one skier through on another holder's season pass
(a lost ride, journaled with the distance, not a safety matter), about the rate at which season-pass QR
codes get lent out; lower targets only move the threshold further into the floor.

With these figures (T = 1e-3, base 0.60, floor 0.42):

    N           T / N     mu + sigma * z   threshold   chance of any false accept at the threshold
    1           1e-03     0.451            0.451       1.0e-03
    1,000       1e-06     0.285            0.420       2.9e-01
    10,000      1e-07     0.240            0.420       9.7e-01
    100,000     1e-08     0.199            0.420       1.0e+00
    1,000,000   1e-09     0.160            0.420       1.0e+00

So dlib's 128-d encoder holds the target only up to `max_gallery()` = 2 templates under the East Asian
figures (184 under the LFW ones): past that a face lane is a convenience whose errors the margin,
the k of m frames and the journal's distances must keep in check, not a 1:N identification system. A
stronger encoder (ArcFace-class, impostor mean ~1.4 on the same scale) is what 100k templates need.
Pure, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

IMPOSTOR_MEAN = 0.76
IMPOSTOR_SD = 0.10
BASE_THRESHOLD = 0.60  # face_recognition's tolerance: never looser than this, even for a tiny gallery
FLOOR = 0.42  # top of the genuine distances measured on the shared photos
DEFAULT_TARGET = 1e-3
DEFAULT_MARGIN = 0.06
TABLE_SIZES = (1, 1_000, 10_000, 100_000, 1_000_000)


@dataclass(frozen=True, slots=True)
class FaceRule:
    """Threshold by gallery size, margin over the next other holder, and k of the last m frames."""

    target: float = DEFAULT_TARGET  # chance of any false accept per attempt
    margin: float = DEFAULT_MARGIN  # the best holder must be this much nearer than the next other holder
    k: int = 2
    m: int = 3
    impostor_mean: float = IMPOSTOR_MEAN
    impostor_sd: float = IMPOSTOR_SD
    base_threshold: float = BASE_THRESHOLD
    floor: float = FLOOR

    def __post_init__(self) -> None:
        if not 0 < self.target < 1:
            raise ValueError(f"target must be between 0 and 1, got {self.target}")
        if not 1 <= self.k <= self.m:
            raise ValueError(f"need 1 <= k <= m, got k={self.k}, m={self.m}")
        if self.margin < 0 or self.impostor_sd <= 0:
            raise ValueError("margin must be >= 0 and impostor_sd > 0")
        if not 0 < self.floor <= self.base_threshold:
            raise ValueError(f"floor ({self.floor}) must be in (0, base_threshold ({self.base_threshold})]")

    def raw_threshold(self, n: int) -> float:
        """The model's threshold for a gallery of `n` templates before the base cap and the floor."""
        f = self.target / max(n, 1)
        return self.impostor_mean + self.impostor_sd * NormalDist().inv_cdf(f)

    def threshold(self, n: int) -> float:
        """The distance under which a face is the same person, for a gallery of `n` templates."""
        return max(self.floor, min(self.base_threshold, self.raw_threshold(n)))

    def same(self, distance: float | None, n: int) -> bool:
        """Whether a best distance of `distance` in a gallery of `n` is the same person (None: no face)."""
        return distance is not None and math.isfinite(distance) and distance < self.threshold(n)

    def holds(self, n: int) -> bool:
        """Whether the target holds for `n` templates (the threshold is not clamped at the floor)."""
        return self.raw_threshold(n) >= self.floor

    def false_accept_chance(self, n: int) -> float:
        """The modelled chance that a stranger is under the threshold of some template, per attempt."""
        p = NormalDist(self.impostor_mean, self.impostor_sd).cdf(self.threshold(n))
        return -math.expm1(max(n, 1) * math.log1p(-p))

    def max_gallery(self) -> int:
        """The largest gallery for which the target holds at the floor (0 if not even one)."""
        p = NormalDist(self.impostor_mean, self.impostor_sd).cdf(self.floor)
        return math.floor(self.target / p)


def threshold_table(rule: FaceRule | None = None, sizes: tuple[int, ...] = TABLE_SIZES) -> list[dict[str, float]]:
    """The rule's threshold and false-accept chance for each gallery size (for the docs and the benchmark)."""
    rule = rule or FaceRule()
    return [
        {
            "n": n,
            "per_comparison": rule.target / n,
            "model_threshold": round(rule.raw_threshold(n), 4),
            "threshold": round(rule.threshold(n), 4),
            "false_accept_chance": rule.false_accept_chance(n),
        }
        for n in sizes
    ]
