"""EM prior adjustment recovers a known shifted prevalence (pure label shift)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from feedwarden.drift import DriftError, WindowStats, em_prevalence, reference_from_scores, window_prevalence
from feedwarden.drift.simulate import BinormalLabel
from feedwarden.drift.stats import REFERENCE_EDGES
from feedwarden.models.bundle import Reference

EDGES = tuple(float(e) for e in np.linspace(0.0, 1.0, 21))


@pytest.mark.parametrize("shifted", [0.01, 0.05, 0.10, 0.20])
def test_em_recovers_a_shifted_prior_from_raw_scores(shifted):
    rng = np.random.default_rng(11)
    label = BinormalLabel(prior=0.05)
    scores = label.sample(rng, 20_000, prevalence=shifted)
    result = em_prevalence(scores, 0.05)
    assert result.converged
    assert result.value == pytest.approx(shifted, abs=0.006)
    # The naive estimate (mean probability) is biased towards the old prior; EM removes that.
    assert abs(result.value - shifted) < abs(float(scores.mean()) - shifted) or shifted == 0.05


@pytest.mark.parametrize("prior", [0.003, 0.05])
@pytest.mark.parametrize("shifted", [0.01, 0.05, 0.2, 0.5])
def test_window_prevalence_from_bins_recovers_a_known_prevalence(prior, shifted):
    """Calibrated scores at `prior`, a window at `shifted`: the binned estimate is within
    0.01 of the truth and of EM on the raw scores, also for a rare label."""
    rng = np.random.default_rng(12)
    label = BinormalLabel(prior=prior)
    reference = reference_from_scores(label.sample(rng, 50_000), 0.5)
    assert reference.edges == REFERENCE_EDGES
    scores = label.sample(rng, 20_000, prevalence=shifted)
    stats = WindowStats.from_scores("hate", scores, threshold=0.5, edges=REFERENCE_EDGES,
                                    window_start=0.0, window_end=60.0)
    result = window_prevalence(stats, reference)
    assert result.converged
    assert result.value == pytest.approx(shifted, abs=0.01)
    assert result.value == pytest.approx(em_prevalence(scores, prior).value, abs=0.01)


def test_equal_width_bins_lose_a_rare_label():
    """Why references use REFERENCE_EDGES: with equal 0.05 bins nearly all of a rare label's
    posts share one bin, and the estimate for a window at 50 % runs to 1."""
    rng = np.random.default_rng(12)
    label = BinormalLabel(prior=0.003)
    reference = reference_from_scores(label.sample(rng, 50_000), 0.5, EDGES)
    stats = WindowStats.from_scores("hate", label.sample(rng, 20_000, prevalence=0.5), threshold=0.5,
                                    edges=EDGES, window_start=0.0, window_end=60.0)
    assert window_prevalence(stats, reference).value > 0.99


@pytest.mark.parametrize("sums", [True, False])
def test_a_window_with_the_reference_shares_returns_the_histogram_prior(sums):
    """The prior comes from the reference histogram at the window's own bin representatives
    (bin means, or midpoints without sums), never from the stored raw-score mean: so no
    shift of shares means no shift of the estimate, whatever `prior` says."""
    edges = (0.0, 0.25, 0.5, 0.75, 1.0)
    reference = Reference(0.2, edges, (0.5, 0.3, 0.1, 0.1), 1000, prior=0.02)
    counts, means = (500, 300, 100, 100), (0.01, 0.3, 0.6, 0.95)
    score_sum = tuple(c * m for c, m in zip(counts, means, strict=True)) if sums else None
    stats = WindowStats("hate", 0.0, 60.0, 1000, 200, counts, score_sum)
    points = means if sums else (0.125, 0.375, 0.625, 0.875)
    expected = float(np.dot((0.5, 0.3, 0.1, 0.1), points))
    result = window_prevalence(stats, reference)
    assert result.prior == pytest.approx(expected)
    assert result.value == pytest.approx(expected, abs=1e-6)


def test_window_without_score_sums_does_not_run_away():
    """The 0.82-0.97 estimates: an exact raw-score prior set against bin midpoints made
    every post look positive. Midpoints now meet a midpoint prior."""
    rng = np.random.default_rng(13)
    label = BinormalLabel(prior=0.01)
    reference = reference_from_scores(label.sample(rng, 50_000), 0.5)
    stats = WindowStats.from_scores("hate", label.sample(rng, 20_000), threshold=0.5, edges=REFERENCE_EDGES,
                                    window_start=0.0, window_end=60.0)
    bare = dataclasses.replace(stats, score_sum=None)
    assert window_prevalence(bare, reference).value == pytest.approx(0.01, abs=0.003)


def test_binning_mismatch_is_refused():
    reference = Reference(0.2, (0.0, 0.5, 1.0), (0.8, 0.2), 100)
    with pytest.raises(DriftError):
        window_prevalence(WindowStats("hate", 0.0, 60.0, 3, 1, (1, 1, 1)), reference)


def test_weights_and_degenerate_inputs():
    assert em_prevalence([0.1, 0.9], 0.5, weights=[3, 1]).value == pytest.approx(
        em_prevalence([0.1, 0.1, 0.1, 0.9], 0.5).value
    )
    assert em_prevalence([0.0, 0.0], 0.3).value == 0.0
    with pytest.raises(DriftError):
        em_prevalence([0.5], 0.0)
    with pytest.raises(DriftError):
        em_prevalence([0.5], 0.5, weights=[0.0])
