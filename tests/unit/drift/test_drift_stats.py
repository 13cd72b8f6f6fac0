"""WindowStats: binning convention, vectorised construction, merge algebra, round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwarden.drift import DriftError, WindowStats, bin_scores, reference_from_scores

EDGES = (0.0, 0.25, 0.5, 0.75, 1.0)


def stats_of(scores, start=0.0, end=60.0, threshold=0.5):
    return WindowStats.from_scores(
        "hate", np.asarray(scores, dtype=float), threshold=threshold, edges=EDGES,
        window_start=start, window_end=end,
    )


def test_bins_are_left_closed_and_the_last_is_closed_and_outliers_are_clipped():
    scores = [0.0, 0.2499, 0.25, 0.5, 0.75, 0.9999, 1.0, -0.1, 1.5]
    assert bin_scores(scores, EDGES).tolist() == [3, 1, 1, 4]


def test_nan_scores_and_bad_edges_are_refused():
    with pytest.raises(DriftError):
        bin_scores([0.1, float("nan")], EDGES)
    with pytest.raises(DriftError):
        bin_scores([0.1], (0.0, 0.5, 0.5, 1.0))


def test_from_scores_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    scores = rng.random(1000)
    got = stats_of(scores)
    counts = [0] * 4
    sums = [0.0] * 4
    for s in scores:
        b = min(int(s // 0.25), 3)
        counts[b] += 1
        sums[b] += s
    assert got.hist == tuple(counts)
    assert got.n == 1000
    assert got.flagged == sum(1 for s in scores if s >= 0.5)
    assert got.score_sum == pytest.approx(sums)


def test_flagged_counts_scores_at_the_threshold():
    assert stats_of([0.5, 0.49, 0.51], threshold=0.5).flagged == 2


def test_empty_batch_is_a_valid_zero_state():
    empty = stats_of([])
    assert (empty.n, empty.flagged, empty.hist) == (0, 0, (0, 0, 0, 0))


def test_merge_adds_counts_and_widens_the_window():
    a = stats_of([0.1, 0.6], start=0.0, end=60.0)
    b = stats_of([0.9], start=60.0, end=120.0)
    merged = a.merge(b)
    assert (merged.n, merged.flagged, merged.hist) == (3, 2, (1, 0, 1, 1))
    assert (merged.window_start, merged.window_end) == (0.0, 120.0)
    assert merged.score_sum == pytest.approx((0.1, 0.0, 0.6, 0.9))


def test_merge_refuses_other_labels_and_bins_and_drops_partial_sums():
    a = stats_of([0.1])
    with pytest.raises(DriftError):
        a.merge(WindowStats("spam", 0, 60, 1, 0, (1, 0, 0, 0)))
    with pytest.raises(DriftError):
        a.merge(WindowStats("hate", 0, 60, 1, 0, (1, 0, 0)))
    assert a.merge(WindowStats("hate", 0, 60, 1, 0, (1, 0, 0, 0))).score_sum is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), max_size=60), st.lists(st.floats(0.0, 1.0), max_size=60))
def test_merge_of_parts_equals_stats_of_the_whole(left, right):
    whole = stats_of(left + right)
    for merged in (stats_of(left).merge(stats_of(right)), stats_of(right).merge(stats_of(left))):
        assert (merged.n, merged.flagged, merged.hist) == (whole.n, whole.flagged, whole.hist)
        assert merged.score_sum == pytest.approx(whole.score_sum)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 2, "flagged": 3, "hist": (2, 0, 0, 0)},
        {"n": 2, "flagged": 1, "hist": (1, 0, 0, 0)},
        {"n": 1, "flagged": 0, "hist": (1, 0, 0, 0), "score_sum": (0.1,)},
    ],
)
def test_inconsistent_state_is_refused(kwargs):
    with pytest.raises(DriftError):
        WindowStats("hate", 0.0, 60.0, **kwargs)


def test_dict_round_trip():
    original = stats_of([0.1, 0.3, 0.8])
    assert WindowStats.from_dict(original.to_dict()) == original


def test_reference_from_scores_bins_like_the_windows():
    rng = np.random.default_rng(4)
    scores = rng.random(5000)
    ref = reference_from_scores(scores, 0.5, EDGES)
    window = stats_of(scores)
    assert ref.n == 5000
    assert ref.rate == window.flagged / 5000
    assert ref.hist == tuple(c / 5000 for c in window.hist)
