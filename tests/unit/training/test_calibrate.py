from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from feedwarden.training.calibrate import (
    allowed_false_positives,
    budget_threshold,
    domain_floor,
    expected_calibration_error,
    f1_threshold,
    fit_platt,
    group_floor,
    round_up,
    safety_thresholds,
    sigmoid,
    topic_threshold,
)


def test_platt_recovers_a_known_scaling() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 20000)
    targets = (rng.random(20000) < sigmoid(0.5 * logits - 1.0)).astype(float)
    a, b = fit_platt(logits, targets)
    assert a == pytest.approx(0.5, abs=0.03)
    assert b == pytest.approx(-1.0, abs=0.06)


def test_platt_without_both_classes_is_identity() -> None:
    assert fit_platt(np.array([1.0, 2.0]), np.array([0.0, 0.0])) == (1.0, 0.0)


def test_order_statistic_guarantee() -> None:
    assert allowed_false_positives(100, 0.02, 0.9) is None  # 0.98**100 = 0.13 > 0.1
    k = allowed_false_positives(1000, 0.02, 0.9)
    assert k is not None
    assert binom.cdf(k, 1000, 0.02) <= 0.1 < binom.cdf(k + 1, 1000, 0.02)
    assert k == 13


def test_budget_threshold_lets_through_exactly_the_allowed_negatives() -> None:
    scores = np.linspace(0, 1, 1000)
    targets = np.zeros(1000)
    choice = budget_threshold(scores, targets, 0.02, 0.9)
    assert choice.guaranteed and choice.allowed_fp == 13
    assert (scores >= choice.threshold).sum() == 13


def test_safety_thresholds_keep_hide_above_warn() -> None:
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.beta(2, 8, 2000), rng.beta(8, 2, 60)])
    targets = np.concatenate([np.zeros(2000), np.ones(60)])
    thresholds, info = safety_thresholds(scores, targets, np.full(len(scores), "one"), 0.02, 0.005, 0.9)
    assert thresholds["hide"] >= thresholds["warn"]
    assert (scores[:2000] >= thresholds["warn"]).mean() <= 0.02
    assert info["guaranteed"] is True


def test_the_budget_holds_within_each_domain_not_only_on_the_pool() -> None:
    # 2000 easy negatives dilute 200 hard ones: 2% of the pool would let 44 hard
    # negatives (22%) through; the floor lets through floor(2% x 200) = 4 of them.
    rng = np.random.default_rng(3)
    easy, hard, positive = rng.uniform(0.0, 0.2, 2000), rng.uniform(0.1, 0.9, 200), rng.uniform(0.5, 1, 40)
    scores = np.concatenate([easy, hard, positive])
    targets = np.concatenate([np.zeros(2200), np.ones(40)])
    domains = np.array(["easy"] * 2000 + ["hard"] * 200 + ["easy"] * 20 + ["hard"] * 20)
    floor = domain_floor(scores, targets, domains, 0.02, 0.9)
    assert floor.pool.guaranteed and (scores[:2200] >= floor.pool.threshold).sum() == floor.pool.allowed_fp
    assert (scores[2000:2200] >= floor.threshold).sum() == 4
    assert floor.binding == "hard"
    assert domain_floor(scores, targets, np.full(len(scores), "easy"), 0.02, 0.9).binding == "pool"


def test_a_domain_too_small_to_measure_the_budget_sets_no_floor() -> None:
    scores = np.concatenate([np.linspace(0, 0.5, 1000), np.linspace(0.5, 0.99, 49)])
    targets = np.zeros(1049)
    domains = np.array(["big"] * 1000 + ["small"] * 49)  # 49 x 2% < 1 false positive
    floor = domain_floor(scores, targets, domains, 0.02, 0.9)
    assert set(floor.domains) == {"big"}
    assert floor.threshold == floor.pool.threshold


def test_wide_budgets_are_not_capped_per_domain() -> None:
    scores = np.concatenate([np.linspace(0, 0.2, 1000), np.linspace(0.1, 0.9, 100)])
    targets = np.zeros(1100)
    domains = np.array(["easy"] * 1000 + ["hard"] * 100)
    assert domain_floor(scores, targets, domains, 0.05, 0.9).binding == "hard"
    wide = domain_floor(scores, targets, domains, 0.25, 0.9)
    assert wide.domains == {} and wide.threshold == wide.pool.threshold


def test_thresholds_round_up_so_the_negative_below_stays_out() -> None:
    negative = float(np.float32(0.46946012))  # a score as the engine computes it
    threshold = budget_threshold(np.array([negative, 0.1]), np.zeros(2), 0.4, None).threshold
    assert negative < threshold and negative < round_up(threshold) and round(threshold, 6) <= negative
    assert round_up(0.57) == 0.57


def test_topic_threshold_is_clamped_and_falls_back() -> None:
    assert topic_threshold(np.array([0.9, 0.1]), np.array([1.0, 0.0])) == 0.3
    scores = np.array([0.05] * 10 + [0.95] * 10)
    targets = np.array([0.0] * 10 + [1.0] * 10)
    assert topic_threshold(scores, targets) == pytest.approx(0.5, abs=0.01)  # middle of the plateau
    assert 0.15 <= topic_threshold(scores * 0.02 + 0.95, targets) <= 0.85  # clamped


def test_ece_is_zero_for_perfect_calibration() -> None:
    probs = np.array([0.25] * 4 + [0.75] * 4)
    targets = np.array([1, 0, 0, 0, 1, 1, 1, 0], float)
    assert expected_calibration_error(probs, targets) == pytest.approx(0.0)


def test_few_positive_labels_warn_no_lower_than_the_fallback() -> None:
    scores = np.concatenate([np.linspace(0, 0.1, 1000), [0.3, 0.9]])
    targets = np.concatenate([np.zeros(1000), np.ones(2)])
    thresholds, info = safety_thresholds(scores, targets, np.full(len(scores), "one"), 0.02, 0.005, 0.9)
    assert thresholds["warn"] == 0.3
    assert info["warn_rule"] == "budget, p >= 0.3"


def test_smoothed_f1_threshold_is_seeded() -> None:
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.beta(2, 6, 300), rng.beta(6, 2, 40)])
    targets = np.concatenate([np.zeros(300), np.ones(40)])
    first = f1_threshold(scores, targets, lower=0.2)
    assert first == f1_threshold(scores, targets, lower=0.2)
    assert 0.2 <= first <= 0.9


def test_a_group_of_labels_acting_as_one_keeps_the_budget_together() -> None:
    # 200 negatives: 2% allows 4 in their domain and 1 on the pool with the 90% guarantee.
    # Each of two labels lets 3 through, 6 together. Every false positive can go at no cost
    # but b's top one, scored above one of b's positives that no other label catches.
    negatives = np.zeros((200, 2))
    negatives[:3, 0] = [0.9, 0.8, 0.7]
    negatives[3:6, 1] = [0.95, 0.6, 0.55]
    positives = np.array([[0.95, 0.0], [0.0, 0.9], [0.0, 0.97]])
    scores = np.vstack([negatives, positives])
    negative = np.arange(len(scores)) < 200
    floor = group_floor(scores, negative, np.full(len(scores), "x"), np.array([0.5, 0.5]), 0.02, 0.9)
    flagged = (scores >= floor.thresholds).any(1)
    assert floor.allowed == {"pool": 1, "x": 4} and floor.before == {"pool": 6, "x": 6}
    assert floor.after == {"pool": 1, "x": 1} and flagged[3] and flagged[~negative].all()
    assert 0.9 < floor.thresholds[0] <= 0.95 and 0.6 < floor.thresholds[1] <= 0.9


def test_a_group_within_its_budget_is_left_alone() -> None:
    scores = np.vstack([np.linspace(0, 0.6, 100)[:, None].repeat(2, 1), [[0.9, 0.9]]])
    negative = np.arange(101) < 100
    floor = group_floor(scores, negative, np.full(101, "x"), np.array([0.7, 0.8]), 0.02, 0.9)
    assert floor.thresholds.tolist() == [0.7, 0.8] and floor.before == floor.after
