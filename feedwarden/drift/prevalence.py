"""Prevalence under label shift: EM prior adjustment (Saerens, Latinne & Decaestecker 2002).

A flagged-rate change says *that* something moved; the prevalence estimate
says how much of the label there now is. If the probabilities are
calibrated under training prior pi_t and only the prior changed (label
shift), re-weighting each posterior by pi / pi_t (and (1 - pi) / (1 - pi_t))
and averaging gives a new pi; iterating is EM for the maximum-likelihood pi.
Each label is treated as its own binary problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from feedwarden.drift.stats import DriftError, WindowStats
from feedwarden.models.bundle import Reference

PRIOR_CLIP = 1e-6


@dataclass(frozen=True)
class Prevalence:
    value: float
    prior: float
    iterations: int
    converged: bool


def em_prevalence(
    probabilities: npt.ArrayLike,
    prior: float,
    *,
    weights: npt.ArrayLike | None = None,
    tol: float = 1e-8,
    max_iter: int = 1000,
) -> Prevalence:
    """EM estimate of the label's prevalence in a sample of calibrated probabilities.

    `weights` turns the sample into a weighted one (e.g. bin representatives
    with their counts). EM is slow when the MLE sits near 0 or 1;
    `converged` says whether `tol` was met within `max_iter`.
    """
    if not 0.0 < prior < 1.0:
        raise DriftError(f"training prior {prior} must be in (0, 1)")
    p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), 0.0, 1.0)
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != p.shape or w.sum() <= 0:
        raise DriftError("weights must match the probabilities and have a positive sum")
    w = w / w.sum()
    pi = prior
    for iteration in range(1, max_iter + 1):
        pos = (pi / prior) * p
        posterior = pos / (pos + ((1.0 - pi) / (1.0 - prior)) * (1.0 - p))
        new = float(np.dot(w, np.nan_to_num(posterior)))
        if abs(new - pi) < tol:
            return Prevalence(new, prior, iteration, True)
        pi = new
    return Prevalence(pi, prior, max_iter, False)


def window_prevalence(stats: WindowStats, reference: Reference, prior: float | None = None) -> Prevalence:
    """EM prevalence from a window's histogram (the worker keeps no raw scores).

    Each bin stands for its posts at one probability: the window's bin mean
    if the worker kept score sums, else the bin midpoint. The training prior
    should be the mean calibrated probability on the calibration set. If it
    is not given it is estimated from the reference histogram with the same
    midpoints, and the window uses midpoints too: then a window that looks
    like the reference returns exactly that prior (no spurious shift), at
    the price of midpoint bias in absolute level.
    """
    edges = np.asarray(reference.edges, dtype=np.float64)
    mids = (edges[:-1] + edges[1:]) / 2.0
    counts = np.asarray(stats.hist, dtype=np.float64)
    if prior is None:
        prior = float(np.dot(_shares(reference.hist), mids))
        points = mids
    else:
        points = _bin_means(stats, mids)
    prior = float(np.clip(prior, PRIOR_CLIP, 1.0 - PRIOR_CLIP))
    return em_prevalence(points, prior, weights=counts)


def _bin_means(stats: WindowStats, mids: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if stats.score_sum is None:
        return mids
    counts = np.asarray(stats.hist, dtype=np.float64)
    sums = np.asarray(stats.score_sum, dtype=np.float64)
    return np.where(counts > 0, sums / np.maximum(counts, 1.0), mids)


def _shares(hist: tuple[float, ...]) -> npt.NDArray[np.float64]:
    share = np.asarray(hist, dtype=np.float64)
    return share / share.sum()
