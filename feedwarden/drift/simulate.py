"""Synthetic streams from references: false-alarm rate and detection delay.

Windows are drawn straight from a reference's histogram, so a run needs
only the manifest's references (or the built-in demo set) and takes
seconds. A reference is turned into cells (bin, flagged or not): bins above
the threshold are flagged, bins below are not, and the bin the threshold
falls in is split so the flagged share equals the reference rate. Shifts
act on the cells:

- ``rate``: flagged cells × factor, unflagged cells scaled to keep the total
  (label prevalence went up, the model did not change);
- ``tilt``: unflagged mass tilted towards higher-score bins, flagged share
  unchanged (borderline content grew; only the histogram test can see it).

`ScoreStream` does the same from real per-post scores instead (a model's
calibrated probabilities on a labelled set): windows are posts resampled
whole, and a shift replaces a share of each window's posts with posts from
a chosen pool (e.g. the scam-bucket posts). `stream_alarms` and
`stream_delay` run any such window source through the monitor.

Run: ``python -m feedwarden.drift.simulate [--windows 20000] [--n 1000] ...``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from feedwarden.drift.alerts import evaluate_window
from feedwarden.drift.multiple import Correction
from feedwarden.drift.stats import FloatArray, WindowStats
from feedwarden.drift.sustained import SustainedDrift, WindowResult
from feedwarden.models.bundle import Reference


@dataclass(frozen=True)
class Cells:
    """A label's joint distribution over (bin, flagged): `flagged[b]`, `clear[b]` sum to 1."""

    flagged: FloatArray
    clear: FloatArray

    @classmethod
    def of(cls, reference: Reference) -> Cells:
        hist = np.asarray(reference.hist, dtype=np.float64)
        hist = hist / hist.sum()
        above = np.cumsum(hist[::-1])[::-1]  # mass in bin b and higher
        flagged = np.clip(reference.rate - np.append(above[1:], 0.0), 0.0, hist)
        return cls(flagged, hist - flagged)

    def shifted(self, kind: str, amount: float) -> Cells:
        if kind == "rate":
            rate = self.flagged.sum()
            if amount * rate >= 1.0:
                raise ValueError(f"rate × {amount} exceeds 1")
            return Cells(self.flagged * amount, self.clear * (1 - amount * rate) / (1 - rate))
        if kind == "tilt":
            tilted = self.clear * np.exp(amount * np.arange(self.clear.size))
            return Cells(self.flagged, tilted * self.clear.sum() / tilted.sum())
        raise ValueError(f"unknown shift {kind!r}")

    def sample(self, rng: np.random.Generator, n: int, size: int) -> tuple[npt.NDArray[np.int64], ...]:
        """`size` windows of `n` posts: histogram counts (size × bins) and flagged counts."""
        k = self.flagged.size
        draws = rng.multinomial(n, np.concatenate([self.flagged, self.clear]), size=size)
        return draws[:, :k] + draws[:, k:], draws[:, :k].sum(axis=1)

    def reference(self, rng: np.random.Generator, n_ref: int, edges: Sequence[float]) -> Reference:
        """A calibration set of `n_ref` posts drawn from these cells, as a reference."""
        hist, flagged = self.sample(rng, n_ref, 1)
        return Reference(
            float(flagged[0]) / n_ref, tuple(edges), tuple(float(c) / n_ref for c in hist[0]), n_ref
        )


def demo_references(n_ref: int = 20_000, bins: int = 10) -> dict[str, Reference]:
    """Five labels, prevalence 0.5 %–20 %, skewed histograms like a moderation head's.

    Each histogram mixes negatives (mass decaying from score 0) and positives
    (mass rising towards 1); the threshold is 0.5, so the rate is the mass of
    the upper half of the bins.
    """
    edges = tuple(float(e) for e in np.linspace(0.0, 1.0, bins + 1))
    index = np.arange(bins)
    negative = 0.35**index / (0.35**index).sum()
    positive = 0.6 ** index[::-1] / (0.6 ** index[::-1]).sum()
    refs = {}
    for label, prevalence in [
        ("spam", 0.20), ("harassment", 0.05), ("hate", 0.02), ("self_harm", 0.01), ("violence", 0.005)
    ]:
        hist = (1 - prevalence) * negative + prevalence * positive
        rate = float(hist[bins // 2 :].sum())
        refs[label] = Reference(rate, edges, tuple(float(h) for h in hist), n_ref)
    return refs


@dataclass(frozen=True)
class BinormalLabel:
    """Raw scores with known truth, for the prevalence checks.

    Latent score s ~ N(0, 1) for negatives and N(separation, 1) for
    positives; the probability reported is the exact posterior under the
    calibration `prior`, so it is perfectly calibrated there, and a sample
    drawn at another prevalence is pure label shift.
    """

    prior: float
    separation: float = 2.5

    def sample(self, rng: np.random.Generator, n: int, prevalence: float | None = None) -> FloatArray:
        positive = rng.random(n) < (self.prior if prevalence is None else prevalence)
        latent = rng.standard_normal(n) + self.separation * positive
        log_odds = self.separation * latent - self.separation**2 / 2 + np.log(self.prior / (1 - self.prior))
        return np.asarray(1.0 / (1.0 + np.exp(-log_odds)))


Progress = Callable[[str], None]
Window = dict[str, WindowStats]


@dataclass(frozen=True)
class Delay:
    """Windows after a shift until the first alert, and until a retrain request (None: never)."""

    alert: list[int | None]
    retrain: list[int | None]


@dataclass(frozen=True)
class ScoreStream:
    """Windows resampled from real scores: `scores[post, j]` is label `labels[j]`'s probability.

    A window draws `n` posts with replacement, each post whole (its labels'
    scores stay together, so labels co-occur as they did), and keeps what
    the worker keeps: per label the count flagged at `thresholds[label]`, the
    histogram on `edges[label]` and the per-bin score sums. Posts come from
    the rows in `base` (all rows if None); with `share` > 0 that share of
    them (rounded) comes from the rows in `pool` instead.
    """

    labels: tuple[str, ...]
    scores: FloatArray
    thresholds: Mapping[str, float]
    edges: Mapping[str, Sequence[float]]
    base: npt.NDArray[np.intp] | None = None

    def __post_init__(self) -> None:
        if self.scores.ndim != 2 or self.scores.shape[1] != len(self.labels) or self.scores.shape[0] == 0:
            raise ValueError("scores must be posts x labels, with at least one post")
        if self.base is not None and len(self.base) == 0:
            raise ValueError("base must name at least one row")

    def rows(self, rng: np.random.Generator, n: int, share: float = 0.0,
             pool: npt.NDArray[np.intp] | None = None) -> npt.NDArray[np.intp]:
        """Row indices of one window's posts."""
        shifted = int(round(share * n))
        if shifted and (pool is None or len(pool) == 0):
            raise ValueError("a shifted window needs a non-empty pool")
        if self.base is None:
            rest = rng.integers(0, self.scores.shape[0], n - shifted)
        else:
            rest = rng.choice(np.asarray(self.base), n - shifted)
        return rest if not shifted else np.concatenate([rng.choice(np.asarray(pool), shifted), rest])

    def window(self, rows: npt.ArrayLike, start: float, width: float = 1.0) -> Window:
        chosen = self.scores[np.asarray(rows, dtype=np.intp)]
        return {
            label: WindowStats.from_scores(label, chosen[:, j], threshold=self.thresholds[label],
                                           edges=self.edges[label], window_start=start,
                                           window_end=start + width)
            for j, label in enumerate(self.labels)
        }

    def windows(self, rng: np.random.Generator, n: int, count: int, *, share: float = 0.0,
                pool: npt.NDArray[np.intp] | None = None) -> Iterable[Window]:
        for i in range(count):
            yield self.window(self.rows(rng, n, share, pool), float(i))


def stream_alarms(
    windows: Iterable[Window], references: Mapping[str, Reference], *, alpha: float = 0.01,
    correction: Correction = "holm", min_posts: int = 200,
) -> tuple[int, int, dict[str, int]]:
    """(windows with any alert, windows, alerts per label) on a stream assumed stationary."""
    alarms = total = 0
    per_label: dict[str, int] = {}
    for stats in windows:
        alerts = evaluate_window(stats, references, alpha=alpha, correction=correction, min_posts=min_posts)
        total += 1
        alarms += bool(alerts)
        for label in {a.label for a in alerts}:
            per_label[label] = per_label.get(label, 0) + 1
    return alarms, total, per_label


def stream_delay(
    runs: Iterable[Iterable[Window]], references: Mapping[str, Reference], labels: Sequence[str], *,
    alpha: float = 0.01, k: int = 3, m: int = 5, min_posts: int = 200,
) -> Delay:
    """Per run of windows after a shift: the first window alerting for one of `labels`
    (1 = the first shifted window) and the first retrain request naming one of them."""
    alert: list[int | None] = []
    retrain: list[int | None] = []
    for run in runs:
        first_alert, first_request = _first_detection(run, references, set(labels), alpha, k, m, min_posts)
        alert.append(first_alert)
        retrain.append(first_request)
    return Delay(alert, retrain)


def _first_detection(
    windows: Iterable[Window], references: Mapping[str, Reference], labels: set[str],
    alpha: float, k: int, m: int, min_posts: int,
) -> tuple[int | None, int | None]:
    sustained = SustainedDrift(k=k, m=m)
    first_alert = None
    for i, stats in enumerate(windows, start=1):
        alerts = evaluate_window(stats, references, alpha=alpha, min_posts=min_posts)
        if first_alert is None and any(a.label in labels for a in alerts):
            first_alert = i
        result = WindowResult.of(stats, references, alerts, model_version="sim", min_posts=min_posts)
        request = sustained.observe(result)
        if request and labels & set(request.labels):
            return first_alert, i
    return first_alert, None


def _windows(
    cells: Mapping[str, Cells], rng: np.random.Generator, n: int, size: int, start: float, width: float
) -> list[dict[str, WindowStats]]:
    drawn = {label: c.sample(rng, n, size) for label, c in cells.items()}
    return [
        {
            label: WindowStats(label, start + i * width, start + (i + 1) * width, n, int(flagged[i]),
                               tuple(int(x) for x in hist[i]))
            for label, (hist, flagged) in drawn.items()
        }
        for i in range(size)
    ]


def false_alarm_rate(
    references: Mapping[str, Reference],
    *,
    windows: int,
    n: int,
    alpha: float = 0.01,
    correction: Correction = "holm",
    resample_reference: bool = True,
    seed: int = 0,
    progress: Progress | None = None,
    chunk: int = 500,
) -> tuple[int, int]:
    """(windows with any alert, windows) on a stationary stream.

    With `resample_reference`, the truth is the given reference and every
    chunk of windows is judged against a fresh calibration set of the same
    size drawn from it: the realistic case, where the reference carries its
    own sampling error.
    """
    rng = np.random.default_rng(seed)
    truth = {label: Cells.of(ref) for label, ref in references.items()}
    alarms = done = 0
    while done < windows:
        size = min(chunk, windows - done)
        refs = dict(references)
        if resample_reference:
            refs = {lab: truth[lab].reference(rng, r.n, r.edges) for lab, r in references.items()}
        for stats in _windows(truth, rng, n, size, float(done), 1.0):
            alarms += bool(evaluate_window(stats, refs, alpha=alpha, correction=correction))
        done += size
        if progress:
            progress(f"  {done}/{windows} windows, {alarms} with alerts")
    return alarms, windows


def detection_delay(
    references: Mapping[str, Reference],
    label: str,
    kind: str,
    amount: float,
    *,
    n: int,
    runs: int = 200,
    horizon: int = 30,
    alpha: float = 0.01,
    seed: int = 0,
    k: int = 3,
    m: int = 5,
) -> Delay:
    """Shift `label` at window 1 and count windows until it alerts / is requested for retraining."""
    rng = np.random.default_rng(seed)
    cells = {lab: Cells.of(r) for lab, r in references.items()}
    cells[label] = cells[label].shifted(kind, amount)
    runs_of = (_windows(cells, rng, n, horizon, 0.0, 1.0) for _ in range(runs))
    return stream_delay(runs_of, references, [label], alpha=alpha, k=k, m=m)


def summarise(delays: Sequence[int | None]) -> str:
    hits = sorted(d for d in delays if d is not None)
    if not hits:
        return f"never within horizon ({len(delays)} runs)"
    pct = lambda q: hits[min(len(hits) - 1, int(q * len(hits)))]  # noqa: E731
    return (
        f"detected {len(hits)}/{len(delays)}; median {pct(0.5)}, p90 {pct(0.9)}, "
        f"mean {np.mean(hits):.2f} windows"
    )


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    tail = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high


SCENARIOS = (("rate", 2.0), ("rate", 3.0), ("rate", 0.5), ("tilt", 0.15))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", help="manifest.json with references (default: demo set)")
    parser.add_argument("--windows", type=int, default=20_000, help="stationary windows")
    parser.add_argument("--n", type=int, default=1000, help="posts per window")
    parser.add_argument("--n-ref", type=int, default=20_000, help="calibration set size of the demo set")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=200, help="runs per shift scenario")
    parser.add_argument("--horizon", type=int, default=30, help="windows per run after the shift")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    refs = _load(args.manifest) if args.manifest else demo_references(args.n_ref)
    _say(f"references: {', '.join(f'{lab} rate {r.rate:.4f} n {r.n}' for lab, r in refs.items())}")
    for resample in (False, True):
        _say(f"false alarms: n={args.n}, alpha={args.alpha}, reference re-drawn: {resample}")
        hits, total = false_alarm_rate(refs, windows=args.windows, n=args.n, alpha=args.alpha,
                                       resample_reference=resample, seed=args.seed, progress=_say, chunk=2000)
        low, high = clopper_pearson(hits, total)
        _say(f"  windows with any alert {hits}/{total} = {hits / total:.5f} (95% CI {low:.5f}-{high:.5f})")
    for label in refs:
        for kind, amount in SCENARIOS:
            if kind == "rate" and amount * refs[label].rate >= 1:
                continue
            delay = detection_delay(refs, label, kind, amount, n=args.n, runs=args.runs,
                                    horizon=args.horizon, alpha=args.alpha, seed=args.seed)
            _say(f"{label} {kind} x{amount}: first alert {summarise(delay.alert)}; "
                 f"retrain request {summarise(delay.retrain)}")
    return 0


def _say(text: str) -> None:
    print(text, flush=True)


def _load(path: str) -> dict[str, Reference]:
    import json

    from feedwarden.models.bundle import Manifest

    with open(path, encoding="utf-8") as fh:
        return dict(Manifest.from_dict(json.load(fh)).reference)


if __name__ == "__main__":
    sys.exit(main())
