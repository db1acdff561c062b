"""The face matcher frame by frame: quality gates, threshold and margin, k of m, unknown faces, re-admission."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytest

from drivers.face import GOOD_QUALITY, FaceFound, Quality, QualityGates, fake_face
from edge.decision import FaceMatch
from edge.face.gallery import Hit
from edge.face.matcher import Matcher


@dataclass
class FixedRule:
    """A threshold that does not depend on the gallery's size: the k-of-m logic on its own."""

    threshold: float = 0.5
    margin: float = 0.05
    k: int = 2
    m: int = 3

    def same(self, distance: float, n: int) -> bool:
        return distance <= self.threshold


def alice(distance: float = 0.3, second: float | None = 0.8) -> Hit:
    return Hit("1001", "alice", distance, second)


def bob(distance: float = 0.3) -> Hit:
    return Hit("1002", "bob", distance, 0.8)


STRANGER = Hit("1002", "bob", 0.7, 0.75)


def matcher(**kw: float) -> Matcher:
    rule = FixedRule(**{k: v for k, v in kw.items() if k in ("threshold", "margin", "k", "m")})  # type: ignore[arg-type]
    rest = {k: v for k, v in kw.items() if k not in ("threshold", "margin", "k", "m")}
    return Matcher(rule, QualityGates(), **rest)


def test_the_same_holder_in_two_of_three_frames_is_offered_once() -> None:
    m = matcher()
    assert m.vote(alice(), 100, 0.0) is None
    assert m.vote(STRANGER, 100, 0.1) is None
    assert m.vote(alice(0.35), 100, 0.2) == FaceMatch("1001", "alice", 0.35)
    assert m.counts.offered == 1


def test_votes_spread_over_more_than_m_frames_do_not_add_up() -> None:
    m = matcher()
    for t, hit in enumerate([alice(), bob(), STRANGER, alice()]):
        assert m.vote(hit, 100, t * 0.1) is None  # the last three frames hold one vote for alice


def test_frames_with_no_face_neither_vote_nor_reset_the_count() -> None:
    m = matcher()
    search_calls: list[np.ndarray] = []

    def search(enc: np.ndarray) -> tuple[Hit | None, int]:
        search_calls.append(enc)
        return alice(), 100

    face = [fake_face([0.1] * 128)]
    assert m.frame(face, search, 0.0) is None
    assert m.frame([], search, 0.1) is None
    assert m.frame([], search, 0.2) is None
    assert m.frame(face, search, 0.3) is not None
    assert (len(search_calls), m.counts.no_face, m.counts.frames) == (2, 2, 4)


def test_votes_age_out_so_a_holder_seen_long_ago_lends_nothing() -> None:
    m = matcher(vote_max_age_s=2.0)
    assert m.vote(alice(), 100, 0.0) is None
    assert m.vote(alice(), 100, 3.0) is None  # the first vote is 3 s old: gone
    assert m.vote(alice(), 100, 3.5) is not None


def test_a_face_near_two_holders_is_ambiguous_and_admits_nobody() -> None:
    m = matcher(margin=0.05)
    for t in range(5):
        assert m.vote(alice(0.30, second=0.33), 100, t * 0.1) is None
    assert (m.counts.ambiguous, m.counts.offered) == (5, 0)


def test_the_threshold_is_the_rules_for_the_gallerys_size() -> None:
    @dataclass
    class Tightening(FixedRule):
        def same(self, distance: float, n: int) -> bool:
            return distance <= (0.5 if n < 1000 else 0.3)

    m = Matcher(Tightening(), QualityGates())
    assert m.vote(alice(0.4), 1_000_000, 0.0) is None
    assert m.vote(alice(0.4), 1_000_000, 0.1) is None
    assert m.counts.unknown == 1
    assert m.vote(alice(0.4), 10, 0.2) is None
    assert m.vote(alice(0.4), 10, 0.3) is not None


@pytest.mark.parametrize(
    ("quality", "gate"),
    [
        pytest.param(
            Quality(face_px=40, blur=300, brightness=120, yaw_deg=0, pitch_deg=0), "face_too_small", id="small"
        ),
        pytest.param(Quality(face_px=200, blur=5, brightness=120, yaw_deg=0, pitch_deg=0), "blurry", id="blurry"),
        pytest.param(Quality(face_px=200, blur=300, brightness=10, yaw_deg=0, pitch_deg=0), "too_dark", id="dark"),
        pytest.param(
            Quality(face_px=200, blur=300, brightness=120, yaw_deg=60, pitch_deg=0), "head_turned", id="turned"
        ),
    ],
)
def test_a_face_failing_a_quality_gate_is_skipped_unsearched_and_counted(quality: Quality, gate: str) -> None:
    m = matcher()

    def search(enc: np.ndarray) -> tuple[Hit | None, int]:
        raise AssertionError("a skipped face is never searched")

    faces = [fake_face([0.1] * 128, quality=quality)]
    unencoded = [fake_face(None, quality=quality)]  # as the real encoder gives it: not worth encoding
    for t in range(3):
        assert m.frame(faces, search, t * 0.1) is None
        assert m.frame(unencoded, search, t * 0.1 + 0.05) is None
    assert m.counts.skipped == {gate: 6} and m.counts.no_face == 0


def test_only_the_largest_face_is_judged() -> None:
    m = matcher()
    small_good = fake_face([0.2] * 128, quality=GOOD_QUALITY)
    big_blurry = fake_face([0.1] * 128, quality=Quality(face_px=300, blur=5, brightness=120, yaw_deg=0, pitch_deg=0))
    largest_first: list[FaceFound] = sorted([small_good, big_blurry], key=lambda f: f.box.area, reverse=True)
    assert m.probe(largest_first, 0.0) is None
    assert m.counts.skipped == {"blurry": 1}


def test_an_unknown_face_is_counted_once_per_appearance_and_logged_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = matcher(vote_max_age_s=2.0, unknown_log_every_s=60.0)
    caplog.set_level(logging.INFO, logger="starfish.gate")
    for i in range(50):  # one stranger standing in front of the camera for 5 s
        assert m.vote(STRANGER, 100, i * 0.1) is None
    assert m.counts.unknown == 1
    for i in range(10):  # another one, after a pause, then one more a minute later
        m.vote(None, 100, 10.0 + i * 0.1)
    m.vote(STRANGER, 100, 75.0)
    assert m.counts.unknown == 3
    lines = [r.getMessage() for r in caplog.records if "face_unknown" in r.getMessage()]
    assert lines == ["face_unknown: 1 unknown face(s) since start", "face_unknown: 3 unknown face(s) since start"]


def test_an_admitted_holder_is_not_offered_again_while_in_view() -> None:
    m = matcher(readmit_after_s=5.0)
    offers = [m.vote(alice(), 100, t * 0.2) for t in range(100)]  # 20 s in front of the camera
    assert [o for o in offers if o is not None] == [FaceMatch("1001", "alice", 0.3)]
    assert m.vote(alice(), 100, 30.0) is None  # gone for 10 s, back: k votes again
    assert m.vote(alice(), 100, 30.2) == FaceMatch("1001", "alice", 0.3)


def test_another_holder_is_offered_while_the_first_is_still_in_view() -> None:
    m = matcher()
    m.vote(alice(), 100, 0.0)
    assert m.vote(alice(), 100, 0.1) is not None
    assert m.vote(bob(), 100, 0.2) is None
    assert m.vote(bob(), 100, 0.3) == FaceMatch("1002", "bob", 0.3)


def test_k_above_m_is_refused() -> None:
    with pytest.raises(ValueError, match="k must be"):
        Matcher(FixedRule(k=4, m=3), QualityGates())
