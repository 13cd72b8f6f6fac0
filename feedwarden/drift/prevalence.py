"""Prevalence under label shift: EM prior adjustment (Saerens, Latinne & Decaestecker 2002).

A flagged-rate change says *that* something moved; the prevalence estimate
says how much of the label there now is. If the probabilities are
calibrated under training prior pi_t and only the prior changed (label
shift), re-weighting each posterior by pi / pi_t (and (1 - pi) / (1 - pi_t))
and averaging gives a new pi; iterating is EM for the maximum-likelihood pi.
Each label is treated as its own binary problem.

The worker keeps a histogram (and per-bin score sums), not raw scores, so
the estimate works on bins, and two things decide whether it means anything:

- The prior and the window must describe the posts the same way. EM asks,
  post by post, whether its probability is above or below pi_t. The stored
  `Reference.prior` is the exact mean of the raw calibration scores; set
  against bin midpoints (0.025 for a bin [0, 0.05) whose posts score 0.002
  on average) every post looks like evidence *for* the label and pi runs to
  1 (measured on the released model's valid scores: 1.0 for eight of the
  nine scam-bucket labels on windows at the base rate). Set against window
  bin means it is off by the window's within-bin noise, and with a bin
  holding ~99 % of the posts at a mean within noise of pi_t that decides
  between 0 and 1 as well. So pi_t is taken from the reference
  histogram at the same representative per bin as the window: a window with
  the reference's shares returns pi_t whatever the representatives, and only
  a change of shares moves the estimate.
- The bins must be fine where the posts are (`stats.REFERENCE_EDGES`): one
  representative per bin is only as good as the spread of posterior odds
  inside the bin. With those edges the binned estimate is within 0.005 of
  EM on the raw scores for scam, spam, promo, affiliate and scam_or_spam of
  the released model at shares up to 50 % (within 0.04 for the rarest
  labels, which have 4-11 positives in valid).

The estimate is only as good as its assumptions. Calibration: for a label
whose Platt fit saw other rows than the reference (hate and offensive are
fitted on Janitr and TweetEval rows, the topics on Janitr rows alone; the
reference also holds presumed-clean posts whose labels for them are unknown)
it tracks the prevalence the scores imply, not a measured one. Label shift:
more scam-bucket posts is a label shift for scam_or_spam but not for its
members (the extra spam posts are scam negatives unlike the usual ones), so
on such windows the scam estimate overshoots (0.53 for a true 0.40 at 70 %
scam-bucket posts) while scam_or_spam stays within 0.01.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from feedwarden.drift.stats import DriftError, WindowStats, check_against
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


def window_prevalence(stats: WindowStats, reference: Reference) -> Prevalence:
    """EM prevalence of a window from its histogram (the worker keeps no raw scores).

    Each bin stands for its posts at one probability: the window's bin mean
    where it kept score sums and has posts there, else the bin midpoint. The
    prior EM adjusts from is the reference histogram's mean at those same
    probabilities (see the module docstring for why not `reference.prior`),
    so a window with the reference's bin shares returns exactly that prior.
    """
    check_against(stats, reference)
    edges = np.asarray(reference.edges, dtype=np.float64)
    points = _representatives(stats, (edges[:-1] + edges[1:]) / 2.0)
    prior = float(np.dot(_shares(reference.hist), points))
    prior = float(np.clip(prior, PRIOR_CLIP, 1.0 - PRIOR_CLIP))
    return em_prevalence(points, prior, weights=np.asarray(stats.hist, dtype=np.float64))


def _representatives(stats: WindowStats, mids: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if stats.score_sum is None:
        return mids
    counts = np.asarray(stats.hist, dtype=np.float64)
    sums = np.asarray(stats.score_sum, dtype=np.float64)
    return np.where(counts > 0, sums / np.maximum(counts, 1.0), mids)


def _shares(hist: tuple[float, ...]) -> npt.NDArray[np.float64]:
    share = np.asarray(hist, dtype=np.float64)
    return share / share.sum()
