"""The fits behind the claims, as pure functions of arrays.

**Steps against privacy loss, censoring-aware.** A group's steps to unlearn are only known to lie
in an interval: between the checkpoint before the one it was declared unlearned at and that
checkpoint, above the budget K when it never was (right-censored), or at or below 0 when it was
never distinguishable (left-censored: a Tobit model, whose latent Gaussian steps may lie below 0;
counting such groups as exactly 0 would shrink sigma and favour whichever curve passes nearest
0). With steps ~ N(mu(P), sigma^2), the log-likelihood is

    sum_exact log phi((y - mu)/sigma)/sigma + sum_interval log(Phi((hi - mu)/sigma) - Phi((lo - mu)/sigma))
        + sum_censored log(1 - Phi((K - mu)/sigma)),

maximised for mu(P) = a log(b P + 1) (a, b > 0: the bound's shape) and for a line
mu(P) = c + d P. Both have three parameters, so their log-likelihoods compare directly.

**Response curves.** The divergence between unlearned and retrained models at step k,
D(k) = A exp(-c k) + floor (A, floor >= 0; c between log 2 / K, half of A gone within the budget
K, and 5), by least squares; a shared-rate model (one c for
all groups, A and floor per group) against per-group rates by the F-test of nested models,
F = ((RSS_shared - RSS_free) / (G - 1)) / (RSS_free / (n - 3G)).

**Partial rank correlation.** Spearman's rho of y with x given z: the Pearson correlation of the
residuals of rank(y) and rank(x) after regressing each on rank(z).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import optimize, special, stats


# ------------------------------------------------------------------- censored regression
@dataclass(frozen=True)
class StepIntervals:
    """Each group's steps: ``lo`` <= steps <= ``hi`` (lo == hi: observed exactly; hi = inf:
    right-censored at lo; lo = -inf: left-censored at hi)."""

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def from_steps(cls, steps, censored, never, checkpoints) -> "StepIntervals":
        """Intervals from thresholded steps: never distinguishable = (-inf, 0]; unlearned at
        checkpoint k_j = (k_{j-1}, k_j]; censored = (K, inf)."""
        steps, checkpoints = np.asarray(steps, float), np.asarray(checkpoints, float)
        never, censored = np.asarray(never, bool), np.asarray(censored, bool)
        lo, hi = steps.copy(), steps.copy()
        j = np.searchsorted(checkpoints, steps)
        inner = ~never & ~censored & (j > 0)
        lo[inner] = checkpoints[np.maximum(j[inner] - 1, 0)]
        lo[never] = -np.inf
        hi[never] = 0.0
        hi[censored] = np.inf
        return cls(lo, hi)

    def midpoints(self) -> np.ndarray:
        """A point inside each interval for starting values: its middle, its finite end where
        the other is infinite."""
        return np.where(np.isinf(self.hi), self.lo,
                        np.where(np.isinf(self.lo), self.hi, (self.lo + self.hi) / 2))


def log_model(p, a, b):
    return a * np.log1p(b * p)


def interval_log_likelihood(mu: np.ndarray, sigma: float, y: StepIntervals) -> float:
    """The log-likelihood of the module docstring."""
    exact = y.lo == y.hi
    z = (y.lo[exact] - mu[exact]) / sigma
    ll = np.sum(-0.5 * z * z) - exact.sum() * np.log(sigma * np.sqrt(2 * np.pi))
    rest = ~exact
    upper = special.ndtr((y.hi[rest] - mu[rest]) / sigma)          # 1 where hi = inf
    lower = special.ndtr((y.lo[rest] - mu[rest]) / sigma)
    return float(ll + np.log(np.clip(upper - lower, 1e-300, None)).sum())


def _best(fun, starts):
    results = [optimize.minimize(fun, x0, method="Nelder-Mead",
                                 options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
               for x0 in starts]
    return min(results, key=lambda r: r.fun)


def log_law_nll(p: np.ndarray, y: StepIntervals) -> Callable[[np.ndarray], float]:
    """The negative censored log-likelihood of steps ~ a log(b P + 1) + N(0, sigma^2) as a
    function of theta = (log a, log b, log sigma)."""
    def nll(theta):
        a, b, sigma = np.exp(np.clip(theta, -30, 30))
        return -interval_log_likelihood(log_model(p, a, b), max(sigma, 1e-6), y)
    return nll


def fit_log_censored(p: np.ndarray, y: StepIntervals) -> dict[str, float]:
    """ML fit of steps ~ a log(b P + 1) + noise with censoring: a, b, sigma, log-likelihood."""
    p = np.asarray(p, float)
    mid = y.midpoints()
    top = np.nanmax(mid)
    scale = 1 / np.median(p[p > 0]) if np.any(p > 0) else 1.0
    spread = max(float(np.std(mid)), 1.0)
    nll = log_law_nll(p, y)
    starts = [(np.log(max(top, 1.0) / np.log1p(s * scale * p.max())), np.log(s * scale),
               np.log(spread)) for s in (0.01, 0.1, 1, 10, 100)]
    best = _best(nll, starts)
    a, b, sigma = np.exp(np.clip(best.x, -30, 30))
    return {"a": float(a), "b": float(b), "sigma": float(sigma), "log_likelihood": -best.fun}


def fit_line_censored(p: np.ndarray, y: StepIntervals) -> dict[str, float]:
    """ML fit of steps ~ c + d P + noise with censoring: intercept, slope, sigma, log-likelihood."""
    p = np.asarray(p, float)
    mid = y.midpoints()
    slope, intercept = np.polyfit(p, mid, 1) if np.ptp(p) > 0 else (0.0, mid.mean())
    spread = max(float(np.std(mid)), 1.0)

    def nll(theta):
        sigma = max(float(np.exp(np.clip(theta[2], -30, 30))), 1e-6)
        return -interval_log_likelihood(theta[0] + theta[1] * p, sigma, y)

    best = _best(nll, [(intercept, slope, np.log(spread)), (mid.mean(), 0.0, np.log(spread))])
    return {"intercept": float(best.x[0]), "slope": float(best.x[1]),
            "sigma": float(np.exp(best.x[2])), "log_likelihood": -best.fun}


# -------------------------------------------------------------------------- response curves
def exp_decay(k, amplitude, rate, floor):
    return amplitude * np.exp(-rate * np.asarray(k, float)) + floor


@dataclass(frozen=True)
class DecayFit:
    """D(k) = amplitude * exp(-rate * k) + floor, with its residual sum of squares."""

    amplitude: float
    rate: float
    floor: float
    rss: float

    def steps_to(self, target: float) -> float:
        """The k at which the curve reaches ``target``: log(A / (target - floor)) / rate;
        0 when it starts below, inf when the floor lies at or above it."""
        if self.amplitude + self.floor <= target:
            return 0.0
        if self.floor >= target or self.rate <= 0:
            return float("inf")
        return float(np.log(self.amplitude / (target - self.floor)) / self.rate)


MAX_RATE = 5.0


def min_rate(k: np.ndarray) -> float:
    """The slowest decay a fit admits: half of A gone by the last checkpoint, c = log 2 / K. A
    slower component is indistinguishable from the floor within the budget."""
    return float(np.log(2) / max(np.max(k), 1))


def _fit_at_rate(k: np.ndarray, d: np.ndarray, rate: float) -> DecayFit:
    """A and floor >= 0 for a fixed rate: non-negative least squares on [exp(-c k), 1]."""
    design = np.column_stack([np.exp(-rate * k), np.ones_like(k)])
    (a, f), residual = optimize.nnls(design, d)
    return DecayFit(float(a), float(rate), float(f), float(residual ** 2))


def fit_decay(k: np.ndarray, d: np.ndarray, rate: float | None = None) -> DecayFit:
    """Least-squares fit of D(k) = A exp(-c k) + floor (A, floor >= 0,
    log 2 / K <= c <= 5); with ``rate`` given, c is held at it. For a fixed c the fit is linear
    (non-negative least squares); c is profiled over a log grid and refined around the best."""
    k, d = np.asarray(k, float), np.asarray(d, float)
    if rate is not None:
        return _fit_at_rate(k, d, rate)
    grid = np.geomspace(min_rate(k), MAX_RATE, 48)
    best = min((_fit_at_rate(k, d, c) for c in grid), key=lambda f: f.rss)
    i = int(np.flatnonzero(grid == best.rate)[0])
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, len(grid) - 1)])
    res = optimize.minimize_scalar(lambda u: _fit_at_rate(k, d, np.exp(u)).rss,
                                   bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-4})
    refined = _fit_at_rate(k, d, float(np.exp(res.x)))
    return refined if refined.rss <= best.rss else best


def shared_rate_test(k: np.ndarray, curves: list[np.ndarray]) -> dict[str, float]:
    """One rate for every curve against a rate per curve: the shared rate, the F statistic and
    its p-value (small: the rates differ)."""
    k = np.asarray(k, float)
    g, n = len(curves), len(curves) * len(k)
    if g < 2 or n - 3 * g <= 0:
        return {"shared_rate": np.nan, "f": np.nan, "p_value": np.nan}
    free = sum(fit_decay(k, d).rss for d in curves)

    def shared_rss(rate):
        return sum(fit_decay(k, d, rate=float(rate)).rss for d in curves)

    grid = np.geomspace(min_rate(k), MAX_RATE, 48)
    i = int(np.argmin([shared_rss(c) for c in grid]))
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, len(grid) - 1)])
    res = optimize.minimize_scalar(lambda u: shared_rss(np.exp(u)), bounds=(lo, hi),
                                   method="bounded", options={"xatol": 1e-4})
    rate = min((grid[i], float(np.exp(res.x))), key=shared_rss)
    shared = shared_rss(rate)
    f = ((shared - free) / (g - 1)) / max(free / (n - 3 * g), 1e-300)
    return {"shared_rate": float(rate), "f": float(max(f, 0.0)),
            "p_value": float(stats.f.sf(max(f, 0.0), g - 1, n - 3 * g))}


# ----------------------------------------------------------------------------- correlations
def spearman(x, y) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (NaN when undefined)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def partial_spearman(y, x, z) -> float:
    """Spearman's rho of y with x given z (module docstring)."""
    ry, rx, rz = (stats.rankdata(np.asarray(v, float)) for v in (y, x, z))
    design = np.column_stack([np.ones_like(rz), rz])

    def residual(v):
        return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]

    ey, ex = residual(ry), residual(rx)
    denom = np.sqrt((ey ** 2).sum() * (ex ** 2).sum())
    return float((ey * ex).sum() / denom) if denom > 0 else float("nan")


def bootstrap_interval(statistic, n: int, n_boot: int, rng: np.random.Generator,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over resamples of range(n)."""
    values = [statistic(rng.integers(0, n, n)) for _ in range(n_boot)]
    values = np.asarray([v for v in values if np.isfinite(v)])
    if len(values) < n_boot // 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def log_log_slope(p, amplitude) -> dict[str, float]:
    """OLS slope of log A on log P over the points with A > 0 and P > 0, with its 95% interval
    and the intercept (log A at P = 1)."""
    p, a = np.asarray(p, float), np.asarray(amplitude, float)
    keep = (p > 0) & (a > 0)
    if keep.sum() < 3:
        return {"slope": np.nan, "low": np.nan, "high": np.nan, "intercept": np.nan}
    res = stats.linregress(np.log(p[keep]), np.log(a[keep]))
    half = stats.t.ppf(0.975, keep.sum() - 2) * res.stderr
    return {"slope": float(res.slope), "low": float(res.slope - half),
            "high": float(res.slope + half), "intercept": float(res.intercept)}
