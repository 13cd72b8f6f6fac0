"""Sustained drift: k drifting windows among a label's last m tested ones -> a retrain request.

One alerting window is expected now and then (alpha per window, by design);
k of m is not: under no drift it happens with probability about
C(m, k) * alpha**k per window (1e-5 for 3 of 5 at alpha = 0.01), while a
real shift that is detected half the time trips it within a few windows.
Only *tested* windows (enough posts) count towards m, so a quiet night
neither hides nor dilutes the evidence. The machine is pure: time is the
windows' own time, so replaying a stream replays the requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from feedwarden.drift.alerts import DEFAULT_MIN_POSTS, DriftAlert
from feedwarden.drift.stats import DriftError, WindowStats
from feedwarden.models.bundle import Reference
from feedwarden.times import format_epoch


@dataclass(frozen=True)
class WindowResult:
    """What one closed window said: which labels were tested, and the alerts."""

    window_start: float
    window_end: float
    model_version: str
    tested: frozenset[str]
    alerts: tuple[DriftAlert, ...] = ()

    @classmethod
    def of(
        cls,
        stats_by_label: Mapping[str, WindowStats],
        references: Mapping[str, Reference],
        alerts: Iterable[DriftAlert],
        *,
        model_version: str,
        min_posts: int = DEFAULT_MIN_POSTS,
    ) -> WindowResult:
        """The result of `evaluate_window` on these stats (pass the same `min_posts`)."""
        if not stats_by_label:
            raise DriftError("a window result needs at least one label's stats")
        windows = list(stats_by_label.values())
        return cls(
            window_start=min(s.window_start for s in windows),
            window_end=max(s.window_end for s in windows),
            model_version=model_version,
            tested=frozenset(k for k, s in stats_by_label.items() if k in references and s.n >= min_posts),
            alerts=tuple(alerts),
        )


@dataclass(frozen=True)
class RetrainRequest:
    """The retrain.requests payload. `requested_at` is the triggering window's end."""

    labels: tuple[str, ...]
    windows: tuple[tuple[float, float], ...]
    evidence: tuple[DriftAlert, ...]
    requested_at: float
    model_version: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "windows": [{"start": format_epoch(s), "end": format_epoch(e)} for s, e in self.windows],
            "evidence": [alert.to_dict() for alert in self.evidence],
            "requested_at": format_epoch(self.requested_at),
            "model_version": self.model_version,
        }


@dataclass
class _Seen:
    start: float
    end: float
    alerts: tuple[DriftAlert, ...]


@dataclass
class SustainedDrift:
    """Per-label k-of-m detector with a cooldown.

    A label triggers when the current window alerts for it and at least `k`
    of its last `m` tested windows did. After a request, that label is not
    requested again until `cooldown_seconds` of window time have passed, or
    the model version changes. A new version also clears all history: the old
    alerts were measured against the old bundle's references. Windows that
    do not start after the last one seen (replays after a restart) are ignored.
    """

    k: int = 3
    m: int = 5
    cooldown_seconds: float = 6 * 3600.0
    _version: str | None = field(default=None, init=False)
    _last_start: float | None = field(default=None, init=False)
    _history: dict[str, deque[_Seen]] = field(default_factory=dict, init=False)
    _requested: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.m:
            raise DriftError(f"need 1 <= k ({self.k}) <= m ({self.m})")

    def observe(self, result: WindowResult) -> RetrainRequest | None:
        if result.model_version != self._version:
            self._version, self._last_start = result.model_version, None
            self._history.clear()
            self._requested.clear()
        if self._last_start is not None and result.window_start <= self._last_start:
            return None
        self._last_start = result.window_start
        due = [label for label in sorted(self._record(result)) if self._due(label, result.window_end)]
        if not due:
            return None
        for label in due:
            self._requested[label] = result.window_end
        return self._request(due, result)

    def _record(self, result: WindowResult) -> list[str]:
        """Append this window to each tested label's history; return the labels that alerted."""
        by_label: dict[str, list[DriftAlert]] = {}
        for alert in result.alerts:
            by_label.setdefault(alert.label, []).append(alert)
        for label in result.tested | by_label.keys():
            seen = _Seen(result.window_start, result.window_end, tuple(by_label.get(label, ())))
            self._history.setdefault(label, deque(maxlen=self.m)).append(seen)
        return list(by_label)

    def _due(self, label: str, now: float) -> bool:
        drifting = sum(1 for seen in self._history[label] if seen.alerts)
        last = self._requested.get(label)
        return drifting >= self.k and (last is None or now - last >= self.cooldown_seconds)

    def _request(self, labels: list[str], result: WindowResult) -> RetrainRequest:
        seen = [s for label in labels for s in self._history[label] if s.alerts]
        windows = sorted({(s.start, s.end) for s in seen})
        evidence = sorted(
            (a for s in seen for a in s.alerts), key=lambda a: (a.window_start, a.label, a.statistic.name)
        )
        return RetrainRequest(
            labels=tuple(labels),
            windows=tuple(windows),
            evidence=tuple(evidence),
            requested_at=result.window_end,
            model_version=result.model_version,
        )
