"""Power: the chance that a test at a given design detects an effect of a given size.

Every verdict of the book states its power at the effect it measured, so that a failure to
reject reads as "not detectable at this design" where that is what it is. Power at a measured
effect is a function of the test's own p-value (a measured effect of 0 gives the level itself);
it says how often this design would decide the claim if the effect were what was measured. Pure functions of
scipy's distributions:

- **Welch's test per point** with n models on each side and equal variances has a noncentral
  t statistic with df = 2n - 2 and noncentrality delta = d sqrt(n / 2) for the effect
  d = (mu_u - mu_r) / sigma; at two-sided level a its power is
  P(|T_{df, delta}| > t_{df, 1 - a/2}) (:func:`welch_power`), and the smallest d it detects
  with a given power solves that for d (:func:`minimum_detectable_effect`).
- **A normal statistic** (a difference with a standard error, a proportion, Fisher's z of a
  correlation): power Phi(e / se - z_{1-a}) one-sided for a positive effect, and
  Phi(|e| / se - z_{1-a/2}) plus the far tail two-sided (:func:`z_power`). Spearman's rho over n pairs has Fisher-z standard error
  sqrt(1.06 / (n - 3)) (Fieller, Hartley and Pearson 1957; :func:`spearman_power`).
"""
from __future__ import annotations

import numpy as np
from scipy import optimize, stats

#: The power a decided claim should have at the effect it measured.
TARGET_POWER = 0.8


def welch_power(effect, n, alpha: float):
    """Power of the two-sided Welch test at level ``alpha`` with ``n`` values per side against
    the standardised effect ``effect`` (arrays broadcast)."""
    effect, n = np.asarray(effect, float), np.asarray(n, float)
    df = np.maximum(2 * n - 2, 1)
    crit = stats.t.ppf(1 - alpha / 2, df)
    delta = np.abs(effect) * np.sqrt(n / 2)
    with np.errstate(invalid="ignore"):
        power = stats.nct.sf(crit, df, delta) + stats.nct.cdf(-crit, df, delta)
    # scipy's noncentral t returns NaN far in its tail (delta of 20 and more), where the power
    # is 1 to many digits
    return np.where(np.isnan(power) & (delta > crit), 1.0, power)


def minimum_detectable_effect(n: float, alpha: float, power: float = TARGET_POWER) -> float:
    """The smallest standardised effect that the Welch test with ``n`` values per side detects
    with probability ``power`` at two-sided level ``alpha``."""
    if n < 2:
        return float("inf")
    return float(optimize.brentq(lambda d: welch_power(d, n, alpha) - power, 1e-6, 100.0))


def z_power(effect, se, alpha: float, sides: int = 2):
    """Power of a z-test at level ``alpha`` for an estimate ``effect`` with standard error
    ``se``: two-sided, or one-sided for a positive effect (a measured effect on the wrong side
    gives a power below ``alpha``)."""
    effect, se = np.asarray(effect, float), np.asarray(se, float)
    crit = stats.norm.ppf(1 - alpha / sides)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = effect / se
    if sides == 1:
        return stats.norm.sf(crit - z)
    return stats.norm.sf(crit - np.abs(z)) + stats.norm.cdf(-crit - np.abs(z))


def spearman_power(rho: float, n: int, alpha: float) -> float:
    """Power of the two-sided test of Spearman's rho = 0 over ``n`` pairs at the measured rho
    (Fisher's z with variance 1.06 / (n - 3))."""
    if n <= 3 or not np.isfinite(rho):
        return float("nan")
    return float(z_power(np.arctanh(np.clip(rho, -0.999999, 0.999999)),
                         np.sqrt(1.06 / (n - 3)), alpha))

