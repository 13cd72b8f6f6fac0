"""Drift detection over closed windows: pure functions and one small state machine.

The stream worker keeps a `WindowStats` per label and window, calls
`evaluate_window` when a window closes, publishes the `DriftAlert`s, and
feeds a `WindowResult` to `SustainedDrift`, which returns a `RetrainRequest`
when a label keeps drifting. No I/O here. Sketch of the worker's side::

    stats = WindowStats.from_scores(label, batch_scores, threshold=lowest_acting_threshold,
                                    edges=manifest.reference[label].edges,
                                    window_start=start, window_end=end)
    table[label, window] = table[label, window].merge(stats)        # per micro-batch
    ...                                                              # on window close:
    alerts = evaluate_window(window_stats, manifest.reference)
    request = sustained.observe(WindowResult.of(window_stats, manifest.reference, alerts,
                                                model_version=manifest.version))

The reference is a sample too: the tests are two-sample, so their false-alarm
rate is at most alpha on average over calibration sets. For any one
reference it can be higher when the calibration set is no larger than a
window (measured: n_ref = n = 2000, one reference in twenty alarmed in 9 % of
windows); keep n_ref at ten or more windows' worth of posts.
"""

from feedwarden.drift.alerts import DriftAlert, Statistic, evaluate_window
from feedwarden.drift.multiple import benjamini_hochberg, holm
from feedwarden.drift.prevalence import Prevalence, em_prevalence, window_prevalence
from feedwarden.drift.significance import histogram_test, psi, rate_test
from feedwarden.drift.stats import REFERENCE_EDGES, DriftError, WindowStats, bin_scores, reference_from_scores
from feedwarden.drift.sustained import RetrainRequest, SustainedDrift, WindowResult

__all__ = [
    "DriftAlert",
    "DriftError",
    "Prevalence",
    "REFERENCE_EDGES",
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
