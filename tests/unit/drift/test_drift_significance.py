"""The per-label tests against scipy and by hand; merging and PSI edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from feedwarden.drift import histogram_test, psi, rate_test
from feedwarden.drift.significance import (
    HIST_TEST,
    HIST_TEST_KNOWN,
    MIN_EXPECTED,
    RATE_TEST,
    RATE_TEST_KNOWN,
    hypergeom_tails,
    merge_bins,
    power_divergence,
)
from feedwarden.models.bundle import Reference

EDGES = tuple(i / 10 for i in range(11))
HIST = (0.60, 0.20, 0.08, 0.04, 0.02, 0.015, 0.012, 0.01, 0.008, 0.015)


def ref(rate=0.05, hist=HIST, n=20_000):
    return Reference(rate, EDGES, hist, n)


@pytest.mark.parametrize(
    ("x", "total", "successes", "draws"),
    [(0, 10, 3, 4), (3, 10, 3, 4), (30, 21_000, 1_050, 1_000), (80, 21_000, 1_050, 1_000), (5, 7, 7, 5)],
)
def test_hypergeometric_tails_match_scipy(x, total, successes, draws):
    lower, upper = hypergeom_tails(x, total, successes, draws)
    assert lower == pytest.approx(stats.hypergeom.cdf(x, total, successes, draws), rel=1e-9, abs=1e-300)
    assert upper == pytest.approx(stats.hypergeom.sf(x - 1, total, successes, draws), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("flagged", [0, 20, 50, 65, 90])
def test_rate_test_is_fishers_exact_test_with_central_two_sided_p(flagged):
    n, reference = 1000, ref(rate=0.05, n=20_000)
    table = [[flagged, n - flagged], [1000, 19_000]]
    greater = stats.fisher_exact(table, alternative="greater").pvalue
    less = stats.fisher_exact(table, alternative="less").pvalue
    result = rate_test(flagged, n, reference)
    assert result.name == RATE_TEST
    assert result.p_value == pytest.approx(min(1.0, 2 * min(greater, less)), rel=1e-8)
    assert result.statistic == pytest.approx(stats.chi2.isf(result.p_value, 1))


def test_rate_test_with_unknown_reference_size_is_the_exact_binomial_test():
    result = rate_test(70, 1000, ref(rate=0.05, n=0))
    expected = 2 * stats.binom.sf(69, 1000, 0.05)
    assert result.name == RATE_TEST_KNOWN
    assert result.p_value == pytest.approx(expected, rel=1e-10)


def test_reference_sampling_error_widens_the_rate_test():
    small, large, known = (rate_test(70, 1000, ref(rate=0.05, n=m)) for m in (1000, 100_000, 0))
    assert small.p_value > large.p_value > known.p_value * 0.9
    assert small.p_value > 0.05 > known.p_value


def test_rate_test_sees_drops_and_extremes_stay_finite():
    assert rate_test(0, 2000, ref(rate=0.05)).p_value < 1e-10
    extreme = rate_test(1000, 1000, ref(rate=0.001))
    assert math.isfinite(extreme.statistic) and extreme.p_value > 0
    assert rate_test(0, 500, ref(rate=0.0)).p_value == 1.0


def test_merge_bins_gives_every_group_enough_expected_posts():
    share = np.asarray(HIST)
    for size in (50, 200, 1000, 10_000):
        groups = merge_bins(share, size)
        expected = np.bincount(groups, weights=share) * size
        assert np.all(np.diff(groups) >= 0) and groups[0] == 0
        if groups.max() > 0:
            assert expected.min() >= MIN_EXPECTED
    assert merge_bins(share, 1).tolist() == [0] * 10
    assert merge_bins(np.full(4, 0.25), 100).tolist() == [0, 1, 2, 3]
    assert merge_bins([0.5, 0.47, 0.03], 100).tolist() == [0, 1, 1]
    assert merge_bins([0.02, 0.02, 0.9, 0.06], 100).tolist() == [0, 0, 0, 1]


def test_degrees_of_freedom_grow_with_the_window():
    sizes = (30, 200, 1000, 10_000)
    dfs = [histogram_test(np.round(np.asarray(HIST) * n).astype(int), ref()).df for n in sizes]
    assert dfs == sorted(dfs) and dfs[0] < dfs[-1] == 9


def test_histogram_that_matches_the_reference_passes_and_a_shifted_one_fails():
    same = np.round(np.asarray(HIST) * 2000).astype(int)
    assert histogram_test(same, ref()).p_value > 0.99
    shifted = np.asarray(HIST[1:] + HIST[:1])
    result = histogram_test(np.round(shifted * 2000).astype(int), ref())
    assert result.name == HIST_TEST and result.p_value < 1e-12


def test_zero_probability_reference_bins_are_merged_and_psi_stays_finite():
    hist = (0.7, 0.2, 0.0, 0.0, 0.05, 0.0, 0.0, 0.0, 0.0, 0.05)
    counts = np.array([600, 200, 50, 50, 50, 0, 0, 0, 0, 50])
    for n_ref in (20_000, 0):
        result = histogram_test(counts, ref(hist=hist, n=n_ref))
        assert math.isfinite(result.statistic) and math.isfinite(result.effect)
        assert result.p_value < 1e-6
    assert histogram_test(counts, ref(hist=hist, n=0)).name == HIST_TEST_KNOWN


def test_power_divergence_matches_scipy_cressie_read():
    obs, exp = np.array([30.0, 14, 34, 45, 57, 20]), np.full(6, 200 / 6)
    expected = stats.power_divergence(obs, exp, lambda_="cressie-read").statistic
    assert power_divergence(obs, exp) == pytest.approx(expected)


def test_psi_is_zero_for_a_match_positive_otherwise_and_finite_with_empty_bins():
    counts = np.round(np.asarray(HIST) * 10_000).astype(int)
    assert psi(counts, HIST) == pytest.approx(0.0, abs=1e-6)
    assert psi([10, 0, 0, 0, 0, 0, 0, 0, 0, 0], HIST) > 0.1
    assert math.isfinite(psi([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], (1.0,) + (0.0,) * 9))
    assert psi([0] * 10, HIST) == 0.0
