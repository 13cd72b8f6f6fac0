"""Drift detection over closed windows: pure functions and one small state machine.

The stream worker keeps a `WindowStats` per label and window, calls
`evaluate_window` when a window closes, publishes the `DriftAlert`s, and
feeds a `WindowResult` to `SustainedDrift`, which returns a `RetrainRequest`
when a label keeps drifting. No I/O here.
"""

from feedwarden.drift.alerts import DriftAlert, Statistic, evaluate_window
from feedwarden.drift.multiple import benjamini_hochberg, holm
from feedwarden.drift.prevalence import Prevalence, em_prevalence, window_prevalence
from feedwarden.drift.significance import histogram_test, psi, rate_test
from feedwarden.drift.stats import DriftError, WindowStats, bin_scores, reference_from_scores
from feedwarden.drift.sustained import RetrainRequest, SustainedDrift, WindowResult

__all__ = [
    "DriftAlert",
    "DriftError",
    "Prevalence",
    "RetrainRequest",
    "Statistic",
    "SustainedDrift",
    "WindowResult",
    "WindowStats",
    "benjamini_hochberg",
    "bin_scores",
    "em_prevalence",
    "evaluate_window",
    "histogram_test",
    "holm",
    "psi",
    "rate_test",
    "reference_from_scores",
    "window_prevalence",
]
