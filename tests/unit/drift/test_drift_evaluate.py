"""evaluate_window end to end on synthetic streams: false alarms at or below alpha, shifts alert."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import orjson
import pytest

from feedwarden.drift import DriftAlert, DriftError, WindowStats, evaluate_window, window_prevalence
from feedwarden.drift.simulate import Cells, demo_references, false_alarm_rate
from feedwarden.models.bundle import Reference

REFS = demo_references(n_ref=20_000)
WINDOWS = 2000


def tolerance(alpha: float, windows: int) -> float:
    """Three binomial standard errors above alpha: the measured rate may not exceed this."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / windows)


def draw(
    cells: dict[str, Cells], rng: np.random.Generator, n: int, start: float = 0.0
) -> dict[str, WindowStats]:
    out = {}
    for label, c in cells.items():
        hist, flagged = c.sample(rng, n, 1)
        counts = tuple(int(x) for x in hist[0])
        out[label] = WindowStats(label, start, start + 60.0, n, int(flagged[0]), counts)
    return out


@pytest.mark.parametrize(
    ("alpha", "n", "resample", "correction"),
    [
        (0.01, 200, False, "holm"),
        (0.01, 1000, True, "holm"),
        (0.05, 500, True, "holm"),
        (0.05, 500, True, "bh"),
    ],
)
def test_stationary_stream_false_alarm_rate_is_at_most_alpha(alpha, n, resample, correction):
    alarms, windows = false_alarm_rate(
        REFS, windows=WINDOWS, n=n, alpha=alpha, resample_reference=resample, correction=correction, seed=1
    )
    assert alarms / windows <= tolerance(alpha, windows)


def test_small_calibration_set_needs_the_two_sample_tests():
    """With n_ref = n = 2000 a test that trusts the reference alarms far too often; ours does not."""
    refs = demo_references(n_ref=2000)
    alarms, windows = false_alarm_rate(refs, windows=1000, n=2000, alpha=0.01, seed=2)
    assert alarms / windows <= tolerance(0.01, windows)
    rng = np.random.default_rng(2)
    truth = {label: Cells.of(r) for label, r in refs.items()}
    naive_alarms = 0
    for _ in range(10):  # ten calibration sets, each trusted as exact (n = 0) for 100 windows
        estimated = {label: truth[label].reference(rng, 2000, r.edges) for label, r in refs.items()}
        trusted = {label: Reference(r.rate, r.edges, r.hist, 0) for label, r in estimated.items()}
        naive_alarms += sum(bool(evaluate_window(draw(truth, rng, 2000), trusted)) for _ in range(100))
    assert naive_alarms / 1000 > 5 * 0.01


@pytest.mark.parametrize(("factor", "min_share"), [(2.0, 0.75), (3.0, 1.0)])
def test_rate_shift_alerts(factor, min_share):
    rng = np.random.default_rng(3)
    cells = {label: Cells.of(r) for label, r in REFS.items()}
    cells["hate"] = cells["hate"].shifted("rate", factor)
    hits = 0
    for _ in range(200):
        alerts = evaluate_window(draw(cells, rng, 1000), REFS)
        hits += any(a.label == "hate" and a.observed_rate > a.reference_rate for a in alerts)
    assert hits / 200 >= min_share


def test_histogram_shift_below_the_threshold_is_seen_by_the_histogram_test_alone():
    rng = np.random.default_rng(4)
    cells = {label: Cells.of(r) for label, r in REFS.items()}
    cells["harassment"] = cells["harassment"].shifted("tilt", 0.3)
    names = [
        a.statistic.name
        for _ in range(100)
        for a in evaluate_window(draw(cells, rng, 1000), REFS)
        if a.label == "harassment"
    ]
    assert names.count("chi2_cressie_read_homogeneity") >= 95
    assert names.count("fisher_exact_rate") <= 2


def test_no_test_below_min_posts_even_for_a_blatant_shift():
    stats = {"hate": WindowStats("hate", 0.0, 60.0, 199, 199, (0,) * 9 + (199,))}
    assert evaluate_window(stats, REFS) == []
    assert evaluate_window(stats, REFS, min_posts=100) != []


def test_labels_without_reference_are_skipped_and_mismatched_bins_refused():
    stats = {"new_label": WindowStats("new_label", 0.0, 60.0, 500, 500, (0,) * 9 + (500,))}
    assert evaluate_window(stats, REFS) == []
    with pytest.raises(DriftError):
        evaluate_window({"hate": WindowStats("hate", 0.0, 60.0, 500, 0, (500, 0, 0))}, REFS)
    with pytest.raises(DriftError):
        evaluate_window({}, REFS, alpha=0.0)


def test_alert_contents_and_json():
    rng = np.random.default_rng(5)
    cells = {label: Cells.of(r) for label, r in REFS.items()}
    cells["hate"] = cells["hate"].shifted("rate", 3.0)
    stats = draw(cells, rng, 2000, start=1_763_769_600.0)
    alerts = evaluate_window(stats, REFS)
    assert alerts and [a.label for a in alerts] == sorted(a.label for a in alerts)
    rate = next(a for a in alerts if a.statistic.name == "fisher_exact_rate")
    assert isinstance(rate, DriftAlert)
    assert rate.label == "hate" and rate.n == 2000
    assert rate.observed_rate == stats["hate"].flagged / 2000
    assert rate.reference_rate == REFS["hate"].rate
    assert rate.statistic.value >= rate.statistic.critical_value
    assert rate.statistic.adjusted_p_value <= 0.01
    assert rate.severity == "critical"
    assert rate.estimated_prevalence > 0 and rate.psi > 0
    data = orjson.loads(orjson.dumps(rate.to_dict()))
    assert data["window_start"] == "2025-11-22T00:00:00.000Z"
    assert set(data) == {
        "label", "window_start", "window_end", "n", "observed_rate", "reference_rate",
        "statistic", "severity", "estimated_prevalence", "psi",
    }
    assert set(data["statistic"]) >= {"name", "value", "critical_value", "p_value"}


def test_small_but_significant_shift_is_a_warning():
    rng = np.random.default_rng(6)
    cells = {"spam": Cells.of(REFS["spam"]).shifted("rate", 1.15)}
    severities = {
        a.severity
        for _ in range(20)
        for a in evaluate_window(draw(cells, rng, 20_000), {"spam": REFS["spam"]})
        if a.statistic.name == "fisher_exact_rate"
    }
    assert severities == {"warning"}


def test_alert_carries_the_window_prevalence_estimate_whatever_the_stored_prior():
    rng = np.random.default_rng(7)
    cells = {"hate": Cells.of(REFS["hate"]).shifted("rate", 3.0)}
    stats = draw(cells, rng, 2000)
    refs = {"hate": dataclasses.replace(REFS["hate"], prior=0.02)}
    with_prior = evaluate_window(stats, refs)[0].estimated_prevalence
    assert with_prior == evaluate_window(stats, REFS)[0].estimated_prevalence
    assert with_prior == window_prevalence(stats["hate"], REFS["hate"]).value
