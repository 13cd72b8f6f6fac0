"""Drift on the stream: per-batch window stats in, closed-window verdicts out.

Pure, clock-injected logic; `stream.loop` wires it to Faust. The path of a
batch's numbers:

1. `batch_stats`: the moderate agent's batch hook turns the batch's scores
   into one `WindowStats` per monitored label (flagged at the label's lowest
   acting threshold, histogram over the reference's edges, score sums) for
   the tumbling window the batch was decided in, and sends each to the
   drift-stats topic. Windows are by decision (processing) time, not post
   time: a window then closes by the wall clock, so "closed" is exact and a
   backlog replay cannot add posts to a window already evaluated; catching
   up only puts more posts into the current windows, which does not bias a
   rate or a histogram.
2. A per-event agent merges each message into a Faust tumbling-window table
   keyed by bundle version, one cell (label -> stats) per version and window:
   one table write and one changelog record per batch, not one per label.
   The version is the key because references belong to one version: after a
   hot swap, the old version's windows are simply never evaluated, and a
   window that straddles the swap is evaluated on the new version's posts only.
3. `DriftMonitor.due` picks the windows that closed (end + grace < now) and
   were not evaluated yet; `DriftMonitor.evaluate` tests all labels of one
   window together (Holm correction across labels and tests) and feeds
   `SustainedDrift`, which may return a retrain request.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from feedwarden.drift import (
    DriftAlert,
    RetrainRequest,
    SustainedDrift,
    WindowResult,
    WindowStats,
    evaluate_window,
    histogram_test,
    rate_test,
)
from feedwarden.models.bundle import Reference
from feedwarden.stream.topology import BatchReport, Scorer

log = logging.getLogger(__name__)

# Stats are sent at the end of a batch and merged within milliseconds; the
# grace absorbs that plus a consumer hiccup before a window counts as closed.
GRACE_SECONDS = 5.0
# Windows older than this are neither evaluated nor remembered as evaluated,
# and the table may drop them: memory stays bounded without trusting expiry.
MIN_HORIZON_SECONDS = 600.0
HORIZON_WINDOWS = 10


@dataclass(frozen=True)
class DriftPlan:
    """What one serving bundle is monitored against: per label, its lowest acting
    threshold (the one its reference rate was measured at) and its reference.

    Labels without a policy rule or without a reference are not monitored.
    """

    version: str
    thresholds: Mapping[str, float]
    references: Mapping[str, Reference]

    @classmethod
    def of(cls, scorer: Scorer) -> DriftPlan:
        manifest = scorer.engine.bundle.manifest
        rules = scorer.policy.rules
        labels = [label for label in manifest.labels if label in rules and label in manifest.reference]
        return cls(
            manifest.version,
            {label: rules[label].lowest_threshold for label in labels},
            {label: manifest.reference[label] for label in labels},
        )


def horizon(window_s: float) -> float:
    return max(MIN_HORIZON_SECONDS, HORIZON_WINDOWS * window_s)


def window_start(at: float, window_s: float) -> float:
    """Start of the tumbling window holding `at`, on the same grid as Faust's windows."""
    return math.floor(at / window_s) * window_s


def batch_stats(report: BatchReport, plan: DriftPlan, *, at: float, window_s: float) -> list[WindowStats]:
    """One `WindowStats` per monitored label for a batch decided at `at` (one row per decided post)."""
    if not report.decided or not plan.thresholds:
        return []
    start = window_start(at, window_s)
    column = {label: index for index, label in enumerate(report.labels)}
    return [
        WindowStats.from_scores(
            label, report.scores[:, column[label]], threshold=threshold,
            edges=plan.references[label].edges, window_start=start, window_end=start + window_s,
        )
        for label, threshold in plan.thresholds.items()
        if label in column
    ]


@dataclass(frozen=True)
class Entry:
    """One table cell: a label's merged stats for one window under one bundle version."""

    version: str
    label: str
    stats: WindowStats


@dataclass(frozen=True)
class Verdict:
    """A closed window's evaluation: what to publish and what to export."""

    window_start: float
    window_end: float
    stats: Mapping[str, WindowStats]
    alerts: tuple[DriftAlert, ...]
    # (label, test name) -> statistic / critical value; > 1 means that test rejected.
    ratios: Mapping[tuple[str, str], float]
    request: RetrainRequest | None


@dataclass
class DriftMonitor:
    """Which windows to evaluate, and their evaluation, for the serving bundle's `plan`.

    Evaluated windows are remembered in memory by (version, start). A window
    that ended before this process started is never evaluated: the previous
    process either evaluated it already (re-publishing would duplicate its
    alerts) or died within the grace period, and one lost window is the
    cheaper error. The table keeps the stats across restarts, so a window
    open across a restart is evaluated whole.
    """

    plan: DriftPlan
    window_s: float
    started_at: float
    min_posts: int = 200
    alpha: float = 0.01
    sustained: SustainedDrift = field(default_factory=SustainedDrift)
    grace_s: float = GRACE_SECONDS
    _evaluated: set[tuple[str, float]] = field(default_factory=set, init=False)

    @property
    def horizon_s(self) -> float:
        return horizon(self.window_s)

    def reset(self, plan: DriftPlan) -> None:
        """A new serving bundle: new references, so the k-of-m history starts over."""
        self.plan = plan
        self.sustained = SustainedDrift(self.sustained.k, self.sustained.m, self.sustained.cooldown_seconds)

    def is_evaluated(self, version: str, start: float) -> bool:
        return (version, start) in self._evaluated

    def due(self, entries: Iterable[Entry], now: float) -> dict[float, dict[str, WindowStats]]:
        """Closed, not yet evaluated windows of the serving version: start -> label -> stats."""
        windows: dict[float, dict[str, WindowStats]] = {}
        for entry in entries:
            stats = entry.stats
            closed = stats.window_end + self.grace_s < now
            if entry.version != self.plan.version or not closed or entry.label not in self.plan.references:
                continue
            if stats.window_end <= max(self.started_at, now - self.horizon_s):
                continue
            if not self.is_evaluated(entry.version, stats.window_start):
                windows.setdefault(stats.window_start, {})[entry.label] = stats
        self._evaluated = {key for key in self._evaluated if key[1] >= now - 2 * self.horizon_s}
        return dict(sorted(windows.items()))

    def evaluate(self, stats: Mapping[str, WindowStats]) -> Verdict:
        """Test every label of one closed window together; mark the window evaluated."""
        first = next(iter(stats.values()))
        self._evaluated.add((self.plan.version, first.window_start))
        references = self.plan.references
        alerts = evaluate_window(stats, references, alpha=self.alpha, min_posts=self.min_posts)
        result = WindowResult.of(
            stats, references, alerts, model_version=self.plan.version, min_posts=self.min_posts
        )
        return Verdict(
            first.window_start, first.window_end, dict(stats), tuple(alerts),
            self._ratios(stats, result.tested, alerts), self.sustained.observe(result),
        )

    def _ratios(
        self, stats: Mapping[str, WindowStats], tested: frozenset[str], alerts: Iterable[DriftAlert]
    ) -> dict[tuple[str, str], float]:
        """Statistic over critical value per tested label and test, for the gauges.

        An alert carries its Holm critical value. A test that did not reject is
        shown against the Bonferroni level alpha / tests, Holm's strictest
        step: a non-rejected test is below it too, so no gauge crosses 1
        without an alert.
        """
        ratios = {
            (a.label, a.statistic.name): _ratio(a.statistic.value, a.statistic.critical_value) for a in alerts
        }
        evidence = [
            (label, test)
            for label in sorted(tested)
            for test in (rate_test(stats[label].flagged, stats[label].n, self.plan.references[label]),
                         histogram_test(stats[label].hist, self.plan.references[label]))
            if test.tested
        ]
        level = self.alpha / max(1, len(evidence))
        for label, test in evidence:
            ratios.setdefault((label, test.name), _ratio(test.statistic, test.critical_value(level)))
        return ratios

def _ratio(value: float, critical: float) -> float:
    return value / critical if critical > 0 and math.isfinite(critical) else 0.0
