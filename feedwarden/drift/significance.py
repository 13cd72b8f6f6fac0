"""The two per-label tests of a window against its reference, and PSI.

Both tests compare the window with the *calibration sample* the reference was
measured on, not with the reference as if it were the truth: a reference rate
of 2 % from 2 000 calibration posts is itself uncertain by ±0.3 points, and
a one-sample test that ignores this alarms far more often than alpha once
windows are large enough to notice the calibration set's own sampling error
(the unit tests measure it). Treating
the reference as a second sample (Fisher's exact test for the rate, the 2×K
χ²-family homogeneity test for the histogram) puts both sampling errors in the
null distribution. A reference with ``n == 0`` (size unknown) is treated as
exact and gets the one-sample versions (exact binomial, goodness of fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special
from scipy import stats as sps

from feedwarden.drift.stats import FloatArray
from feedwarden.models.bundle import Reference

RATE_TEST = "fisher_exact_rate"
RATE_TEST_KNOWN = "binomial_exact_rate"
HIST_TEST = "chi2_cressie_read_homogeneity"
HIST_TEST_KNOWN = "chi2_cressie_read_goodness_of_fit"
# Cressie-Read power-divergence exponent. Pearson's X² is lambda = 1.
CRESSIE_READ_LAMBDA = 2.0 / 3.0
MIN_EXPECTED = 5.0
# Floor for zero-probability bins (PSI, and the known-reference χ²): small
# enough not to move a populated bin, large enough that log(0) cannot happen.
PROB_FLOOR = 1e-4
# p-values below this are reported as this, so statistics stay finite in JSON.
P_FLOOR = 1e-300


@dataclass(frozen=True)
class Evidence:
    """One test's outcome.

    `statistic` lives on a χ² scale with `df` degrees of freedom, so one
    critical value formula serves both tests (see `critical_value`). For the
    exact rate test it is the χ²₁ value with the same p-value; the raw
    counts are in the alert's observed and reference rates. `df == 0` means
    the test could not be made (too few posts to form two bins).
    """

    name: str
    statistic: float
    p_value: float
    df: int
    effect: float

    @property
    def tested(self) -> bool:
        return self.df > 0

    def critical_value(self, level: float) -> float:
        """The statistic a window must reach to reject at raw p-value `level`."""
        return float(special.chdtri(self.df, level))


def rate_test(flagged: int, n: int, reference: Reference) -> Evidence:
    """Two-sided exact test of the window's flagged share against the reference's.

    Two-sided because both directions are failures worth a look: up is a
    new abuse wave or an over-flagging model, down is evasion or a recall
    collapse. The p-value is the equal-tailed one, twice the smaller tail:
    two one-sided exact tests at alpha/2 each, so an "up" and a "down" alert
    carry the same false-alarm guarantee and the direction an alert reports
    is itself a controlled claim. (The "minimum likelihood" two-sided p can
    be a little smaller for rare labels, but splits alpha between the tails
    by the skew of the distribution instead.) With calibration counts this
    is Fisher's exact test (conditional on the total flagged, the window
    count is hypergeometric); it becomes the exact binomial test as n_ref grows.
    `effect` is the flagged-rate ratio, with +0.5 smoothing so zeros stay finite.
    """
    if reference.n > 0:
        ref_flagged = int(round(reference.rate * reference.n))
        lower, upper = hypergeom_tails(flagged, reference.n + n, ref_flagged + flagged, n)
        ref_rate = (ref_flagged + 0.5) / (reference.n + 1)
        name = RATE_TEST
    else:
        lower, upper = float(sps.binom.cdf(flagged, n, reference.rate)), float(
            sps.binom.sf(flagged - 1, n, reference.rate)
        )
        ref_rate = max(reference.rate, PROB_FLOOR)
        name = RATE_TEST_KNOWN
    p_value = max(min(1.0, 2.0 * min(upper, lower)), P_FLOOR)
    ratio = ((flagged + 0.5) / (n + 1)) / ref_rate
    return Evidence(name, float(special.chdtri(1, p_value)), p_value, 1, ratio)


def hypergeom_tails(x: int, total: int, successes: int, draws: int) -> tuple[float, float]:
    """P(X <= x) and P(X >= x) for X ~ Hypergeometric(total, successes, draws).

    Summed from the exact pmf over the support (log-gamma, scaled by the
    mode), which is a few microseconds where a frozen scipy distribution
    costs a millisecond, and matters at 2 × labels tests per window.
    """
    low, high = max(0, draws - (total - successes)), min(draws, successes)
    k = np.arange(low, high + 1, dtype=np.float64)
    log_pmf = _log_choose(successes, k) + _log_choose(total - successes, draws - k)
    pmf = np.exp(log_pmf - log_pmf.max())
    pmf /= pmf.sum()
    return float(pmf[k <= x].sum()), float(pmf[k >= x].sum())


def _log_choose(a: float, b: FloatArray) -> FloatArray:
    return np.asarray(special.gammaln(a + 1) - special.gammaln(b + 1) - special.gammaln(a - b + 1))


def merge_bins(
    shares: npt.ArrayLike, size: float, min_expected: float = MIN_EXPECTED
) -> npt.NDArray[np.intp]:
    """Group index per bin: adjacent bins merged until each group expects >= `min_expected`.

    Grouping looks only at the reference shares and the sample size, never at
    the window's counts, so it does not bias the test. Bins are score bins,
    hence ordered, hence merged with neighbours; a short tail joins the group
    before it.
    """
    share = np.asarray(shares, dtype=np.float64)
    groups = np.empty(share.size, dtype=np.intp)
    closed, mass = 0, 0.0
    for i, s in enumerate(share):
        groups[i] = closed
        mass += float(s) * size
        if mass >= min_expected:
            closed, mass = closed + 1, 0.0
    if closed == 0:
        return np.zeros(share.size, dtype=np.intp)
    groups[groups == closed] = closed - 1
    return groups


def histogram_test(counts: npt.ArrayLike, reference: Reference) -> Evidence:
    """χ²-family test that the window's score histogram matches the reference's.

    Sparse bins are merged (`merge_bins`) so every cell expects at least 5
    posts in both samples; the degrees of freedom, and so the critical value,
    follow the number of groups a window of this size supports. The
    statistic is Cressie-Read's power divergence with lambda = 2/3 rather
    than Pearson's X²: with cells expecting 5-10 posts, Pearson's upper tail
    is heavier than χ² (measured 1.5-2× the nominal rate at p = 0.001 with
    n = 200), and after Holm the per-test levels are that small. Lambda = 2/3
    is Cressie & Read's (1984) recommendation for exactly this, and measures
    at or below nominal here. `effect` is PSI over the reference bins.
    """
    window = np.asarray(counts, dtype=np.float64)
    n = float(window.sum())
    share = _floored(reference.hist)
    size = min(n, float(reference.n)) if reference.n > 0 else n
    groups = merge_bins(share, size)
    observed = np.bincount(groups, weights=window).astype(np.float64)
    effect = psi(counts, reference.hist)
    name = HIST_TEST if reference.n > 0 else HIST_TEST_KNOWN
    if observed.size < 2:
        return Evidence(name, 0.0, 1.0, 0, effect)
    if reference.n > 0:
        ref_bins = np.round(np.asarray(reference.hist, dtype=np.float64) * reference.n)
        table = np.vstack([observed, np.bincount(groups, weights=ref_bins).astype(np.float64)])
        expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    else:
        table, expected = observed, n * np.bincount(groups, weights=share)
    value = power_divergence(table, expected)
    df = observed.size - 1
    p_value = max(float(special.chdtrc(df, value)), P_FLOOR)
    return Evidence(name, value, p_value, df, effect)


def power_divergence(observed: npt.ArrayLike, expected: npt.ArrayLike) -> float:
    """Cressie-Read statistic 2 / (l (l + 1)) * sum O ((O / E)^l - 1); χ² with the usual df."""
    obs = np.asarray(observed, dtype=np.float64).ravel()
    exp = np.asarray(expected, dtype=np.float64).ravel()
    cells = exp > 0
    lam = CRESSIE_READ_LAMBDA
    terms = obs[cells] * ((obs[cells] / exp[cells]) ** lam - 1.0)
    return float(max(0.0, 2.0 / (lam * (lam + 1.0)) * terms.sum()))


def psi(counts: npt.ArrayLike, reference_hist: npt.ArrayLike) -> float:
    """Population stability index of the window over the reference bins.

    An effect size, not a decision rule: under no drift its expectation is
    about (bins - 1) * (1/n + 1/n_ref), so the folklore 0.1 / 0.25 cut-offs
    mean different things at different window sizes. Both distributions are
    floored at PROB_FLOOR and renormalised, so empty bins stay finite.
    """
    total = float(np.sum(counts))
    if total <= 0:
        return 0.0
    window = _floored(np.asarray(counts, dtype=np.float64) / total)
    ref = _floored(reference_hist)
    return float(np.sum((window - ref) * np.log(window / ref)))


def _floored(shares: npt.ArrayLike) -> FloatArray:
    share = np.maximum(np.asarray(shares, dtype=np.float64), PROB_FLOOR)
    return share / share.sum()
