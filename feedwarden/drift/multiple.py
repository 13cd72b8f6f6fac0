"""Multiple-testing correction across the labels and tests of one window.

Default: Holm. Each window tests two hypotheses per label, and an alert is a
claim about one specific label that costs someone a look (or a retrain), so
we bound the chance of *any* false alert per window (family-wise error),
not the share of false ones. Holm does that under arbitrary dependence; our
tests are dependent (labels share posts and co-occur; a label's rate and
histogram tests read the same scores), which is exactly what
Benjamini-Hochberg's independence/PRDS condition does not promise. Holm
costs little power at ~2 × labels hypotheses, and persistent drift gets a
second chance every window (see `SustainedDrift`). BH is offered for
deployments with many labels that prefer false-discovery-rate control.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from feedwarden.drift.stats import FloatArray

Correction = Literal["holm", "bh"]


def holm(p_values: npt.ArrayLike) -> FloatArray:
    """Holm step-down adjusted p-values: max over j <= k of (m - j + 1) * p_(j), capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def benjamini_hochberg(p_values: npt.ArrayLike) -> FloatArray:
    """BH step-up adjusted p-values: min over j >= k of m / j * p_(j), capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, m / np.arange(1, m + 1) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return adjusted


def adjust(p_values: npt.ArrayLike, method: Correction = "holm") -> FloatArray:
    if method == "holm":
        return holm(p_values)
    if method == "bh":
        return benjamini_hochberg(p_values)
    raise ValueError(f"unknown correction {method!r}")


def decision_levels(p_values: npt.ArrayLike, alpha: float, method: Correction = "holm") -> FloatArray:
    """The raw p-value level each hypothesis was in effect judged at.

    Holm judges the k-th smallest at alpha / (m - k + 1); BH judges every
    rejected one at alpha * k* / m, k* the number rejected. For a rejected
    hypothesis, raw p <= level, so the critical value at this level is the
    one its statistic exceeded; it is reported with each alert.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    levels = np.empty(m)
    if method == "holm":
        levels[order] = alpha / (m - np.arange(m))
        return levels
    passed = np.nonzero(p[order] <= alpha * np.arange(1, m + 1) / m)[0]
    rejected = int(passed[-1]) + 1 if passed.size else 1
    levels[:] = alpha * rejected / m
    return levels
