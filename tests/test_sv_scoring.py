"""Speaker-verification scoring (wds_pipeline.sv): EER, minDCF and the DET curve against
a reference written here from the NIST definitions (every threshold, plain loops), on
randomised score sets with many ties; mean subtraction and AS-norm against direct loops;
trial lists in VoxCeleb's formats and their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wds_pipeline.sv.metrics import ScoreSetError, det_curve, eer, min_dcf
from wds_pipeline.train.metrics import equal_error_rate

# ---------------------------------------------------------------------------
# The reference: NIST's definitions, one threshold at a time.


def reference_points(scores, labels):
    """(p_miss, p_fa) at every threshold t in {+inf} U {each distinct score}, strictest
    first: accept a trial when its score >= t."""
    targets = sum(1 for lab in labels if lab == 1)
    nontargets = len(labels) - targets
    points = []
    for t in [math.inf] + sorted(set(scores), reverse=True):
        misses = sum(1 for s, lab in zip(scores, labels) if lab == 1 and s < t)
        false_alarms = sum(1 for s, lab in zip(scores, labels) if lab == 0 and s >= t)
        points.append((misses / targets, false_alarms / nontargets))
    return points


def reference_eer(scores, labels):
    """Where p_miss and p_fa cross, linear between the two operating points around it."""
    points = reference_points(scores, labels)
    for (m0, f0), (m1, f1) in zip(points, points[1:]):
        if f1 >= m1:  # the first point where false alarms have caught up with misses
            # On the segment (f0, m0) -> (f1, m1): f0 + u (f1 - f0) == m0 + u (m1 - m0).
            u = (m0 - f0) / ((m0 - f0) - (m1 - f1))
            return f0 + u * (f1 - f0)
    raise AssertionError("unreachable: the last point has p_fa = 1 >= p_miss = 0")


def reference_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    costs = [c_miss * m * p_target + c_fa * f * (1 - p_target)
             for m, f in reference_points(scores, labels)]
    return min(costs) / min(c_miss * p_target, c_fa * (1 - p_target))


# Score sets: few distinct values (many ties) or continuous ones, both labels present.
score_sets = st.integers(2, 60).flatmap(lambda n: st.tuples(
    st.one_of(st.lists(st.integers(-3, 3).map(float), min_size=n, max_size=n),
              st.lists(st.floats(-5, 5, allow_nan=False), min_size=n, max_size=n)),
    st.lists(st.integers(0, 1), min_size=n, max_size=n),
)).filter(lambda sl: 0 < sum(sl[1]) < len(sl[1]))


@settings(max_examples=300, deadline=None)
@given(score_sets)
def test_eer_equals_the_reference(sl):
    scores, labels = sl
    assert eer(scores, labels) == pytest.approx(reference_eer(scores, labels), abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(score_sets, st.sampled_from([0.01, 0.05, 0.5]), st.sampled_from([(1.0, 1.0), (10.0, 1.0), (1.0, 3.0)]))
def test_min_dcf_equals_the_reference(sl, p_target, costs):
    scores, labels = sl
    got = min_dcf(scores, labels, p_target, c_miss=costs[0], c_fa=costs[1])
    assert got == pytest.approx(reference_min_dcf(scores, labels, p_target, *costs), abs=1e-12)
    assert 0.0 <= got <= 1.0


@settings(max_examples=100, deadline=None)
@given(score_sets)
def test_det_curve_is_every_operating_point(sl):
    scores, labels = sl
    p_miss, p_fa = det_curve(scores, labels)
    ref = reference_points(scores, labels)
    np.testing.assert_array_equal(p_miss, [m for m, _ in ref])
    np.testing.assert_array_equal(p_fa, [f for _, f in ref])


def test_seeded_large_sets_with_ties_equal_the_reference():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(50, 400))
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = np.round(rng.normal(size=n) + labels, 1)  # rounding: many ties
        s, lab = scores.tolist(), labels.tolist()
        assert eer(scores, labels) == pytest.approx(reference_eer(s, lab), abs=1e-12)
        for p in (0.01, 0.05):
            assert min_dcf(scores, labels, p) == pytest.approx(reference_min_dcf(s, lab, p), abs=1e-12)


def test_all_equal_scores_are_one_threshold():
    labels = np.array([1, 0, 0, 1, 0])
    assert eer(np.full(5, 0.3), labels) == 0.5
    assert min_dcf(np.full(5, 0.3), labels, 0.01) == 1.0
    p_miss, p_fa = det_curve(np.full(5, 0.3), labels)
    assert p_miss.tolist() == [1.0, 0.0] and p_fa.tolist() == [0.0, 1.0]


def test_the_order_of_tied_trials_changes_nothing():
    # The trainer's EER before sv.metrics sorted ties by position: [1, 0] gave 0, [0, 1] gave 1.
    assert eer([0.7, 0.7], [1, 0]) == eer([0.7, 0.7], [0, 1]) == 0.5
    assert equal_error_rate(np.array([0.7, 0.7]), np.array([0, 1])) == 0.5


def test_perfect_and_inverted_scores():
    assert eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 0.0
    assert min_dcf([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0], 0.01) == 0.0
    assert eer([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 1.0


def test_the_trainer_eer_is_the_sv_one():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 1000)
    scores = rng.normal(size=1000) + labels
    assert equal_error_rate(scores, labels) == eer(scores, labels)


@pytest.mark.parametrize("scores, labels, match", [
    ([0.1, 0.2], [1, 1], "got 2 targets and 0 non-targets"),
    ([0.1, 0.2], [0, 0], "got 0 targets and 2 non-targets"),
    ([0.1, float("nan")], [0, 1], "1 of 2 scores are NaN"),
    ([0.1, 0.2], [0, 2], "labels must be 0"),
    ([0.1, 0.2, 0.3], [0, 1], "3 scores but 2 labels"),
])
def test_unscorable_sets_are_named(scores, labels, match):
    with pytest.raises(ScoreSetError, match=match):
        eer(scores, labels)


def test_min_dcf_checks_its_prior():
    with pytest.raises(ScoreSetError, match="p_target must lie strictly between 0 and 1"):
        min_dcf([0.1, 0.2], [0, 1], 1.0)
