"""Policy: severity order, explanations, threshold edges, validation, batch agreement."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from feedwarden.policy import ACTIONS, Policy, PolicyError, Rule
from feedwarden.policy.rules import SEVERITY

LABELS = ("scam", "spam", "promo", "hate", "topic_crypto")
POLICY = Policy.from_dict(
    {
        "version": "p-test",
        "rules": {
            "scam": {"head": "safety", "thresholds": {"hide": 0.9, "warn": 0.7, "badge": 0.5}},
            "spam": {"head": "safety", "thresholds": {"warn": 0.8, "badge": 0.4}},
            "promo": {"head": "safety", "thresholds": {"badge": 0.6}},
            "hate": {"head": "safety", "thresholds": {"hide": 0.95}, "tier": "critical", "fpr_budget": 0.1},
            "topic_crypto": {"head": "topic", "thresholds": {"badge": 0.5}, "tier": "informational"},
        },
    }
)


def scores(**values: float) -> dict[str, float]:
    return {label: values.get(label, 0.0) for label in LABELS}


@pytest.mark.parametrize(
    ("values", "action"),
    [
        ({}, "allow"),
        ({"promo": 0.6}, "badge"),
        ({"promo": 0.6, "spam": 0.8}, "warn"),
        ({"promo": 0.6, "spam": 0.8, "scam": 0.9}, "hide"),
        ({"spam": 0.99, "scam": 0.95}, "hide"),
        ({"topic_crypto": 0.99}, "badge"),
        ({"hate": 0.949}, "allow"),
        ({"hate": 0.95, "promo": 1.0}, "hide"),
    ],
)
def test_most_severe_label_sets_the_action(values: dict[str, float], action: str) -> None:
    assert POLICY.decide(scores(**values)).action == action


def test_every_combination_of_fired_actions_takes_the_maximum() -> None:
    # For each label, a score that fires a known action (or none).
    levels = {
        "scam": {"allow": 0.1, "badge": 0.5, "warn": 0.7, "hide": 0.9},
        "spam": {"allow": 0.1, "badge": 0.4, "warn": 0.8},
        "promo": {"allow": 0.1, "badge": 0.6},
    }
    for combo in itertools.product(*(levels[label].items() for label in levels)):
        values = {label: score for label, (_, score) in zip(levels, combo, strict=True)}
        expected = max((fired for fired, _ in combo), key=SEVERITY.__getitem__)
        assert POLICY.decide(scores(**values)).action == expected, values


def test_every_flagged_label_is_explained() -> None:
    decision = POLICY.decide(scores(scam=0.75, spam=0.5, promo=0.7, topic_crypto=0.2))
    explained = {(h.label, h.action, h.threshold, h.head) for h in decision.labels}
    assert explained == {
        ("scam", "warn", 0.7, "safety"),
        ("spam", "badge", 0.4, "safety"),
        ("promo", "badge", 0.6, "safety"),
    }
    assert decision.labels[0].action == decision.action  # most severe first
    assert all(h.score >= h.threshold for h in decision.labels)


@pytest.mark.parametrize(
    ("score", "action"),
    [(0.4999, None), (0.5, "badge"), (0.6999, "badge"), (0.7, "warn"), (0.9, "hide"), (1.0, "hide")],
)
def test_threshold_is_inclusive(score: float, action: str | None) -> None:
    fired = POLICY.rules["scam"].action_for(score)
    assert (fired[0] if fired else None) == action


def test_labels_without_rules_and_rules_without_scores_are_ignored() -> None:
    decision = POLICY.decide({"unknown_label": 1.0, "promo": 0.7})
    assert [h.label for h in decision.labels] == ["promo"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"head": "safety", "thresholds": {}}, "no thresholds"),
        ({"head": "safety", "thresholds": {"allow": 0.5}}, "unknown action"),
        ({"head": "safety", "thresholds": {"ban": 0.5}}, "unknown action"),
        ({"head": "safety", "thresholds": {"hide": 1.5}}, "not in"),
        ({"head": "safety", "thresholds": {"hide": -0.1}}, "not in"),
        ({"head": "safety", "thresholds": {"hide": 0.5, "warn": 0.7}}, "below"),
        ({"head": "safety", "thresholds": {"hide": 0.9}, "tier": "vip"}, "unknown tier"),
        ({"head": "safety", "thresholds": {"hide": 0.9}, "fpr_budget": 1.0}, "fpr_budget"),
        ({"thresholds": {"hide": 0.9}}, "malformed"),
        ({"head": "safety", "thresholds": {"hide": "high"}}, "malformed"),
        ({"head": "safety", "thresholds": ["hide"]}, "malformed"),
    ],
)
def test_invalid_rules_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_dict({"version": "x", "rules": {"scam": rule}})


def test_policy_without_version_or_rules_is_refused() -> None:
    with pytest.raises(PolicyError):
        Policy.from_dict({"rules": {}})
    with pytest.raises(PolicyError):
        Policy.from_dict({"version": "1"})


def test_policy_file_errors(tmp_path: Any) -> None:
    path = tmp_path / "policy.json"
    path.write_text("{not json")
    with pytest.raises(PolicyError, match="not JSON"):
        Policy.from_file(path)


def test_check_labels_refuses_unknown_label_or_wrong_head() -> None:
    heads = {"safety": ("scam", "spam", "promo", "hate"), "topic": ("topic_crypto",)}
    POLICY.check_labels(heads)
    with pytest.raises(PolicyError, match="no head"):
        POLICY.check_labels({"safety": ("scam",), "topic": ()})
    with pytest.raises(PolicyError, match="topic"):
        POLICY.check_labels({"safety": ("spam", "promo", "hate", "topic_crypto"), "topic": ("scam",)})


def test_round_trip_through_dict() -> None:
    assert Policy.from_dict(POLICY.to_dict()) == POLICY


def test_rule_rejects_severe_threshold_below_mild() -> None:
    with pytest.raises(PolicyError):
        Rule("x", "safety", {"warn": 0.6, "badge": 0.7})


def test_decide_batch_refuses_mismatched_shape() -> None:
    with pytest.raises(ValueError, match="do not match"):
        POLICY.decide_batch(LABELS, np.zeros((2, 3)))


# Scores near the thresholds are where off-by-one comparisons would show.
EDGE_SCORES = st.one_of(
    st.floats(0.0, 1.0, allow_nan=False),
    st.sampled_from([0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, np.nextafter(0.9, 0), np.nextafter(0.5, 1)]),
)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(0, 12), st.just(len(LABELS))), elements=EDGE_SCORES))
def test_decide_batch_agrees_with_decide(probs: np.ndarray) -> None:
    batch = POLICY.decide_batch(LABELS, probs)
    single = [POLICY.decide(dict(zip(LABELS, row.tolist(), strict=True))) for row in probs]
    assert batch == single
    for decision in batch:
        assert decision.action in ACTIONS
        assert decision.action == max(
            (h.action for h in decision.labels), key=SEVERITY.__getitem__, default="allow"
        )


def test_ambiguous_rows_are_near_a_threshold_or_a_reported_rounding_midpoint() -> None:
    rows = [
        scores(scam=0.3),  # clear of everything
        scores(scam=0.7 - 1e-6),  # just under warn
        scores(spam=0.4 + 1e-6),  # just over badge
        scores(scam=0.8125),  # fires, and 0.8125 is a 3-decimal rounding midpoint
        scores(scam=0.3125),  # a midpoint, but scam does not fire: not reported, not ambiguous
        scores(topic_crypto=0.8126),  # fires, clear of the midpoint
    ]
    probs = np.array([[row[label] for label in LABELS] for row in rows])
    assert POLICY.ambiguous(LABELS, probs).tolist() == [False, True, True, True, False, False]


def test_scores_are_reported_to_three_decimals() -> None:
    (hit,) = POLICY.decide(scores(promo=0.7123456)).labels
    assert hit.score == 0.712
