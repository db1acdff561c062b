"""The face threshold rule: tighter as the gallery grows, never into the genuine range, margin and k of m."""

from __future__ import annotations

from statistics import NormalDist

import pytest

from edge.face.rule import FLOOR, FaceRule, threshold_table

GENUINE_MEASURED = (0.33, 0.42)  # same person across the shared photos (tests/drivers/test_face.py)
IMPOSTOR_MEASURED = (0.78, 0.91)  # different people across the shared photos


def test_a_single_template_is_held_to_the_target_false_match_rate() -> None:
    rule = FaceRule()
    assert rule.threshold(1) == pytest.approx(rule.impostor_mean + rule.impostor_sd * NormalDist().inv_cdf(1e-3))
    assert rule.false_accept_chance(1) == pytest.approx(rule.target)
    assert rule.holds(1)


def test_the_threshold_tightens_as_the_gallery_grows_until_the_floor() -> None:
    rule = FaceRule(impostor_mean=0.86)  # the LFW figures leave room to see it tighten
    thresholds = [rule.threshold(n) for n in (1, 10, 100, 1_000, 10_000)]
    assert thresholds == sorted(thresholds, reverse=True) and len(set(thresholds)) >= 4
    assert thresholds[-1] == FLOOR


@pytest.mark.parametrize("n", [1_000, 10_000, 100_000, 1_000_000])
def test_a_large_gallery_is_clamped_at_the_floor_and_says_what_it_costs(n: int) -> None:
    rule = FaceRule()
    assert rule.raw_threshold(n) < GENUINE_MEASURED[0]  # the model alone would refuse the holders themselves
    assert rule.threshold(n) == FLOOR >= GENUINE_MEASURED[1]
    assert not rule.holds(n) and rule.false_accept_chance(n) > rule.target


def test_the_largest_gallery_the_target_holds_for_is_where_the_floor_starts() -> None:
    rule = FaceRule(impostor_mean=0.86)
    n = rule.max_gallery()
    assert n > 1 and rule.holds(n) and not rule.holds(n + 1)
    assert FaceRule().max_gallery() < n  # the conservative East Asian figures hold for fewer


def test_a_small_target_never_loosens_past_the_base_threshold() -> None:
    assert FaceRule(target=0.4, impostor_mean=1.2).threshold(1) == 0.60


@pytest.mark.parametrize(
    ("distance", "n", "same"),
    [
        pytest.param(0.36, 1, True, id="genuine-one-template"),
        pytest.param(0.41, 1_000_000, True, id="genuine-at-the-floor"),
        pytest.param(0.44, 1, True, id="under-the-single-template-threshold"),
        pytest.param(0.44, 1_000, False, id="same-distance-refused-in-a-larger-gallery"),
        pytest.param(IMPOSTOR_MEASURED[0], 1, False, id="nearest-impostor-measured"),
        pytest.param(None, 1, False, id="no-face"),
        pytest.param(float("nan"), 1, False, id="nan"),
    ],
)
def test_same_person_verdicts(distance: float | None, n: int, same: bool) -> None:
    assert FaceRule().same(distance, n) is same


@pytest.mark.parametrize(
    "changes",
    [{"target": 0.0}, {"target": 1.0}, {"k": 3, "m": 2}, {"k": 0}, {"margin": -0.1}, {"floor": 0.7}],
    ids=repr,
)
def test_a_rule_that_cannot_work_is_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FaceRule(**changes)  # type: ignore[arg-type]


def test_the_defaults_are_two_of_three_frames_and_a_margin_of_six_hundredths() -> None:
    rule = FaceRule()
    assert (rule.k, rule.m, rule.margin, rule.target) == (2, 3, 0.06, 1e-3)


def test_the_table_lists_each_gallery_size_with_its_threshold_and_chance() -> None:
    table = threshold_table()
    assert [row["n"] for row in table] == [1, 1_000, 10_000, 100_000, 1_000_000]
    assert table[0]["threshold"] == pytest.approx(0.451, abs=1e-3)
    assert all(row["threshold"] == FLOOR for row in table[1:])
    chances = [row["false_accept_chance"] for row in table]
    assert chances == sorted(chances) and chances[0] == pytest.approx(1e-3)
