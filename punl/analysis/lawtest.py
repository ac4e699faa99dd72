"""The log law against a line, on steps recorded at checkpoints with chance flags.

**Recorded categories.** A point's (or group's) steps are recorded as one of C + 1 categories:
0 never distinguishable (latent steps at or below 0), j unlearned at checkpoint k_j (latent in
(k_{j-1}, k_j]), C censored (latent above K) (:func:`category_edges`, :func:`categories`,
:func:`threshold_steps`).

**Chance flags.** A point indistinguishable from checkpoint c on can be flagged by chance at a
later look and recorded later. Under the assumption that these flags fall on its later looks as
they fall on the same looks of a point that never differs (each look's threshold is fixed), the
recorded category is R = max(c, F) with F distributed as the placebo's recorded categories,
independent of c (:class:`FlaggedSteps`):

    P(R = r) = P(c = r) P(F <= r) + P(c < r) P(F = r).

**The test** (:func:`law_test`): a parametric-bootstrap likelihood-ratio test of the log law
against a line (not nested), with the power and each law's goodness of fit
(:func:`binned_pearson`) from the same simulations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from .fits import (LOG_SQRT_2PI, CensoredLineFit, CensoredLogFit, StepIntervals, fit_line_censored,
                   fit_log_censored, log_mass, log_model)


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
    """The likelihood of recorded steps with chance flags (module docstring): the recorded
    category is R = max(c, F), c the category of the latent Gaussian steps and F a chance flag's
    category, independent of c, with probabilities ``flags`` (F = 0: no flag). Per point,

        P(R = r) = P(c = r) P(F <= r) + P(c < r) P(F = r),

    with its gradient in mu and log sigma from those of the Gaussian cdf (the two terms
    weighted by their shares of the point's probability). ``flags`` = (1, 0, .., 0) gives the
    plain interval likelihood of :class:`CensoredNormal`."""

    def __init__(self, y: StepIntervals, checkpoints: np.ndarray, flags: np.ndarray):
        if len(flags) != len(checkpoints) + 1:
            raise ValueError(f"flags: one probability per recorded category ("
                             f"{len(checkpoints) + 1}), got {len(flags)}")
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
        log_c = log_mass(a, b)
        log_below = special.log_ndtr(a)
        with np.errstate(invalid="ignore"):
            log_l = np.logaddexp(log_c + self.log_at_most, log_below + self.log_at)
            share_c = np.exp(log_c + self.log_at_most - log_l)
            share_b = np.exp(log_below + self.log_at - log_l)
            share_b[np.isnan(share_b)] = 0.0          # no mass below (-inf - -inf)
            finite_a, finite_b = np.isfinite(a), np.isfinite(b)
            log_phi_a = -0.5 * a * a - LOG_SQRT_2PI
            log_phi_b = -0.5 * b * b - LOG_SQRT_2PI

            def ratio(finite, log_phi, log_mass):   # phi(v) / mass, 0 at infinite v
                return np.exp(np.minimum(np.where(finite, log_phi - log_mass, -np.inf), 700.0))

            ca, cb = ratio(finite_a, log_phi_a, log_c), ratio(finite_b, log_phi_b, log_c)
            ba = ratio(finite_a, log_phi_a, log_below)
        a0, b0 = np.where(finite_a, a, 0.0), np.where(finite_b, b, 0.0)   # a phi(a) = 0 at inf
        grad_mu = (share_c * (ca - cb) - share_b * ba) / sigma
        grad_sigma = share_c * (a0 * ca - b0 * cb) - share_b * a0 * ba
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

    log_law: CensoredLogFit  # the log law fitted to the observed steps
    line: CensoredLineFit    # the line fitted to them
    statistic: float     # log-likelihood of the log law minus the line's
    p_line: float        # small: the line is rejected in favour of the log law
    p_log: float         # small: the log law is rejected in favour of the line
    power: float         # P(p_line <= level) when the fitted log law holds
    gof_log: float       # goodness-of-fit p-value of the log law
    gof_line: float      # goodness-of-fit p-value of the line
    simulations: int     # simulated data sets per law


@dataclass(frozen=True)
class _BothFits:
    """The log law and the line fitted to the same steps (:func:`_fit_both`)."""

    log: CensoredLogFit          # the log law's fit
    line: CensoredLineFit        # the line's fit
    mu: dict[str, np.ndarray]    # each law's latent mean steps at the points' P, by law name
    sigma: dict[str, float]      # each law's noise sd, by law name ("log", "line")


def fit_laws(p: np.ndarray, y: StepIntervals, checkpoints: np.ndarray,
             flags: np.ndarray | None = None) -> _BothFits:
    """The log law and the line fitted by maximum likelihood to the steps ``y`` recorded at
    ``checkpoints`` (with false flags of probabilities ``flags``: :class:`FlaggedSteps`), as
    :func:`law_test` fits them before simulating; ``.log`` and ``.line`` are the fits."""
    ck = np.asarray(checkpoints, float)
    flags = np.eye(len(ck) + 1)[0] if flags is None else np.asarray(flags, float)
    return _fit_both(np.asarray(p, float), y, FlaggedSteps(y, ck, flags))


def _fit_both(p: np.ndarray, y: StepIntervals, likelihood,
              start: _BothFits | None = None) -> _BothFits:
    log = fit_log_censored(p, y, None if start is None else start.log, likelihood)
    line = fit_line_censored(p, y, None if start is None else start.line, likelihood)
    return _BothFits(log=log, line=line,
                     mu={"log": log_model(p, log.a, log.b),
                         "line": line.intercept + line.slope * p},
                     sigma={"log": log.sigma, "line": line.sigma})


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
        probs = recorded_probabilities(fit.mu[model], fit.sigma[model], ck, flags)
        return binned_pearson(p, recorded, probs, coarse)

    gof_obs = {m: pearson(observed, m, categories(y, ck)) for m in ("log", "line")}
    lam, gof = {"log": [], "line": []}, {"log": [], "line": []}
    for truth in ("line", "log"):
        for _ in range(simulations):
            latent = observed.mu[truth] + observed.sigma[truth] * rng.standard_normal(len(p))
            r = np.maximum(categories(threshold_steps(latent, ck), ck),
                           rng.choice(len(flags), size=len(p), p=flags))
            ys = category_intervals(r, ck)
            refit = _fit_both(p, ys, make(ys), observed)
            lam[truth].append(refit.log.log_likelihood - refit.line.log_likelihood)
            gof[truth].append(pearson(refit, truth, r))
    lam = {k: np.asarray(v) for k, v in lam.items()}
    share = lambda hits: float((1 + np.sum(hits)) / (1 + simulations))  # noqa: E731
    statistic = observed.log.log_likelihood - observed.line.log_likelihood
    critical = np.quantile(lam["line"], 1 - level)
    return LawTest(log_law=observed.log, line=observed.line, statistic=float(statistic),
                   p_line=share(lam["line"] >= statistic), p_log=share(lam["log"] <= statistic),
                   power=float(np.mean(lam["log"] > critical)),
                   gof_log=share(np.asarray(gof["log"]) >= gof_obs["log"]),
                   gof_line=share(np.asarray(gof["line"]) >= gof_obs["line"]),
                   simulations=simulations)
