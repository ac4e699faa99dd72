"""The fits behind the claims, as pure functions of arrays.

**Steps against privacy loss, censoring-aware.** A group's steps to unlearn are only known to lie
in an interval: between the checkpoint before the one it was declared unlearned at and that
checkpoint, above the budget K when it never was (right-censored), or at or below 0 when it was
never distinguishable (left-censored: a Tobit model, whose latent Gaussian steps may lie below 0;
counting such groups as exactly 0 would shrink sigma and favour whichever curve passes nearest
0). With steps ~ N(mu(P), sigma^2), the log-likelihood is

    sum_exact log phi((y - mu)/sigma)/sigma + sum_interval log(Phi((hi - mu)/sigma) - Phi((lo - mu)/sigma))
        + sum_censored log(1 - Phi((K - mu)/sigma)),

maximised for the log law mu(P) = a log(b P) (a, b > 0) and for a line mu(P) = c + d P. Both
have three parameters, so their log-likelihoods compare directly. The log law is the bound's
shape, k = (1/c) log(P / eps'), for latent steps that may lie below 0: points with P below 1 / b
are unlearned at once, and the steps grow by a log 2 for every doubling of P beyond. The law
a log(bP + 1) states the same for recorded steps, which cannot lie below 0 (the + 1 keeps them
there); here the censoring at 0 does that, and a log(bP + 1) itself, which is at least 0 for
every P, could not place most points at 0 steps with any noise less than the whole spread.

**Response curves.** The divergence between unlearned and retrained models at step k,
D(k) = A exp(-c k) + floor (A, floor >= 0; c between log 2 / K, half of A gone within the budget
K, and 5), by least squares; a shared-rate model (one c for
all groups, A and floor per group) against per-group rates by the F-test of nested models,
F = ((RSS_shared - RSS_free) / (G - 1)) / (RSS_free / (n - 3G)).

**The log law against a line** (:func:`law_test`): a parametric-bootstrap likelihood-ratio test,
since the two are not nested, with the power and each model's goodness of fit from the same
simulations.

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
    """The log law's latent steps a log(b P) (P at or below 0 read as 1e-300: no steps)."""
    return a * np.log(np.maximum(b * np.asarray(p, float), 1e-300))


def recorded_log_model(p, a, b):
    """The log law as recorded steps show it: max(0, a log(b P))."""
    return np.maximum(log_model(p, a, b), 0.0)


_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def _log_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) for a < b (either may be infinite), computed in the tail where the
    interval lies so that far-off intervals keep their digits."""
    upper = a > 0                                    # both ends in the upper tail: use sf
    hi = np.where(upper, special.log_ndtr(-a), special.log_ndtr(b))
    lo = np.where(upper, special.log_ndtr(-b), special.log_ndtr(a))
    with np.errstate(divide="ignore"):
        return hi + np.log(np.clip(-np.expm1(lo - hi), 1e-300, None))


class CensoredNormal:
    """The log-likelihood of the module docstring for fixed intervals, with its gradient in
    mu (one per observation) and in log sigma:

        exact y:       d/dmu = z / sigma,                          d/dlog sigma = z^2 - 1
        (lo, hi]:      d/dmu = (phi(a) - phi(b)) / (sigma D),      d/dlog sigma = (a phi(a) - b phi(b)) / D

    with z = (y - mu) / sigma, a = (lo - mu) / sigma, b = (hi - mu) / sigma and
    D = Phi(b) - Phi(a) (phi(+-inf) = a phi(a) = 0 at infinite ends)."""

    def __init__(self, y: StepIntervals):
        self.exact = np.asarray(y.lo == y.hi)
        self.y = np.asarray(y.lo, float)[self.exact]
        self.lo = np.asarray(y.lo, float)[~self.exact]
        self.hi = np.asarray(y.hi, float)[~self.exact]

    def __call__(self, mu: np.ndarray, log_sigma: float) -> tuple[float, np.ndarray, float]:
        """(log-likelihood, d/dmu [n], d/dlog sigma)."""
        sigma = np.exp(log_sigma)
        grad_mu = np.empty(len(mu))
        z = (self.y - mu[self.exact]) / sigma
        ll = float(np.sum(-0.5 * z * z) - len(z) * (log_sigma + _LOG_SQRT_2PI))
        grad_mu[self.exact] = z / sigma
        grad_sigma = float(np.sum(z * z - 1))
        a, b = (self.lo - mu[~self.exact]) / sigma, (self.hi - mu[~self.exact]) / sigma
        log_d = _log_mass(a, b)
        ll += float(log_d.sum())
        def density(v):          # phi(v) / D, capped where D underflows (a far-off interval)
            exponent = np.where(np.isfinite(v), -0.5 * v * v - _LOG_SQRT_2PI - log_d, -np.inf)
            return np.exp(np.minimum(exponent, 700.0))

        pa, pb = density(a), density(b)
        grad_mu[~self.exact] = (pa - pb) / sigma
        finite = lambda v: np.where(np.isfinite(v), v, 0.0)  # noqa: E731  (a phi(a) = 0 at inf)
        grad_sigma += float(np.sum(finite(a) * pa - finite(b) * pb))
        return ll, grad_mu, grad_sigma


def interval_log_likelihood(mu: np.ndarray, sigma: float, y: StepIntervals) -> float:
    """The log-likelihood of the module docstring."""
    return CensoredNormal(y)(np.asarray(mu, float), float(np.log(sigma)))[0]


def _minimise(nll_grad, starts, bounds) -> optimize.OptimizeResult:
    """L-BFGS-B from each start; the best result. Trial points far off (a = e^30, say) may
    overflow: their value and gradient are capped, so the line search steps back."""
    def capped(theta):
        with np.errstate(over="ignore", invalid="ignore"):
            value, grad = nll_grad(theta)
        return (float(np.nan_to_num(value, nan=1e300, posinf=1e300)),
                np.nan_to_num(grad, nan=0.0, posinf=1e300, neginf=-1e300))

    results = [optimize.minimize(capped, np.asarray(x0, float), jac=True, method="L-BFGS-B",
                                 bounds=bounds, options={"maxiter": 500})
               for x0 in starts]
    return min(results, key=lambda r: r.fun)


#: Bounds of log a, log b and log sigma (sigma below 0.01 step means nothing for steps).
_LOG_BOUNDS = [(-30, 30), (-30, 30), (-5, 30)]


def _log_law_objective(p: np.ndarray, y: StepIntervals, likelihood=None):
    """The negative log-likelihood of the log law and its gradient in
    theta = (log a, log b, log sigma): mu = a log(b P), dmu/dlog a = mu, dmu/dlog b = a."""
    likelihood = likelihood or CensoredNormal(y)

    def nll_grad(theta):
        a, b = np.exp(theta[:2])
        mu = log_model(p, a, b)
        ll, g_mu, g_sigma = likelihood(mu, theta[2])
        return -ll, -np.array([g_mu @ mu, a * g_mu.sum(), g_sigma])
    return nll_grad


def log_law_nll(p: np.ndarray, y: StepIntervals) -> Callable[[np.ndarray], float]:
    """The negative censored log-likelihood of latent steps ~ a log(b P) + N(0, sigma^2) as a
    function of theta = (log a, log b, log sigma)."""
    objective = _log_law_objective(np.asarray(p, float), y)
    return lambda theta: objective(np.clip(np.asarray(theta, float), -30, 30))[0]


def fit_log_censored(p: np.ndarray, y: StepIntervals, start: dict | None = None,
                     likelihood=None) -> dict[str, float]:
    """ML fit of latent steps ~ a log(b P) + noise with censoring (module docstring): a, b,
    sigma, log-likelihood. ``start`` (a previous fit) replaces the spread of starting values;
    ``likelihood`` (default :class:`CensoredNormal` of ``y``) is any callable
    (mu, log sigma) -> (log-likelihood, d/dmu, d/dlog sigma), such as :class:`FlaggedSteps`."""
    p = np.asarray(p, float)
    if start is not None:
        starts = [np.log([start["a"], start["b"], start["sigma"]])]
    else:
        mid, logp = y.midpoints(), np.log(np.maximum(p, 1e-300))
        slope, intercept = np.polyfit(logp, mid, 1) if np.ptp(logp) > 0 else (1.0, 0.0)
        slope = slope if slope > 0 else max(float(np.std(mid)), 1.0)
        spread = np.log(max(float(np.std(mid)), 1.0))
        starts = [(np.log(slope * m), intercept / slope, spread) for m in (0.3, 1, 3)]
    best = _minimise(_log_law_objective(p, y, likelihood), starts, _LOG_BOUNDS)
    a, b, sigma = np.exp(best.x)
    return {"a": float(a), "b": float(b), "sigma": float(sigma), "log_likelihood": -float(best.fun)}


def fit_line_censored(p: np.ndarray, y: StepIntervals, start: dict | None = None,
                      likelihood=None) -> dict[str, float]:
    """ML fit of steps ~ c + d P + noise with censoring: intercept, slope, sigma, log-likelihood.
    ``start`` and ``likelihood`` as for :func:`fit_log_censored`."""
    p = np.asarray(p, float)
    likelihood = likelihood or CensoredNormal(y)

    def nll_grad(theta):
        ll, g_mu, g_sigma = likelihood(theta[0] + theta[1] * p, theta[2])
        return -ll, -np.array([g_mu.sum(), g_mu @ p, g_sigma])

    if start is not None:
        starts = [(start["intercept"], start["slope"], np.log(start["sigma"]))]
    else:
        mid = y.midpoints()
        slope, intercept = np.polyfit(p, mid, 1) if np.ptp(p) > 0 else (0.0, mid.mean())
        spread = np.log(max(float(np.std(mid)), 1.0))
        starts = [(intercept, slope, spread), (mid.mean(), 0.0, spread)]
    best = _minimise(nll_grad, starts, [(None, None), (None, None), _LOG_BOUNDS[2]])
    return {"intercept": float(best.x[0]), "slope": float(best.x[1]),
            "sigma": float(np.exp(best.x[2])), "log_likelihood": -float(best.fun)}


# ------------------------------------------------- the log law against a line, by simulation
def category_edges(checkpoints: np.ndarray) -> np.ndarray:
    """The edges of the recorded categories: r = 0 never distinguishable (-inf, 0], r = j
    unlearned at checkpoint k_j (k_{j-1}, k_j], r = C censored (K, inf): [-inf, k_0 = 0, k_1,
    .., K, inf]."""
    return np.concatenate([[-np.inf], np.asarray(checkpoints, float), [np.inf]])


def categories(y: StepIntervals, checkpoints: np.ndarray) -> np.ndarray:
    """The recorded category of each interval (its upper end among the edges)."""
    return np.searchsorted(category_edges(checkpoints)[1:], y.hi, side="left")


def category_intervals(r: np.ndarray, checkpoints: np.ndarray) -> StepIntervals:
    """The intervals of recorded categories r."""
    edges = category_edges(checkpoints)
    return StepIntervals(edges[r], edges[np.asarray(r) + 1])


def threshold_steps(latent: np.ndarray, checkpoints: np.ndarray) -> StepIntervals:
    """What the per-checkpoint criterion records of latent steps: (-inf, 0] at or below 0,
    (K, inf) above the budget K, else (k_{j-1}, k_j] for the first checkpoint k_j at or above."""
    r = np.searchsorted(np.asarray(checkpoints, float), np.asarray(latent, float), side="left")
    return category_intervals(r, checkpoints)


class FlaggedSteps:
    """The likelihood of recorded steps with false flags: the recorded category is
    R = max(c, F), c the category of the latent Gaussian steps and F a chance flag's category,
    independent of c, with probabilities ``flags`` (F = 0: no flag). Per point,

        P(R = r) = P(c = r) P(F <= r) + P(c < r) P(F = r),

    with its gradient in mu and log sigma from those of the Gaussian cdf (the two terms
    weighted by their shares of the point's probability). ``flags`` = (1, 0, .., 0) gives the
    plain interval likelihood of :class:`CensoredNormal`."""

    def __init__(self, y: StepIntervals, checkpoints: np.ndarray, flags: np.ndarray):
        edges = category_edges(checkpoints)
        r = categories(y, checkpoints)
        self.lo, self.hi = edges[r], edges[r + 1]
        with np.errstate(divide="ignore"):
            self.log_at_most = np.log(np.cumsum(flags))[r]
            self.log_at = np.log(np.asarray(flags, float))[r]

    def __call__(self, mu: np.ndarray, log_sigma: float) -> tuple[float, np.ndarray, float]:
        """(log-likelihood, d/dmu [n], d/dlog sigma)."""
        sigma = np.exp(log_sigma)
        a, b = (self.lo - mu) / sigma, (self.hi - mu) / sigma
        log_c = _log_mass(a, b)
        log_below = special.log_ndtr(a)
        with np.errstate(invalid="ignore"):
            log_l = np.logaddexp(log_c + self.log_at_most, log_below + self.log_at)
            share_c = np.exp(log_c + self.log_at_most - log_l)
            share_b = np.nan_to_num(np.exp(log_below + self.log_at - log_l))

        def ratio(v, log_mass):      # phi(v) / mass, 0 at infinite v
            with np.errstate(invalid="ignore"):
                exponent = np.where(np.isfinite(v), -0.5 * v * v - _LOG_SQRT_2PI - log_mass,
                                    -np.inf)
            return np.exp(np.minimum(exponent, 700.0))

        finite = lambda v: np.where(np.isfinite(v), v, 0.0)  # noqa: E731
        ca, cb, ba = ratio(a, log_c), ratio(b, log_c), ratio(a, log_below)
        grad_mu = (share_c * (ca - cb) - share_b * ba) / sigma
        grad_sigma = share_c * (finite(a) * ca - finite(b) * cb) - share_b * finite(a) * ba
        return float(log_l.sum()), grad_mu, float(grad_sigma.sum())


def recorded_probabilities(mu: np.ndarray, sigma: float, checkpoints: np.ndarray,
                           flags: np.ndarray | None = None) -> np.ndarray:
    """P(R = r) for every point and category: [points, C + 1] (:class:`FlaggedSteps`)."""
    cdf = special.ndtr((category_edges(checkpoints)[None, :] - mu[:, None]) / sigma)
    latent = np.diff(cdf, axis=1)
    if flags is None:
        return latent
    return latent * np.cumsum(flags)[None, :] + cdf[:, :-1] * np.asarray(flags)[None, :]


def binned_pearson(p: np.ndarray, recorded: np.ndarray, probabilities: np.ndarray,
                   coarse: np.ndarray, bins: int = 10) -> float:
    """Goodness of fit: the points cut into ``bins`` quantile bins of P and their recorded
    categories merged by ``coarse`` (category -> coarse category: never distinguishable, quick,
    late, censored); Pearson's sum over the cells of (observed - expected)^2 / (expected + 1/2),
    the expected counts from the model's ``probabilities`` [points, categories]. Calibrated by
    simulation, never by a chi-square table."""
    which = np.argsort(np.argsort(p, kind="stable"), kind="stable") * bins // len(p)
    n_coarse = coarse.max() + 1
    expected = np.stack([probabilities[:, coarse == c].sum(1) for c in range(n_coarse)], axis=1)
    observed = np.eye(n_coarse)[coarse[recorded]]
    e = np.stack([expected[which == b].sum(0) for b in range(bins)])
    o = np.stack([observed[which == b].sum(0) for b in range(bins)])
    return float(((o - e) ** 2 / (e + 0.5)).sum())


@dataclass(frozen=True)
class LawTest:
    """The log law against a line on censored steps (:func:`law_test`)."""

    log_law: dict
    line: dict
    statistic: float     # log-likelihood of the log law minus the line's
    p_line: float        # small: the line is rejected in favour of the log law
    p_log: float         # small: the log law is rejected in favour of the line
    power: float         # P(p_line <= level) when the fitted log law holds
    gof_log: float       # goodness-of-fit p-value of the log law
    gof_line: float      # goodness-of-fit p-value of the line
    simulations: int


def _fit_both(p: np.ndarray, y: StepIntervals, likelihood, start=None) -> dict:
    log = fit_log_censored(p, y, start and start["log"], likelihood)
    line = fit_line_censored(p, y, start and start["line"], likelihood)
    return {"log": log, "line": line,
            "mu": {"log": log_model(p, log["a"], log["b"]),
                   "line": line["intercept"] + line["slope"] * p},
            "sigma": {"log": log["sigma"], "line": line["sigma"]}}


def law_test(p: np.ndarray, y: StepIntervals, checkpoints: np.ndarray,
             rng: np.random.Generator, simulations: int = 100, level: float = 0.05,
             flags: np.ndarray | None = None) -> LawTest:
    """A parametric-bootstrap likelihood-ratio test of latent steps ~ a log(bP) against
    steps ~ c + dP (each with Gaussian noise, recorded at the checkpoints, with false flags of
    probabilities ``flags`` where given: :class:`FlaggedSteps`; the two laws are not nested).

    The statistic is Lambda = ll_log - ll_line. Data simulated from the fitted line (latent
    steps recorded as the criterion records them, false flags drawn from ``flags``) and
    refitted by both give Lambda's distribution when the line holds:
    p_line = (1 + #{Lambda* >= Lambda}) / (1 + n). Data simulated from the fitted log law give
    it when the log law holds: p_log = (1 + #{Lambda** <= Lambda}) / (1 + n), and the power,
    the share of Lambda** above the line's (1 - level) quantile. The same simulations
    calibrate each model's goodness of fit (:func:`binned_pearson`, with categories never
    distinguishable, within K / 10, later, censored)."""
    p, ck = np.asarray(p, float), np.asarray(checkpoints, float)
    flags = np.eye(len(ck) + 1)[0] if flags is None else np.asarray(flags, float)
    make = lambda ys: FlaggedSteps(ys, ck, flags)  # noqa: E731
    quick = ck[ck <= ck[-1] / 10].max()
    upper = category_edges(ck)[1:]
    coarse = np.where(np.arange(len(ck) + 1) == 0, 0, np.where(upper <= quick, 1, np.where(
        np.isfinite(upper), 2, 3)))
    observed = _fit_both(p, y, make(y))

    def pearson(fit, model, recorded):
        probs = recorded_probabilities(fit["mu"][model], fit["sigma"][model], ck, flags)
        return binned_pearson(p, recorded, probs, coarse)

    gof_obs = {m: pearson(observed, m, categories(y, ck)) for m in ("log", "line")}
    lam, gof = {"log": [], "line": []}, {"log": [], "line": []}
    for truth in ("line", "log"):
        for _ in range(simulations):
            latent = observed["mu"][truth] + observed["sigma"][truth] * rng.standard_normal(len(p))
            r = np.maximum(categories(threshold_steps(latent, ck), ck),
                           rng.choice(len(flags), size=len(p), p=flags))
            ys = category_intervals(r, ck)
            refit = _fit_both(p, ys, make(ys), observed)
            lam[truth].append(refit["log"]["log_likelihood"] - refit["line"]["log_likelihood"])
            gof[truth].append(pearson(refit, truth, r))
    lam = {k: np.asarray(v) for k, v in lam.items()}
    share = lambda hits: float((1 + np.sum(hits)) / (1 + simulations))  # noqa: E731
    statistic = observed["log"]["log_likelihood"] - observed["line"]["log_likelihood"]
    critical = np.quantile(lam["line"], 1 - level)
    return LawTest(observed["log"], observed["line"], float(statistic),
                   share(lam["line"] >= statistic), share(lam["log"] <= statistic),
                   float(np.mean(lam["log"] > critical)),
                   share(np.asarray(gof["log"]) >= gof_obs["log"]),
                   share(np.asarray(gof["line"]) >= gof_obs["line"]), simulations)


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
