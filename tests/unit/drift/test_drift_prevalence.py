"""EM prior adjustment recovers a known shifted prevalence (pure label shift)."""

from __future__ import annotations

import numpy as np
import pytest

from feedwarden.drift import DriftError, WindowStats, em_prevalence, reference_from_scores, window_prevalence
from feedwarden.drift.simulate import BinormalLabel

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


@pytest.mark.parametrize("shifted", [0.02, 0.15])
def test_window_prevalence_from_bins_with_the_calibration_prior(shifted):
    rng = np.random.default_rng(12)
    label = BinormalLabel(prior=0.05)
    reference = reference_from_scores(label.sample(rng, 50_000), 0.5, EDGES)
    stats = WindowStats.from_scores(
        "hate", label.sample(rng, 20_000, prevalence=shifted), threshold=0.5, edges=EDGES,
        window_start=0.0, window_end=60.0,
    )
    assert window_prevalence(stats, reference, prior=0.05).value == pytest.approx(shifted, abs=0.008)


def test_without_a_prior_a_reference_like_window_returns_the_reference_prior():
    hist = (0.5, 0.3, 0.1, 0.1)
    reference_counts = (500, 300, 100, 100)
    from feedwarden.models.bundle import Reference

    reference = Reference(0.2, (0.0, 0.25, 0.5, 0.75, 1.0), hist, 1000)
    stats = WindowStats("hate", 0.0, 60.0, 1000, 200, reference_counts)
    result = window_prevalence(stats, reference)
    midpoint_prior = 0.5 * 0.125 + 0.3 * 0.375 + 0.1 * 0.625 + 0.1 * 0.875
    assert result.prior == pytest.approx(midpoint_prior)
    assert result.value == pytest.approx(midpoint_prior, abs=1e-6)


def test_weights_and_degenerate_inputs():
    assert em_prevalence([0.1, 0.9], 0.5, weights=[3, 1]).value == pytest.approx(
        em_prevalence([0.1, 0.1, 0.1, 0.9], 0.5).value
    )
    assert em_prevalence([0.0, 0.0], 0.3).value == 0.0
    with pytest.raises(DriftError):
        em_prevalence([0.5], 0.0)
    with pytest.raises(DriftError):
        em_prevalence([0.5], 0.5, weights=[0.0])
