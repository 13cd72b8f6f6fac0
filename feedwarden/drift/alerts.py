"""`evaluate_window`: a closed window's per-label state in, drift alerts out.

Per label with at least `min_posts` posts and a reference, two hypotheses
are tested (flagged rate, score histogram; see `significance`); all of a
window's p-values are corrected together (see `multiple`), and each rejected
hypothesis becomes one `DriftAlert`. Below `min_posts` nothing is tested:
a window that small cannot tell a real shift from noise at useful power,
and an untested label does not spend any of the window's error budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from feedwarden.drift.multiple import Correction, adjust, decision_levels
from feedwarden.drift.prevalence import window_prevalence
from feedwarden.drift.significance import Evidence, histogram_test, psi, rate_test
from feedwarden.drift.stats import DriftError, WindowStats, check_against
from feedwarden.models.bundle import Reference
from feedwarden.times import format_epoch

DEFAULT_ALPHA = 0.01
DEFAULT_MIN_POSTS = 200
# Severity is by effect size, once significance says the effect is real:
# a doubled or halved flagged rate, or PSI past the customary "major shift".
CRITICAL_RATE_RATIO = 2.0
CRITICAL_PSI = 0.25
WARNING, CRITICAL = "warning", "critical"


@dataclass(frozen=True)
class Statistic:
    """The test behind an alert. `value >= critical_value` is the rejection."""

    name: str
    value: float
    critical_value: float
    p_value: float
    adjusted_p_value: float
    df: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _finite(self.value),
            "critical_value": _finite(self.critical_value),
            "p_value": self.p_value,
            "adjusted_p_value": self.adjusted_p_value,
            "df": self.df,
        }


@dataclass(frozen=True)
class DriftAlert:
    """One rejected hypothesis for one label in one window (the drift.alerts contract)."""

    label: str
    window_start: float
    window_end: float
    n: int
    observed_rate: float
    reference_rate: float
    statistic: Statistic
    severity: str
    estimated_prevalence: float
    psi: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form; window bounds as RFC 3339 UTC, like the other contracts' times."""
        return {
            "label": self.label,
            "window_start": format_epoch(self.window_start),
            "window_end": format_epoch(self.window_end),
            "n": self.n,
            "observed_rate": self.observed_rate,
            "reference_rate": self.reference_rate,
            "statistic": self.statistic.to_dict(),
            "severity": self.severity,
            "estimated_prevalence": self.estimated_prevalence,
            "psi": self.psi,
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def evaluate_window(
    stats_by_label: Mapping[str, WindowStats],
    references: Mapping[str, Reference],
    *,
    alpha: float = DEFAULT_ALPHA,
    min_posts: int = DEFAULT_MIN_POSTS,
    correction: Correction = "holm",
) -> list[DriftAlert]:
    """Test every label of a closed window; return the alerts, ordered by label then test.

    Labels without a reference (e.g. just added by a new bundle) are skipped;
    a window binned differently from its reference raises `DriftError`.
    Each alert carries the window's EM prevalence estimate
    (`prevalence.window_prevalence`).
    """
    if not 0.0 < alpha < 1.0:
        raise DriftError(f"alpha {alpha} must be in (0, 1)")
    tested = [
        (stats, references[label], test)
        for label, stats in sorted(stats_by_label.items())
        if label in references and stats.n >= min_posts
        for test in _tests(stats, references[label])
        if test.tested
    ]
    if not tested:
        return []
    p_values = [test.p_value for _, _, test in tested]
    adjusted = adjust(p_values, correction)
    levels = decision_levels(p_values, alpha, correction)
    return [
        _alert(stats, ref, test, float(adj), float(level))
        for (stats, ref, test), adj, level in zip(tested, adjusted, levels, strict=True)
        if adj <= alpha
    ]


def _tests(stats: WindowStats, reference: Reference) -> tuple[Evidence, Evidence]:
    check_against(stats, reference)
    return rate_test(stats.flagged, stats.n, reference), histogram_test(stats.hist, reference)


def _alert(stats: WindowStats, ref: Reference, test: Evidence, adjusted: float, level: float) -> DriftAlert:
    statistic = Statistic(
        name=test.name,
        value=test.statistic,
        critical_value=test.critical_value(level),
        p_value=test.p_value,
        adjusted_p_value=adjusted,
        df=test.df,
    )
    return DriftAlert(
        label=stats.label,
        window_start=stats.window_start,
        window_end=stats.window_end,
        n=stats.n,
        observed_rate=stats.flagged / stats.n,
        reference_rate=ref.rate,
        statistic=statistic,
        severity=_severity(test),
        estimated_prevalence=window_prevalence(stats, ref).value,
        psi=psi(stats.hist, ref.hist),
    )


def _severity(test: Evidence) -> str:
    if test.name.endswith("_rate"):
        large = test.effect >= CRITICAL_RATE_RATIO or test.effect <= 1.0 / CRITICAL_RATE_RATIO
    else:
        large = test.effect >= CRITICAL_PSI
    return CRITICAL if large else WARNING
