"""The per-point study's steps and the claims it decides (claims 1, 2 and 3 on points).

**Steps per point.** At each checkpoint a point has Welch's p-value (:mod:`punl.study.pointwise`).
Bonferroni's adjustment over its C checkpoints (:func:`punl.study.mia.looks_adjusted`) makes it
*distinguishable* where p <= level / C, so a point that never differs is flagged at some
checkpoint with probability at most the level; its steps to unlearn are the first checkpoint
from which it is never flagged again, *censored* at K when it still is at the last one, and it
is *never distinguishable* when it is flagged nowhere (steps in (-inf, 0] for the fits). Across
points nothing is adjusted: every share is read beside the placebo's, the same criterion on
test points that no model trained on, which measures how often it flags a point with nothing
to find (at most the level).

**False flags.** A point that is indistinguishable from checkpoint c on can still be flagged by
chance at a later look, which records it later than c (censored, when the chance flag falls on
the last look). Each look's threshold is fixed, so, where the point's effect is gone from c on,
these flags fall at its looks from c on as the placebo's fall at the same looks: the recorded
step is max(c, F), with F distributed as the placebo's recorded steps
(:func:`flag_distribution`). The fits of claim 2 use that model
(:class:`punl.analysis.lawtest.FlaggedSteps`); a point with a small leftover effect is flagged more
often than this model says.

**Claims on points** (each verdict "supported" only where the data reject the alternative at
:data:`SIGNIFICANCE`, "not supported" only where an interval excludes the claim's direction or
lies within a stated margin, otherwise "inconclusive"; each with its power at the effect measured):

1. Most points unlearn within K/10 steps (the share's one-sided binomial test against 1/2) and a
   small fraction needs at least half the training steps or is censored, more than the placebo
   (one-sided Fisher test). Not supported when the quick share's 95% interval lies below 1/2 or
   the excess of the hard share over the placebo's lies below :data:`HARD_SHARE_MARGIN`
   (Newcombe's interval of a difference of shares), this margin checked first. "Quick" is at the
   study's design: a point the test never resolves counts as unlearned at step 0, so the claim is
   decided only where the design resolves points at all (more training points flagged than
   placebo points, one-sided Fisher test); otherwise inconclusive.
2. Steps grow like a log(bP + 1), latent steps like a log(bP) (:mod:`punl.analysis.fits`): the
   parametric-bootstrap likelihood-ratio test rejects a line for the log law, the log law passes
   its goodness-of-fit check (a veto: a check that must not reject, so it is reported with its
   p-value) and steps rise with P (Spearman). Not supported when the line fits
   better and the same test rejects the log law for it, or steps fall with P. Otherwise (the log
   law fits better but fails its check, say) inconclusive. Power: the chance of rejecting the
   line when the fitted log law holds (:func:`punl.analysis.lawtest.law_test`).
3. The hardest m points by P (m = 5% and 10% of N) take more steps than the hardest m by each
   baseline: the difference of mean steps (censored points at K) with a bootstrap interval over
   points. Supported when every interval lies above 0; not supported when one lies below 0, or
   when a baseline's intervals all lie within +-10% of P's mean steps (:data:`EQUIVALENCE`: that
   baseline picks out points as hard as P's). Beside it, the partial rank correlation of steps
   with P given each baseline.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from . import fits, lawtest
from ..core.config import LAW_SIMULATIONS, LEVELS
from ..study.mia import looks_adjusted, steps_to_unlearn
from .power import minimum_detectable_effect, welch_power, z_power
from ..core.tables import POINT_STEPS

SIGNIFICANCE = 0.05
#: Claim 1 is not supported when at most this share of points (beyond the placebo's) needs
#: close to retraining effort: about 1 in 100, no longer "a small fraction" but practically none.
HARD_SHARE_MARGIN = 0.01
#: The hardest-m sizes of claim 3, as shares of the training points.
HARDEST_SHARES = (0.05, 0.10)
#: Claim 3's equivalence margin: a baseline whose hardest m differ from P's by less than this
#: share of P's mean steps, at 95% confidence and at every m, picks out points as hard as P's.
EQUIVALENCE = 0.10
#: Bootstrap resamples of claim 3 (the log-law test's simulations: ``LAW_SIMULATIONS``, the
#: configuration's default).
BOOTSTRAP = 200


# ------------------------------------------------------------------------------------ steps
def point_steps(tests: pd.DataFrame, levels=LEVELS) -> pd.DataFrame:
    """The ``point_steps`` table: every point's status and steps at every level and design."""
    frames = []
    for (kind, method, design), t in tests.groupby(["set", "method", "design"], sort=False):
        p = t.pivot(index="step", columns="index", values="p_value").sort_index()
        checkpoints, raw = p.index.to_numpy(), p.to_numpy()
        adjusted = looks_adjusted(raw, 0)
        first = t[t.step == checkpoints[0]].set_index("index").loc[p.columns]
        for level in levels:
            flagged = adjusted <= level
            steps, censored = steps_to_unlearn(checkpoints, flagged)
            status = np.where(~flagged.any(0), "never distinguishable",
                              np.where(flagged[-1], "censored", "unlearned"))
            frames.append(pd.DataFrame({
                "set": kind, "index": p.columns.to_numpy(), "method": method, "level": level,
                "design": design, "models": first.models.to_numpy(), "status": status,
                "steps_to_unlearn": steps.astype(int), "censored": censored,
                "p_step0": raw[0], "adjusted_p_step0": adjusted[0],
                "min_adjusted_p": adjusted.min(0), "effect_step0": first.effect.to_numpy(),
                "kl_step0": first.kl.to_numpy()}))
    if not frames:
        return POINT_STEPS.frame([])
    return POINT_STEPS.check(pd.concat(frames, ignore_index=True))


def select_points(steps: pd.DataFrame, level: float, design: str = "all",
                  kind: str = "train") -> pd.DataFrame:
    """One level and design of the ``point_steps`` table, for training or placebo points."""
    return steps[(steps.set == kind) & np.isclose(steps.level, level) & (steps.design == design)]


def with_scores(rows: pd.DataFrame, scores: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Training points' rows with the score ``columns`` of the scores table."""
    return rows.merge(scores[["index", "flipped", *columns]], on="index", how="left")


def intervals(rows: pd.DataFrame, checkpoints: np.ndarray) -> fits.StepIntervals:
    """Each point's steps as an interval on the checkpoints (:class:`punl.analysis.fits.StepIntervals`)."""
    return fits.StepIntervals.from_steps(rows.steps_to_unlearn, rows.censored,
                                         rows.status == "never distinguishable", checkpoints)


@dataclass(frozen=True)
class PlaceboRate:
    """How often the per-point criterion flags a placebo point (:func:`placebo_rate`)."""

    rate: float      # the share of placebo points flagged at some checkpoint
    se: float        # its standard error were the rate the level
    points: int      # the placebo points


def placebo_rate(steps: pd.DataFrame, level: float, design: str = "all") -> PlaceboRate:
    """The share of placebo points flagged at some checkpoint, with its standard error and
    the number of placebo points."""
    placebo = select_points(steps, level, design, "placebo")
    n = len(placebo)
    rate = float((placebo.status != "never distinguishable").mean()) if n else np.nan
    return PlaceboRate(rate=rate, se=float(np.sqrt(level * (1 - level) / n)) if n else np.nan,
                       points=n)


# ---------------------------------------------------------------------------------- claim 1
def quick_and_hard(rows: pd.DataFrame, budget: int, training_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per point: unlearned within K/10 steps (never distinguishable included), and needing at
    least half the training steps or censored."""
    steps, censored = rows.steps_to_unlearn.to_numpy(), rows.censored.to_numpy(bool)
    return (~censored & (steps <= budget / 10)), (censored | (steps >= training_steps / 2))


@dataclass(frozen=True)
class QuickClaim:
    """Claim 1 on points (:func:`quick_claim`); shares are of training points unless named."""

    quick: float             # the share unlearned within K/10 steps
    quick_low: float         # its 95% Wilson interval
    quick_high: float
    quick_p: float           # one-sided binomial p-value of 'more than half'
    hard: float              # the share needing at least T/2 steps or censored
    hard_placebo: float      # the same share of placebo points
    excess: float            # hard - hard_placebo
    excess_low: float        # its 95% Newcombe interval
    excess_high: float
    hard_p: float            # one-sided Fisher p-value of 'hard exceeds hard_placebo'
    points: int              # the training points
    placebo_points: int      # the placebo points
    resolved: bool           # whether more training points than placebo points are flagged
    ok: bool | None          # the verdict: True supported, False not supported, None neither
    power: float             # the power at the effects measured


def quick_claim(train: pd.DataFrame, placebo: pd.DataFrame, budget: int,
                training_steps: int) -> QuickClaim:
    """Claim 1 on points (module docstring): shares, tests, intervals, verdict and power."""
    quick, hard = quick_and_hard(train, budget, training_steps)
    _, hard0 = quick_and_hard(placebo, budget, training_steps)
    n, n0 = len(quick), len(hard0)
    share = quick.mean()
    low, high = stats.binomtest(int(quick.sum()), n).proportion_ci(0.95, "wilson")
    p_quick = stats.binomtest(int(quick.sum()), n, 0.5, alternative="greater").pvalue
    excess, (excess_low, excess_high) = hard.mean() - hard0.mean(), \
        difference_interval(int(hard.sum()), n, int(hard0.sum()), n0)
    p_hard = exceeds(int(hard.sum()), n, int(hard0.sum()), n0)
    flagged, flagged0 = (f.status != "never distinguishable" for f in (train, placebo))
    resolved = exceeds(int(flagged.sum()), n, int(flagged0.sum()), n0) <= SIGNIFICANCE
    ok = None
    if not resolved:            # the design tells no training point from the placebo's
        pass
    elif high < 0.5 or excess_high < HARD_SHARE_MARGIN:
        ok = False
    elif p_quick <= SIGNIFICANCE and p_hard <= SIGNIFICANCE:
        ok = True
    se = (excess_high - excess_low) / (2 * 1.96)
    power = min(z_power(share - 0.5, np.sqrt(share * (1 - share) / n), SIGNIFICANCE, 1),
                z_power(excess, se, SIGNIFICANCE, 1))
    return QuickClaim(quick=float(share), quick_low=float(low), quick_high=float(high),
                      quick_p=float(p_quick), hard=float(hard.mean()),
                      hard_placebo=float(hard0.mean()), excess=float(excess),
                      excess_low=float(excess_low), excess_high=float(excess_high),
                      hard_p=float(p_hard), points=n, placebo_points=n0, resolved=resolved,
                      ok=ok, power=float(power))


def exceeds(k: int, n: int, k0: int, n0: int) -> float:
    """One-sided Fisher exact p-value of 'the share k / n exceeds the share k0 / n0'."""
    return float(stats.fisher_exact([[k, n - k], [k0, n0 - k0]], alternative="greater")[1])


def difference_interval(k: int, n: int, k0: int, n0: int) -> tuple[float, float]:
    """The 95% interval of k / n - k0 / n0 from the two Wilson intervals (Newcombe 1998, method
    10): it stays inside [-1, 1] and keeps its width where a share is 0."""
    p, p0 = k / n, k0 / n0
    (l1, u1), (l0, u0) = (stats.binomtest(k, n).proportion_ci(0.95, "wilson"),
                          stats.binomtest(k0, n0).proportion_ci(0.95, "wilson"))
    return (float(p - p0 - np.hypot(p - l1, u0 - p0)), float(p - p0 + np.hypot(u1 - p, p0 - l0)))


# ---------------------------------------------------------------------------------- claim 2
def flag_distribution(placebo: pd.DataFrame, checkpoints: np.ndarray) -> np.ndarray:
    """The distribution of a chance flag's recorded category (0: no flag), read off the
    placebo's recorded steps (module docstring)."""
    r = lawtest.categories(intervals(placebo, checkpoints), checkpoints)
    return np.bincount(r, minlength=len(checkpoints) + 1) / max(len(r), 1)


@dataclass(frozen=True)
class LogLawClaim:
    """Claim 2 (:func:`log_law_claim`)."""

    law: lawtest.LawTest         # the log law against a line
    spearman: float              # Spearman's rho of the recorded steps with P
    spearman_p: float            # its two-sided p-value
    ok: bool | None              # the verdict: True supported, False not supported, None neither
    power: float                 # the law test's power (:attr:`punl.analysis.lawtest.LawTest.power`)
    flags: np.ndarray | None     # the chance flags' distribution (None: no placebo)
    rows: pd.DataFrame           # the rows the claim was measured on


def log_law_claim(rows: pd.DataFrame, p_column: str, checkpoints: np.ndarray,
                  rng: np.random.Generator, simulations: int = LAW_SIMULATIONS,
                  placebo: pd.DataFrame | None = None) -> LogLawClaim:
    """Claim 2 (module docstring): the law test, Spearman's rho, verdict and power, with the
    ``rows``; with ``placebo`` rows, the recorded steps are modelled with the placebo's false
    flags."""
    p = rows[p_column].to_numpy(float)
    y = intervals(rows, checkpoints)
    rho, rho_p = fits.spearman(p, rows.steps_to_unlearn + rows.censored)
    flags = None if placebo is None or placebo.empty else flag_distribution(placebo, checkpoints)
    law = lawtest.law_test(p, y, checkpoints, rng, simulations, SIGNIFICANCE, flags)
    ok = None
    if (law.p_log <= SIGNIFICANCE and law.statistic < 0) or (rho < 0 and rho_p <= SIGNIFICANCE):
        ok = False
    elif law.p_line <= SIGNIFICANCE and law.gof_log > SIGNIFICANCE and rho > 0 \
            and rho_p <= SIGNIFICANCE:
        ok = True
    return LogLawClaim(law=law, spearman=rho, spearman_p=rho_p, ok=ok, power=law.power,
                       flags=flags, rows=rows)


@dataclass(frozen=True)
class PointOverview:
    """Every training point's steps against P with the two laws fitted to them, and the
    placebo's rows beside (:func:`point_overview`): what the front page draws of a run."""

    rows: pd.DataFrame                 # the training points' rows, P as ``p``
    placebo: pd.DataFrame              # the placebo's rows
    log_law: fits.CensoredLogFit       # the log law fitted as claim 2 fits it
    line: fits.CensoredLineFit         # the line fitted as claim 2 fits it
    checkpoints: np.ndarray            # the checkpoints the steps were recorded at


def point_overview(point_steps: pd.DataFrame, scores: pd.DataFrame, p_column: str, level: float,
                   checkpoints: np.ndarray) -> PointOverview | None:
    """Claim 2's rows at ``level`` (design "all") and its two fits (:func:`punl.analysis.lawtest.fit_laws`
    with the placebo's chance flags), without its simulations: the same fits as
    :func:`log_law_claim` makes. None with fewer than 3 training points."""
    rows = select_points(point_steps, level)
    if len(rows) < 3:
        return None
    rows = with_scores(rows, scores, [p_column]).assign(p=lambda r: r[p_column])
    placebo = select_points(point_steps, level, kind="placebo")
    flags = None if placebo.empty else flag_distribution(placebo, checkpoints)
    fitted = lawtest.fit_laws(rows.p.to_numpy(float), intervals(rows, checkpoints), checkpoints,
                              flags)
    return PointOverview(rows=rows, placebo=placebo, log_law=fitted.log, line=fitted.line,
                         checkpoints=np.asarray(checkpoints))


# ---------------------------------------------------------------------------------- claim 3
def counted_steps(rows: pd.DataFrame, budget: int) -> np.ndarray:
    """Each point's steps as claim 3 averages them: the recorded checkpoint, K when censored."""
    return np.where(rows.censored, budget, rows.steps_to_unlearn).astype(float)


def _top_mean(values: np.ndarray, score: np.ndarray, m: int) -> float:
    """Mean of ``values`` over the m points with the highest score (no score ranks lowest)."""
    ranked = np.nan_to_num(score, nan=-np.inf)
    return float(values[np.argsort(ranked, kind="stable")[-m:]].mean())


def _boot_top_means(values: np.ndarray, score: np.ndarray, m: int, draws) -> np.ndarray:
    """:func:`_top_mean` in every bootstrap resample (the hardest m recut in each)."""
    return np.array([_top_mean(values[d], score[d], m) for d in draws])


def hardest_comparison(rows: pd.DataFrame, p_column: str, baselines: list[str], budget: int,
                       rng: np.random.Generator, n_boot: int = BOOTSTRAP) -> pd.DataFrame:
    """Per baseline and m: mean steps of the hardest m by P and by the baseline, their
    difference with a 95% bootstrap interval over points (the hardest m recut in each
    resample), the interval of the difference relative to P's mean steps (for the equivalence
    margin), its standard error and the power at the difference measured."""
    steps = counted_steps(rows, budget)
    scores = {c: rows[c].to_numpy(float) for c in (p_column, *baselines)}
    n = len(rows)
    draws = [rng.integers(0, n, n) for _ in range(n_boot)]
    out = []
    for share in HARDEST_SHARES:
        m = max(1, round(share * n))
        by_p = _top_mean(steps, scores[p_column], m)
        boot_p = _boot_top_means(steps, scores[p_column], m, draws)
        for b in baselines:
            by_b = _top_mean(steps, scores[b], m)
            boot = boot_p - _boot_top_means(steps, scores[b], m, draws)
            low, high = np.quantile(boot, [0.025, 0.975])
            with np.errstate(divide="ignore", invalid="ignore"):
                relative = np.nanquantile(boot / boot_p, [0.025, 0.975]) \
                    if (boot_p > 0).any() else (np.nan, np.nan)
            se = float(boot.std(ddof=1))
            out.append({"baseline": b, "m": m, "share": share, "steps_p": by_p,
                        "steps_baseline": by_b, "difference": by_p - by_b, "low": float(low),
                        "high": float(high), "relative_low": float(relative[0]),
                        "relative_high": float(relative[1]), "se": se,
                        "power": float(z_power(by_p - by_b, se, SIGNIFICANCE))})
    return pd.DataFrame(out)


def hardest_means(rows: pd.DataFrame, columns: list[str], budget: int,
                  rng: np.random.Generator, n_boot: int = BOOTSTRAP) -> pd.DataFrame:
    """Per score column and m: the mean steps of the hardest m points by that score with a 95%
    bootstrap interval over points (the hardest m recut in each resample)."""
    steps = counted_steps(rows, budget)
    n = len(rows)
    draws = [rng.integers(0, n, n) for _ in range(n_boot)]
    out = []
    for share in HARDEST_SHARES:
        m = max(1, round(share * n))
        for column in columns:
            score = rows[column].to_numpy(float)
            low, high = np.quantile(_boot_top_means(steps, score, m, draws), [0.025, 0.975])
            out.append({"score": column, "share": share, "m": m,
                        "mean": _top_mean(steps, score, m), "low": float(low),
                        "high": float(high)})
    return pd.DataFrame(out)


def partial_step_correlations(rows: pd.DataFrame, p_column: str, baselines: list[str],
                              budget: int, rng: np.random.Generator,
                              n_boot: int = BOOTSTRAP) -> pd.DataFrame:
    """Per baseline: the partial Spearman correlation of each point's steps with P given the
    baseline, with a bootstrap interval over points."""
    steps = counted_steps(rows, budget)
    out = []
    for b in baselines:
        x, z = rows[p_column].to_numpy(float), rows[b].to_numpy(float)
        low, high = fits.bootstrap_interval(
            lambda i: fits.partial_spearman(steps[i], x[i], z[i]), len(rows), n_boot, rng)
        out.append({"baseline": b, "partial_rho": fits.partial_spearman(steps, x, z),
                    "low": low, "high": high})
    return pd.DataFrame(out)


def equivalent_baselines(d: pd.DataFrame) -> list[str]:
    """The baselines whose every interval (each m) of the difference relative to P's mean steps
    lies within +-EQUIVALENCE: they pick out points as hard as P's."""
    inside = (d.relative_low >= -EQUIVALENCE) & (d.relative_high <= EQUIVALENCE)
    return [b for b, ok in inside.groupby(d.baseline, sort=False).all().items() if ok]


@dataclass(frozen=True)
class HardestClaim:
    """Claim 3 on points (:func:`hardest_claim`)."""

    comparison: pd.DataFrame     # :func:`hardest_comparison`: per baseline and m
    partial: pd.DataFrame        # :func:`partial_step_correlations`: per baseline
    ok: bool | None              # the verdict: True supported, False not supported, None neither
    equivalent: list[str]        # the baselines that pick out points as hard as P's
    power: float                 # the smallest power over the comparisons


def hardest_claim(rows: pd.DataFrame, p_column: str, baselines: list[str], budget: int,
                  rng: np.random.Generator) -> HardestClaim:
    """Claim 3 on points (module docstring): the comparisons, verdict and power."""
    d = hardest_comparison(rows, p_column, baselines, budget, rng)
    partial = partial_step_correlations(rows, p_column, baselines, budget, rng)
    # every point recorded alike (all censored, say): no score can pick out anything
    equivalent = equivalent_baselines(d) if np.ptp(counted_steps(rows, budget)) > 0 else []
    ok = False if (d.high < 0).any() or equivalent else True if (d.low > 0).all() else None
    return HardestClaim(comparison=d, partial=partial, ok=ok, equivalent=equivalent,
                        power=float(d.power.min()) if len(d) else np.nan)


# ------------------------------------------------------------------------------------ power
@dataclass(frozen=True)
class DesignPower:
    """The per-point test's power at a run's design (:func:`design_power`)."""

    models_per_side: float       # the median models per side n
    looks: int                   # the checkpoints each point is tested at
    alpha_look: float            # each look's level
    mde: float                   # the smallest standardised step-0 effect found with 80% power
    share_above_mde: float       # the share of points whose measured effect is at least that
    median_power: float          # the median power at the points' measured effects


def design_power(rows: pd.DataFrame, looks: int, level: float) -> DesignPower:
    """The per-point test's power at this design: the median models per side n, each look's
    level (level / looks), the smallest standardised step-0 effect it
    detects with 80% power there, and at the effects the points measured (their step-0 d; an
    optimistic reading, as a measured effect is larger than the true one on average) the share
    of points above that effect and the median power."""
    n = float(np.median(rows.models)) if len(rows) else np.nan
    alpha = level / looks
    mde = minimum_detectable_effect(n, alpha) if np.isfinite(n) else np.nan
    effect = rows.effect_step0.abs().to_numpy()
    each = welch_power(effect, rows.models.to_numpy(), alpha) if len(rows) else np.array([])
    return DesignPower(models_per_side=n, looks=looks, alpha_look=alpha, mde=mde,
                       share_above_mde=float((effect >= mde).mean()) if len(rows) else np.nan,
                       median_power=float(np.median(each)) if len(rows) else np.nan)
