"""The int8 parity gate's test of extra errors (McNemar, exact, one-sided)."""

from __future__ import annotations

import numpy as np
import pytest

from feedwarden.training.pipeline import mcnemar_worse

TRUTH = np.array([True, True, True, True, True, False, False, False])


def decisions(*flags: int) -> np.ndarray:
    return np.array(flags, dtype=bool)


def test_three_lost_none_gained_is_not_enough_evidence() -> None:
    before = TRUTH.copy()
    after = decisions(0, 0, 0, 1, 1, 0, 0, 0)
    assert mcnemar_worse(TRUTH, before, after) == {"lost": 3, "gained": 0, "p": pytest.approx(1 / 8)}


def test_five_lost_none_gained_is_significant_at_five_percent() -> None:
    before = TRUTH.copy()
    after = decisions(0, 0, 0, 0, 0, 0, 0, 0)
    result = mcnemar_worse(TRUTH, before, after)
    assert (result["lost"], result["gained"]) == (5, 0)
    assert result["p"] == pytest.approx(1 / 32)


def test_gains_offset_losses() -> None:
    before = decisions(1, 1, 1, 1, 0, 0, 0, 0)  # misses one positive
    after = decisions(0, 0, 1, 1, 1, 1, 0, 0)  # loses two positives and a negative, finds the missed one
    # P(Bin(4, 1/2) >= 3) = 5/16
    assert mcnemar_worse(TRUTH, before, after) == {"lost": 3, "gained": 1, "p": pytest.approx(5 / 16)}


def test_no_lost_decision_means_no_evidence() -> None:
    assert mcnemar_worse(TRUTH, decisions(0, 0, 0, 0, 0, 0, 0, 0), TRUTH.copy())["p"] == 1.0
