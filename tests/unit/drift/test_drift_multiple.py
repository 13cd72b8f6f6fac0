"""Holm and Benjamini-Hochberg on known p-values, and their invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwarden.drift import benjamini_hochberg, holm
from feedwarden.drift.multiple import Correction, adjust, decision_levels

P = [0.01, 0.04, 0.03, 0.005]


def test_holm_on_known_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, 1*0.04 -> running max
    assert holm(P).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_bh_on_known_values():
    # sorted -> 4/1*0.005, 4/2*0.01, 4/3*0.03, 4/4*0.04 -> running min from the top
    assert benjamini_hochberg(P).tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_classic_textbook_example():
    # Benjamini & Hochberg (1995), 15 p-values: BH at 0.05 rejects 4, Holm (like Bonferroni) 3.
    p = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240,
         0.4262, 0.5719, 0.6528, 0.7590, 1.0000]
    assert int((benjamini_hochberg(p) <= 0.05).sum()) == 4
    assert int((holm(p) <= 0.05).sum()) == 3


def test_caps_at_one_and_handles_single_and_empty():
    assert holm([0.6, 0.7]).tolist() == [1.0, 1.0]
    assert holm([0.2]).tolist() == [0.2] and benjamini_hochberg([0.2]).tolist() == [0.2]
    assert holm([]).size == 0 and benjamini_hochberg([]).size == 0
    with pytest.raises(ValueError):
        adjust(P, "bonferroni")  # type: ignore[arg-type]


def test_decision_levels():
    holm_levels = [0.05 / 3, 0.05 / 1, 0.05 / 2, 0.05 / 4]
    assert decision_levels(P, 0.05, "holm").tolist() == pytest.approx(holm_levels)
    # BH at 0.05: 0.005<=.0125, 0.01<=.025, 0.03<=.0375, 0.04<=.05 -> all 4 rejected at level 0.05
    assert decision_levels(P, 0.05, "bh").tolist() == pytest.approx([0.05] * 4)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30), st.sampled_from([0.01, 0.05, 0.2]))
def test_invariants(p, alpha):
    p_arr = np.asarray(p)
    h, b = holm(p_arr), benjamini_hochberg(p_arr)
    assert np.all(h >= p_arr - 1e-15) and np.all(b >= p_arr - 1e-15) and np.all(b <= h + 1e-15)
    assert np.all(h <= 1) and np.all(b <= 1)
    order = np.argsort(p_arr, kind="stable")
    assert np.all(np.diff(h[order]) >= -1e-15) and np.all(np.diff(b[order]) >= -1e-15)
    methods: tuple[tuple[Correction, np.ndarray], ...] = (("holm", h), ("bh", b))
    for method, adjusted in methods:
        levels = decision_levels(p_arr, alpha, method)
        rejected = adjusted <= alpha
        assert np.all(p_arr[rejected] <= levels[rejected] * (1 + 1e-12))
    # Holm rejects exactly what the step-down procedure rejects.
    step = 0
    for k, i in enumerate(order):
        if p_arr[i] > alpha / (p_arr.size - k):
            break
        step += 1
    assert int((h <= alpha).sum()) == step
