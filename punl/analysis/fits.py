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
a log(bP + 1), as the claim writes it, keeps steps at or above 0 with the + 1 and is close to
a log(bP) where bP is large (they differ by a log 2 at bP = 1); here the censoring at 0 keeps
the recorded steps there, and a log(bP + 1) itself, which is at least 0 for every P, could not
place most points at 0 steps with any noise less than the whole spread.

**Response curves.** The divergence between unlearned and retrained models at step k,
D(k) = A exp(-c k) + floor (A, floor >= 0; c between log 2 / K, half of A gone within the budget
K, and 5), by least squares; a shared-rate model (one c for
all groups, A and floor per group) against per-group rates by the F-test of nested models,
F = ((RSS_shared - RSS_free) / (G - 1)) / (RSS_free / (n - 3G)).

The likelihoods take any interval (or, with :mod:`punl.analysis.lawtest`, recorded steps with chance
flags), and :mod:`punl.analysis.lawtest` compares the two laws by simulation.

**Partial rank correlation.** Spearman's rho of y with x given z: the Pearson correlation of the
residuals of rank(y) and rank(x) after regressing each on rank(z).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Callable

import numpy as np
from scipy import optimize, special, stats
from threadpoolctl import ThreadpoolController


@cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread():
    """A context in which numpy's and scipy's BLAS use one thread. The fits' linear algebra is
    on 3 x 3 matrices, where more threads gain nothing, and where another process keeps a core
    busy (a sweep's other point, say) OpenBLAS's waiting threads cost most of the time: on two
    cores with one kept busy, three law tests of 39 simulations a side took 3.4 s with
    OpenBLAS's two threads and 1.3 s with one (1.2-1.3 s either way on idle cores), with the
    same results; digits-quick's claims table is the same to the bit either way."""
    return _blas().limit(limits=1, user_api="blas")


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


LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def log_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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
        ll = float(np.sum(-0.5 * z * z) - len(z) * (log_sigma + LOG_SQRT_2PI))
        grad_mu[self.exact] = z / sigma
        grad_sigma = float(np.sum(z * z - 1))
        a, b = (self.lo - mu[~self.exact]) / sigma, (self.hi - mu[~self.exact]) / sigma
        log_d = log_mass(a, b)
        ll += float(log_d.sum())
        def density(v):          # phi(v) / D, capped where D underflows (a far-off interval)
            exponent = np.where(np.isfinite(v), -0.5 * v * v - LOG_SQRT_2PI - log_d, -np.inf)
            return np.exp(np.minimum(exponent, 700.0))

        pa, pb = density(a), density(b)
        grad_mu[~self.exact] = (pa - pb) / sigma
        finite = lambda v: np.where(np.isfinite(v), v, 0.0)  # noqa: E731  (a phi(a) = 0 at inf)
        grad_sigma += float(np.sum(finite(a) * pa - finite(b) * pb))
        return ll, grad_mu, grad_sigma


def _minimise(nll_grad, starts, bounds) -> optimize.OptimizeResult:
    """L-BFGS-B from each start; the best result. Trial points far off (a = e^30, say) may
    overflow: their value and gradient are capped, so the line search steps back."""
    def capped(theta):
        with np.errstate(over="ignore", invalid="ignore"):
            value, grad = nll_grad(theta)
        if np.isfinite(value) and np.isfinite(grad).all():
            return float(value), grad
        return (float(np.nan_to_num(value, nan=1e300, posinf=1e300)),
                np.nan_to_num(grad, nan=0.0, posinf=1e300, neginf=-1e300))

    with one_blas_thread():
        results = [optimize.minimize(capped, np.asarray(x0, float), jac=True,
                                     method="L-BFGS-B", bounds=bounds, options={"maxiter": 500})
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


#: Where :func:`threshold_starts` puts the law's threshold 1/b: at these quantiles of log P,
#: and these many e-folds above its largest value.
THRESHOLD_QUANTILES = (0.9,)
THRESHOLD_BEYOND = (0.0, 2.0)


def threshold_starts(logp: np.ndarray, mid: np.ndarray) -> list[tuple[float, float, float]]:
    """Starting values (log a, log b, log sigma) with the threshold t = log(1/b) at a high
    quantile of log P, at its largest value and beyond (:data:`THRESHOLD_QUANTILES`,
    :data:`THRESHOLD_BEYOND`), each once.

    A regression of the midpoints ``mid`` on log P alone starts where most points take no steps
    and the likelihood is flat; from there (above all with chance flags) L-BFGS-B can run into
    the corner of its bounds (a -> e^30, b -> e^-30), far below the maximum. Here a is the
    slope through the origin of the midpoints on x = log P - t over the points above t,
    a = sum(mid x) / sum(x^2), at least 1 step per e-fold; where fewer than two points lie
    above t (always, for t at or above the largest P) it is twice the midpoints' spread
    s = max(sd(mid), 1), and sigma starts at s."""
    scale = max(float(np.std(mid)), 1.0)
    top = float(np.max(logp))
    thresholds = [float(np.quantile(logp, q)) for q in THRESHOLD_QUANTILES] + \
        [top + e for e in THRESHOLD_BEYOND]
    starts = []
    for t in dict.fromkeys(thresholds):
        above = logp > t
        x = logp[above] - t
        a = float(mid[above] @ x / (x @ x)) if above.sum() > 1 else 2 * scale
        starts.append((float(np.clip(np.log(max(a, 1.0)), *_LOG_BOUNDS[0])),
                       float(np.clip(-t, *_LOG_BOUNDS[1])), float(np.log(scale))))
    return starts


@dataclass(frozen=True)
class CensoredLogFit:
    """The ML fit of latent steps ~ a log(b P) + N(0, sigma^2) (:func:`fit_log_censored`)."""

    a: float                 # steps per unit of log P
    b: float                 # 1 / b: the P below which no steps are needed
    sigma: float             # the noise's standard deviation, in steps
    log_likelihood: float    # the censored log-likelihood at the fit


def fit_log_censored(p: np.ndarray, y: StepIntervals, start: CensoredLogFit | None = None,
                     likelihood=None) -> CensoredLogFit:
    """ML fit of latent steps ~ a log(b P) + noise with censoring (module docstring).
    ``start`` (a previous fit) replaces the spread of starting values; ``likelihood`` (default
    :class:`CensoredNormal` of ``y``) is any callable (mu, log sigma) -> (log-likelihood,
    d/dmu, d/dlog sigma), such as :class:`FlaggedSteps`."""
    p = np.asarray(p, float)
    if start is not None:
        starts = [np.log([start.a, start.b, start.sigma])]
    else:
        mid, logp = y.midpoints(), np.log(np.maximum(p, 1e-300))
        slope, intercept = np.polyfit(logp, mid, 1) if np.ptp(logp) > 0 else (1.0, 0.0)
        slope = slope if slope > 0 else max(float(np.std(mid)), 1.0)
        spread = np.log(max(float(np.std(mid)), 1.0))
        starts = [(np.log(slope * m), intercept / slope, spread) for m in (0.3, 1, 3)] + \
            threshold_starts(logp, mid)
    best = _minimise(_log_law_objective(p, y, likelihood), starts, _LOG_BOUNDS)
    a, b, sigma = np.exp(best.x)
    return CensoredLogFit(a=float(a), b=float(b), sigma=float(sigma),
                          log_likelihood=-float(best.fun))


@dataclass(frozen=True)
class CensoredLineFit:
    """The ML fit of steps ~ intercept + slope P + N(0, sigma^2) (:func:`fit_line_censored`)."""

    intercept: float         # the steps at P = 0
    slope: float             # steps per unit of P
    sigma: float             # the noise's standard deviation, in steps
    log_likelihood: float    # the censored log-likelihood at the fit


def fit_line_censored(p: np.ndarray, y: StepIntervals, start: CensoredLineFit | None = None,
                      likelihood=None) -> CensoredLineFit:
    """ML fit of steps ~ c + d P + noise with censoring. ``start`` and ``likelihood`` as for
    :func:`fit_log_censored`."""
    p = np.asarray(p, float)
    likelihood = likelihood or CensoredNormal(y)

    def nll_grad(theta):
        ll, g_mu, g_sigma = likelihood(theta[0] + theta[1] * p, theta[2])
        return -ll, -np.array([g_mu.sum(), g_mu @ p, g_sigma])

    if start is not None:
        starts = [(start.intercept, start.slope, np.log(start.sigma))]
    else:
        mid = y.midpoints()
        slope, intercept = np.polyfit(p, mid, 1) if np.ptp(p) > 0 else (0.0, mid.mean())
        spread = np.log(max(float(np.std(mid)), 1.0))
        starts = [(intercept, slope, spread), (mid.mean(), 0.0, spread)]
    best = _minimise(nll_grad, starts, [(None, None), (None, None), _LOG_BOUNDS[2]])
    return CensoredLineFit(intercept=float(best.x[0]), slope=float(best.x[1]),
                           sigma=float(np.exp(best.x[2])), log_likelihood=-float(best.fun))


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


@dataclass(frozen=True)
class SharedRateTest:
    """One decay rate for every curve against a rate per curve (:func:`shared_rate_test`)."""

    shared_rate: float       # the rate fitted to every curve at once (NaN: no test)
    f: float                 # the F statistic of the nested models
    p_value: float           # its p-value (small: the rates differ)


def shared_rate_test(k: np.ndarray, curves: list[np.ndarray]) -> SharedRateTest:
    """One rate for every curve against a rate per curve: the shared rate, the F statistic and
    its p-value (small: the rates differ); NaN with fewer than two curves or too few points."""
    k = np.asarray(k, float)
    g, n = len(curves), len(curves) * len(k)
    if g < 2 or n - 3 * g <= 0:
        return SharedRateTest(shared_rate=np.nan, f=np.nan, p_value=np.nan)
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
    return SharedRateTest(shared_rate=float(rate), f=float(max(f, 0.0)),
                          p_value=float(stats.f.sf(max(f, 0.0), g - 1, n - 3 * g)))


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


@dataclass(frozen=True)
class LogLogSlope:
    """The least-squares line of log A on log P (:func:`log_log_slope`)."""

    slope: float             # d log A / d log P (NaN: fewer than 3 points with A, P > 0)
    low: float               # the slope's 95% interval
    high: float
    intercept: float         # log A at P = 1


def log_log_slope(p, amplitude) -> LogLogSlope:
    """OLS slope of log A on log P over the points with A > 0 and P > 0, with its 95% interval
    and the intercept (log A at P = 1)."""
    p, a = np.asarray(p, float), np.asarray(amplitude, float)
    keep = (p > 0) & (a > 0)
    if keep.sum() < 3:
        return LogLogSlope(slope=np.nan, low=np.nan, high=np.nan, intercept=np.nan)
    res = stats.linregress(np.log(p[keep]), np.log(a[keep]))
    half = stats.t.ppf(0.975, keep.sum() - 2) * res.stderr
    return LogLogSlope(slope=float(res.slope), low=float(res.slope - half),
                       high=float(res.slope + half), intercept=float(res.intercept))


# ------------------------------------------------------------------- prediction fits
#: The prediction intervals' nominal coverage.
COVERAGE = 0.9


def numerical_hessian(f, theta: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Central-difference Hessian of a scalar function at ``theta``."""
    n = len(theta)
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            e_i, e_j = np.eye(n)[i] * h, np.eye(n)[j] * h
            H[i, j] = H[j, i] = (f(theta + e_i + e_j) - f(theta + e_i - e_j)
                                 - f(theta - e_i + e_j) + f(theta - e_i - e_j)) / (4 * h * h)
    return H


def flat_free_inverse(H: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """The inverse of a symmetric matrix on its positive eigen-directions (the others, where
    the likelihood is flat or not at a minimum, are left out)."""
    w, v = np.linalg.eigh((H + H.T) / 2)
    keep = w > tol * max(w.max(), 1e-300)
    return (v[:, keep] / w[keep]) @ v[:, keep].T


@dataclass(frozen=True)
class LogLawFit:
    """Latent steps ~ N(a log(b x), sigma^2), recorded at or above 0, with the covariance of
    (log a, log b), and its prediction interval

        mu(x) -+ t_{1-gamma/2, n-3} sqrt(s^2 + grad' Cov grad),   grad = d mu / d(log a, log b),

    clipped at 0 (s^2 = sigma^2 n / (n - 3), Cov the inverse Hessian of the negative
    log-likelihood: :func:`fit_steps`)."""

    a: float
    b: float
    sigma: float
    cov: np.ndarray
    groups: int

    def latent(self, x: float) -> float:
        return float(log_model(x, self.a, self.b))

    def mean(self, x: float) -> float:
        """The predicted steps: the latent law's value, or 0 where it lies below."""
        return max(self.latent(x), 0.0)

    def interval(self, x: float, coverage: float = COVERAGE) -> tuple[float, float]:
        """The prediction interval of the class docstring (clipped at 0, as steps are)."""
        mu = self.latent(x)
        grad = np.array([mu, self.a])          # d mu / d log a, d mu / d log b
        sd = np.sqrt(self.sigma ** 2 + max(float(grad @ self.cov @ grad), 0.0))
        half = stats.t.ppf(0.5 + coverage / 2, max(self.groups - 3, 1)) * sd
        return max(mu - half, 0.0), max(mu + half, 0.0)


def fit_steps(x: np.ndarray, y: StepIntervals) -> LogLawFit:
    """The censoring-aware fit of the log law (:func:`fit_log_censored`) and the covariance of
    (log a, log b): the inverse Hessian of the negative log-likelihood in (log a, log b,
    log sigma), flat directions left out; sigma corrected for the ML estimate's bias."""
    x = np.asarray(x, float)
    f = fit_log_censored(x, y)
    theta = np.log([f.a, f.b, f.sigma])
    cov = flat_free_inverse(numerical_hessian(log_law_nll(x, y), theta))[:2, :2]
    sigma = f.sigma * np.sqrt(len(x) / max(len(x) - 3, 1))     # the ML estimate's bias
    return LogLawFit(f.a, f.b, sigma, cov, len(x))


@dataclass(frozen=True)
class PowerLawFit:
    """log A = intercept + slope log x + N(0, sd^2), by least squares; the interval is
    exp(u + v log x -+ t_{1-gamma/2, n-2} s sqrt(1 + h(x))) with the leverage
    h(x) = 1/n + (log x - mean log x)^2 / S_xx."""

    intercept: float
    slope: float
    sd: float
    groups: int
    log_x_mean: float
    sxx: float

    def mean(self, x: float) -> float:
        return float(np.exp(self.intercept + self.slope * np.log(x))) if x > 0 else np.nan

    def interval(self, x: float, coverage: float = COVERAGE) -> tuple[float, float]:
        if not x > 0:
            return np.nan, np.nan
        lx = np.log(x)
        leverage = 1 / self.groups + (lx - self.log_x_mean) ** 2 / self.sxx
        half = stats.t.ppf(0.5 + coverage / 2, self.groups - 2) * self.sd * np.sqrt(1 + leverage)
        centre = self.intercept + self.slope * lx
        return float(np.exp(centre - half)), float(np.exp(centre + half))


def fit_amplitude(x: np.ndarray, amplitude: np.ndarray) -> PowerLawFit | None:
    """The log-log fit over the groups with A > 0 and x > 0 (None with fewer than 3, or no
    spread in x)."""
    x, amplitude = np.asarray(x, float), np.asarray(amplitude, float)
    keep = (x > 0) & (amplitude > 0) & np.isfinite(amplitude)
    if keep.sum() < 3 or np.ptp(np.log(x[keep])) == 0:
        return None
    lx, la = np.log(x[keep]), np.log(amplitude[keep])
    res = stats.linregress(lx, la)
    residual = la - (res.intercept + res.slope * lx)
    sd = float(np.sqrt((residual ** 2).sum() / max(len(lx) - 2, 1)))
    return PowerLawFit(float(res.intercept), float(res.slope), sd, len(lx), float(lx.mean()),
                       float(((lx - lx.mean()) ** 2).sum()))
