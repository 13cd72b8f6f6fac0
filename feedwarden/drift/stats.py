"""Per-label window state: counts the stream worker can keep in a table and merge.

The state is deliberately a few integers per label (n, flagged, one count per
score bin, optionally one float sum per bin) so it fits a Faust table, merges
across partitions by addition, and holds everything the drift tests need.
Binning is one function (`bin_scores`) used both here and by
`reference_from_scores`, so window and reference histograms cannot disagree
about which bin a score on an edge belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from feedwarden.models.bundle import Reference

FloatArray = npt.NDArray[np.float64]

# The bins every new reference (training and recalibration) is measured on:
# 0.1 wide in the middle, then steps of about one unit of log-odds towards
# both ends. Equal 0.05 bins put 90-99.7 % of a rare label's calibrated
# probabilities in [0, 0.05), a bin that spans two orders of magnitude of
# posterior odds; the EM prevalence estimate (`prevalence`) sees each bin as
# one probability and then cannot tell a clean window from a shifted one
# (measured on the released model's scores: estimates of 1.0 for labels whose
# true share was 0.2 %). The histogram test merges sparse bins by expected
# count, so the extra end bins cost it nothing where they are empty.
REFERENCE_EDGES: tuple[float, ...] = (
    0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
    0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 1.0,
)


class DriftError(ValueError):
    """Window state and reference disagree, or the inputs are not usable."""


def bin_scores(scores: npt.ArrayLike, edges: Sequence[float]) -> npt.NDArray[np.int64]:
    """Count scores per bin; bins are [e_i, e_{i+1}) and the last one is closed.

    Scores outside [edges[0], edges[-1]] are clipped into the end bins rather
    than dropped, so the counts always sum to the number of posts (the tests
    compare n against the histogram total). NaN scores are an upstream bug and
    are refused.
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    return np.bincount(_bin_index(values, edges), minlength=len(edges) - 1).astype(np.int64)


def _bin_index(values: FloatArray, edges: Sequence[float]) -> npt.NDArray[np.intp]:
    edge = _check_edges(edges)
    if np.isnan(values).any():
        raise DriftError("scores contain NaN")
    return np.clip(np.searchsorted(edge, values, side="right") - 1, 0, edge.size - 2)


def _check_edges(edges: Sequence[float]) -> FloatArray:
    edge = np.asarray(edges, dtype=np.float64)
    if edge.ndim != 1 or edge.size < 2 or not np.all(np.diff(edge) > 0):
        raise DriftError("edges must be at least two strictly increasing numbers")
    return edge


def reference_from_scores(
    scores: npt.ArrayLike, threshold: float, edges: Sequence[float] = REFERENCE_EDGES
) -> Reference:
    """The `Reference` of a calibration set, binned exactly as windows are.

    The one way references are built (training pipeline and recalibration):
    the reference and the live windows share one binning convention, `n` is
    the calibration set's size (the drift tests treat the reference as a
    sample of that size) and `prior` its mean calibrated probability.
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0:
        raise DriftError("a reference needs at least one score")
    counts = bin_scores(values, edges)
    rate = float(np.count_nonzero(values >= threshold)) / values.size
    hist = tuple(float(c) / values.size for c in counts)
    return Reference(
        rate=rate, edges=tuple(float(e) for e in edges), hist=hist, n=int(values.size),
        prior=float(values.mean()),
    )


@dataclass(frozen=True)
class WindowStats:
    """One label's counts over one tumbling window.

    `flagged` counts posts with score >= the label's lowest acting threshold,
    the same threshold the reference `rate` was measured at. `hist` counts
    posts per reference bin. `score_sum`, if kept, is the sum of scores per
    bin; it lets the prevalence estimate use bin means instead of bin
    midpoints. Times are epoch seconds (what Faust windows carry).
    """

    label: str
    window_start: float
    window_end: float
    n: int
    flagged: int
    hist: tuple[int, ...]
    score_sum: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.n < 0 or not 0 <= self.flagged <= self.n:
            raise DriftError(f"{self.label}: need 0 <= flagged ({self.flagged}) <= n ({self.n})")
        if any(c < 0 for c in self.hist) or sum(self.hist) != self.n:
            raise DriftError(f"{self.label}: histogram counts must be >= 0 and sum to n ({self.n})")
        if self.score_sum is not None and len(self.score_sum) != len(self.hist):
            raise DriftError(f"{self.label}: score_sum and hist differ in length")
        if self.window_end < self.window_start:
            raise DriftError(f"{self.label}: window ends before it starts")

    @classmethod
    def from_scores(
        cls,
        label: str,
        scores: npt.ArrayLike,
        *,
        threshold: float,
        edges: Sequence[float],
        window_start: float,
        window_end: float,
    ) -> WindowStats:
        """State of a batch of scores (1-D, calibrated probabilities), vectorised."""
        values = np.asarray(scores, dtype=np.float64).ravel()
        index = _bin_index(values, edges)
        counts = np.bincount(index, minlength=len(edges) - 1)
        sums = np.bincount(index, weights=values, minlength=len(edges) - 1)
        return cls(
            label=label,
            window_start=float(window_start),
            window_end=float(window_end),
            n=int(values.size),
            flagged=int(np.count_nonzero(values >= threshold)),
            hist=tuple(int(c) for c in counts),
            score_sum=tuple(float(s) for s in sums),
        )

    def merge(self, other: WindowStats) -> WindowStats:
        """Add two states of one label (e.g. two partitions, or two micro-batches).

        Commutative and associative; the window widens to cover both. The bin
        sums survive only if both sides kept them.
        """
        if other.label != self.label:
            raise DriftError(f"cannot merge {self.label!r} with {other.label!r}")
        if len(other.hist) != len(self.hist):
            raise DriftError(f"{self.label}: cannot merge histograms with different bins")
        sums = None
        if self.score_sum is not None and other.score_sum is not None:
            sums = tuple(a + b for a, b in zip(self.score_sum, other.score_sum, strict=True))
        return WindowStats(
            label=self.label,
            window_start=min(self.window_start, other.window_start),
            window_end=max(self.window_end, other.window_end),
            n=self.n + other.n,
            flagged=self.flagged + other.flagged,
            hist=tuple(a + b for a, b in zip(self.hist, other.hist, strict=True)),
            score_sum=sums,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form for a table value."""
        return {
            "label": self.label,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "n": self.n,
            "flagged": self.flagged,
            "hist": list(self.hist),
            "score_sum": None if self.score_sum is None else list(self.score_sum),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowStats:
        sums = data.get("score_sum")
        return cls(
            label=str(data["label"]),
            window_start=float(data["window_start"]),
            window_end=float(data["window_end"]),
            n=int(data["n"]),
            flagged=int(data["flagged"]),
            hist=tuple(int(c) for c in data["hist"]),
            score_sum=None if sums is None else tuple(float(s) for s in sums),
        )


def check_against(stats: WindowStats, reference: Reference) -> None:
    """Refuse to compare a window with a reference binned differently."""
    _check_edges(reference.edges)
    if len(reference.edges) - 1 != len(stats.hist) or len(reference.hist) != len(stats.hist):
        raise DriftError(
            f"{stats.label}: window has {len(stats.hist)} bins, reference has {len(reference.hist)}"
        )
    if not 0.0 <= reference.rate <= 1.0 or reference.n < 0:
        raise DriftError(f"{stats.label}: reference rate or n out of range")
