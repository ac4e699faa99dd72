"""The tables the book shows, derived from the stages' tables.

Training and scores: accuracy, clipping, the extreme points, the label-noise control. Unlearning:
the ``steps`` table (each group's status and steps to unlearn at every level and design, and its
divergence response fit; :func:`group_steps`), the fits of steps and of the response against the
privacy loss (:mod:`punl.analysis.fits`), the disagreement groups and the partial correlation of claim 3,
the controlled barriers of claim 4, the per-point fractions against their null, and utility.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from . import fits
from ..study.barriers import barrier_heights
from ..core.config import LEVELS
from ..study.groups import group_kind, is_heldout
from ..engine.ledger import Ledger
from ..study.mia import group_status, looks_adjusted, steps_to_unlearn
from ..core.tables import STEPS, UnlearnTables


# ------------------------------------------------------------------------- numbers in prose
def fmt(value, digits: int = 3) -> str:
    """A number as the book prints it: integers whole (with thousands separators), other
    numbers to ``digits`` significant digits without trailing zeros, and without an exponent
    from 0.001 to a million; ``n/a`` for a missing (None or NaN) or infinite value; anything
    else as its text."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if not np.isfinite(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.{max(digits - 1, 0)}e}"
    decimals = max(digits - 1 - int(np.floor(np.log10(magnitude))), 0)
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def percent(share: float, digits: int = 2) -> str:
    """A share in [0, 1] as a percentage to ``digits`` significant digits (``74%``,
    ``0.17%``); ``n/a`` when missing."""
    return "n/a" if share is None or not np.isfinite(share) else f"{fmt(100 * share, digits)}%"


def listing(items: list[str], empty: str = "none") -> str:
    """``a``, ``a and b``, ``a, b and c``; ``empty`` for no items."""
    items = list(items)
    if not items:
        return empty
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def trend(rho: float, low: float, high: float) -> str:
    """``rises`` or ``falls`` when the interval [low, high] of a correlation excludes 0, else
    ``shows no clear trend``."""
    if np.isfinite(low) and low > 0:
        return "rises"
    if np.isfinite(high) and high < 0:
        return "falls"
    return "shows no clear trend"


# ---------------------------------------------------------------------------------- training
def final_accuracy(ledger: Ledger) -> pd.DataFrame:
    """Mean, sd, min and max over runs of the train and test accuracy at the last record."""
    return pd.DataFrame({split: pd.Series(getattr(ledger, f"{split}_acc")[:, -1]).agg(
        ["mean", "std", "min", "max"]) for split in ("train", "test")}).T


def clipping_summary(ledger: Ledger, clip: float) -> pd.Series:
    """How often clipping binds: over (run, record, point) entries, over points at least once,
    and over points clipped at more than half of their entries."""
    over = ledger.grad_norm > clip
    per_point = over.mean(axis=(0, 1))
    return pd.Series({"fraction of (run, record, point) norms clipped": float(over.mean()),
                      "points clipped at least once": float((per_point > 0).mean()),
                      "points clipped at more than half of their entries":
                          float((per_point > 0.5).mean())})


def extreme_norm_summary(ledger: Ledger, flipped: np.ndarray, n: int = 5) -> pd.DataFrame:
    """The n points with the lowest and highest average unclipped norm (mean over runs and
    records): their mean average norm and how many are flipped."""
    avg = ledger.grad_norm.mean(axis=(0, 1))
    order = np.argsort(avg)
    chosen = {f"lowest {n}": order[:n], f"highest {n}": order[-n:]}
    return pd.DataFrame({"average norm": [avg[idx].mean() for idx in chosen.values()],
                         "flipped among them": [int(flipped[idx].sum()) for idx in chosen.values()]},
                        index=list(chosen))


def distribution_summary(values: pd.Series) -> pd.Series:
    """Zero values, range, 10/50/90% quantiles and ties at the maximum of a score column."""
    q = values.quantile([0.1, 0.5, 0.9])
    return pd.Series({"points with zero loss": int((values == 0).sum()), "minimum": values.min(),
                      "10%": q[0.1], "median": q[0.5], "90%": q[0.9], "maximum": values.max(),
                      "points tied at the maximum": int((values == values.max()).sum())})


# ------------------------------------------------------------------------------ label noise
def label_noise_control(scores: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Flipped against clean points for each score column: the two means and a one-sided
    Mann-Whitney U test of 'flipped points score higher' (empty without both kinds)."""
    flipped = scores.flipped.astype(bool)
    if not flipped.any() or flipped.all():
        return pd.DataFrame(columns=["score", "mean flipped", "mean clean", "U", "p-value"])
    rows = []
    for column in columns:
        test = stats.mannwhitneyu(scores.loc[flipped, column], scores.loc[~flipped, column],
                                  alternative="greater")
        rows.append({"score": column, "mean flipped": scores.loc[flipped, column].mean(),
                     "mean clean": scores.loc[~flipped, column].mean(),
                     "U": float(test.statistic), "p-value": float(test.pvalue)})
    return pd.DataFrame(rows)


def flipped_share_of_top(scores: pd.DataFrame, column: str, fraction: float = 0.1) -> float:
    """Share of flipped points among the ``fraction`` of points with the highest ``column``."""
    top = scores[column] >= scores[column].quantile(1 - fraction)
    return float(scores.flipped.astype(bool)[top].mean())


# ---------------------------------------------------------------------------- steps table
def _status_and_steps(steps: np.ndarray, adjusted_p: np.ndarray, level: float):
    distinguishable = adjusted_p <= level
    k, censored = steps_to_unlearn(steps, distinguishable)
    return group_status(distinguishable), int(k), bool(censored)


def group_steps(tables: UnlearnTables, levels=LEVELS) -> pd.DataFrame:
    """The ``steps`` table: for every group, method, design and level, the group's status and
    steps to unlearn (distinguishable: adjusted p <= level), and the fit
    E(k) = A exp(-c k) + floor of its excess divergence E = D - (the null's mean at the same
    checkpoint), with the steps at which the fit reaches the null's 95% quantile (the median
    over checkpoints of q95 - mean)."""
    meta = tables.groups.set_index(["score", "group"])
    rows = []
    for (score, group, method, design), a in tables.attack.groupby(
            ["score", "group", "method", "design"], sort=False):
        a = a.sort_values("step")
        k = a.step.to_numpy()
        excess = (a.divergence - a.divergence_null_mean).to_numpy()
        fit = fits.fit_decay(k, excess)
        target = float(np.median(a.divergence_null_q95 - a.divergence_null_mean))
        info = meta.loc[(score, group)]
        for level in levels:
            status, steps, censored = _status_and_steps(k, a.adjusted_p.to_numpy(), level)
            rows.append({"score": score, "group": group, "kind": info.kind, "method": method,
                         "level": level, "design": design,
                         "group_score_median": info.group_score_median, "status": status,
                         "steps_to_unlearn": steps, "censored": censored,
                         "mia_acc_step0": float(a.mia_acc.iloc[0]),
                         "adjusted_p_step0": float(a.adjusted_p.iloc[0]),
                         "response_amplitude": fit.amplitude, "response_rate": fit.rate,
                         "response_floor": fit.floor, "steps_to_null_q95": fit.steps_to(target)})
    return STEPS.frame(rows)


def select(steps: pd.DataFrame, method: str, level: float, design: str = "all",
           kind: str | None = "quantile") -> pd.DataFrame:
    """The rows of the ``steps`` table for one method, level and design (and kind of group)."""
    rows = steps[(steps.method == method) & (steps.level == level) & (steps.design == design)]
    return rows if kind is None else rows[rows.kind == kind]


def with_score(rows: pd.DataFrame, points: pd.DataFrame, scores: pd.DataFrame,
               column: str) -> pd.DataFrame:
    """``rows`` with ``p``: each group's median of the scores column ``column`` over its points
    (as listed in the ``points`` table); the group's median at another order of the privacy
    loss, for instance."""
    members = points.drop_duplicates(["score", "group", "index"])
    values = scores.set_index("index")[column]
    medians = members.assign(v=values.loc[members["index"]].to_numpy()).groupby(
        ["score", "group"]).v.median()
    return rows.assign(p=[float(medians[(s, g)]) for s, g in zip(rows.score, rows.group)])


# ------------------------------------------------------------------------------ claim 2, 5
@dataclass(frozen=True)
class StepsFit:
    """The censoring-aware fits of groups' steps against their P (:func:`steps_fits`)."""

    log_a: float                 # the log law a log(b P): a
    log_b: float                 # and b
    log_likelihood_log: float    # the log law's censored log-likelihood
    line_slope: float            # the line c + d P: d
    log_likelihood_line: float   # the line's censored log-likelihood
    spearman: float              # Spearman's rho of steps with P
    spearman_p: float            # its two-sided p-value
    groups: int                  # the groups fitted
    never_distinguishable: int   # of which never distinguishable (steps at or below 0)
    censored: int                # and censored at the budget


def steps_fits(rows: pd.DataFrame, checkpoints: np.ndarray) -> StepsFit:
    """Censoring-aware fits of steps against ``p`` (log and line), and Spearman's rho."""
    intervals = fits.StepIntervals.from_steps(rows.steps_to_unlearn, rows.censored,
                                              rows.status == "never distinguishable", checkpoints)
    log = fits.fit_log_censored(rows.p.to_numpy(), intervals)
    line = fits.fit_line_censored(rows.p.to_numpy(), intervals)
    rho, p_value = fits.spearman(rows.p, rows.steps_to_unlearn)
    return StepsFit(log_a=log.a, log_b=log.b, log_likelihood_log=log.log_likelihood,
                    line_slope=line.slope, log_likelihood_line=line.log_likelihood,
                    spearman=rho, spearman_p=p_value, groups=len(rows),
                    never_distinguishable=int((rows.status == "never distinguishable").sum()),
                    censored=int(rows.censored.sum()))


@dataclass(frozen=True)
class Headline:
    """What the book's front figure shows of one run (:func:`headline`)."""

    rows: pd.DataFrame           # the quantile groups' steps rows, with their P as ``p``
    fit: StepsFit                # the censoring-aware fits of their steps
    slope: fits.LogLogSlope      # the slope of log A on log P


def headline(steps: pd.DataFrame, points: pd.DataFrame, scores: pd.DataFrame, method: str,
             level: float, score: str, checkpoints: np.ndarray) -> Headline:
    """What the book's front figure shows of one run: the quantile groups of ``method`` at
    ``level`` placed by their median ``score`` (``rows``), the censoring-aware fits of their
    steps (``fit``, as for claim 2) and the slope of log A on log P (``slope``)."""
    rows = with_score(select(steps, method, level), points, scores, score)
    return Headline(rows=rows, fit=steps_fits(rows, checkpoints),
                    slope=fits.log_log_slope(rows.p, rows.response_amplitude))


def responding_curves(attack: pd.DataFrame, method: str, design: str = "all"):
    """Checkpoints and the excess divergence curves of every group (of any kind but the
    held-out requests) whose step-0 divergence exceeds its null's 95% quantile."""
    curves, k = [], None
    a = attack[(attack.method == method) & (attack.design == design)]
    for (_, group), g in a.groupby(["score", "group"], sort=False):
        if is_heldout(group_kind(group)):
            continue
        g = g.sort_values("step")
        if g.divergence.iloc[0] > g.divergence_null_q95.iloc[0]:
            curves.append((g.divergence - g.divergence_null_mean).to_numpy())
            k = g.step.to_numpy()
    return k, curves


@dataclass(frozen=True)
class ResponseSummary:
    """How the response amplitude A scales with P (:func:`response_summary`)."""

    spearman: float              # Spearman's rho of A with P over the groups
    spearman_p: float            # its two-sided p-value
    log_log_slope: float         # the slope of log A on log P
    slope_low: float             # its 95% interval
    slope_high: float
    responding_groups: int       # the method's groups that respond at step 0
    shared_rate: float           # the decay rate shared by them (NaN: fewer than two)
    shared_rate_p: float         # the F-test's p-value against a rate per group


def response_summary(rows: pd.DataFrame, attack: pd.DataFrame) -> ResponseSummary:
    """How the response amplitude A scales with ``p`` over the groups of ``rows`` (Spearman,
    slope of log A on log P) and whether one decay rate fits every group of the method that
    responds (step-0 divergence above its null's 95% quantile; quantile groups or not)."""
    rho, p_value = fits.spearman(rows.p, rows.response_amplitude)
    slope = fits.log_log_slope(rows.p, rows.response_amplitude)
    method, design = rows.method.iloc[0], rows.design.iloc[0]
    k, curves = responding_curves(attack, method, design)
    shared = fits.shared_rate_test(k, curves) if len(curves) >= 2 else \
        fits.SharedRateTest(shared_rate=np.nan, f=np.nan, p_value=np.nan)
    return ResponseSummary(spearman=rho, spearman_p=p_value, log_log_slope=slope.slope,
                           slope_low=slope.low, slope_high=slope.high,
                           responding_groups=len(curves), shared_rate=shared.shared_rate,
                           shared_rate_p=shared.p_value)


# ---------------------------------------------------------------------------------- claim 3
def disagreement_comparison(tables: UnlearnTables, steps: pd.DataFrame, primary: str,
                            baselines: list[str], method: str, level: float,
                            design: str = "all") -> pd.DataFrame:
    """Per baseline b: the step-0 attack accuracy, divergence and steps of the group where the
    privacy loss ranks points above b (``p_over_b``) and of the reverse group (``b_over_p``);
    the accuracy difference with a 95% interval from the two groups' bootstrap intervals; and
    which group is the harder one (``tie`` when the interval holds 0)."""
    a0 = tables.attack[(tables.attack.step == 0) & (tables.attack.method == method)
                       & (tables.attack.design == design) & (tables.attack.score == primary)]
    a0 = a0.set_index("group")
    st = select(steps, method, level, design, kind=None).set_index("group")
    rows = []
    for b in baselines:
        p_side, b_side = f"p_over_{b}", f"{b}_over_p"
        if p_side not in a0.index or b_side not in a0.index:
            continue
        diff = a0.mia_acc[p_side] - a0.mia_acc[b_side]
        se = np.hypot(*[(a0.mia_ci_high[g] - a0.mia_ci_low[g]) / (2 * 1.96) for g in (p_side, b_side)])
        low, high = diff - 1.96 * se, diff + 1.96 * se
        rows.append({"baseline": b, "acc_p_over": a0.mia_acc[p_side],
                     "acc_baseline_over": a0.mia_acc[b_side], "difference": diff, "low": low,
                     "high": high, "divergence_p_over": a0.divergence[p_side],
                     "divergence_baseline_over": a0.divergence[b_side],
                     "steps_p_over": st.steps_to_unlearn[p_side],
                     "steps_baseline_over": st.steps_to_unlearn[b_side],
                     "harder": "privacy loss" if low > 0 else b if high < 0 else "tie"})
    return pd.DataFrame(rows)


def point_response(tables: UnlearnTables, method: str, step: int = 0) -> pd.DataFrame:
    """Each point of the quantile groups with its Gaussian-fit KL divergence at ``step``."""
    quantile = tables.groups[tables.groups.kind == "quantile"][["score", "group"]]
    pts = tables.points[(tables.points.method == method) & (tables.points.step == step)]
    return pts.merge(quantile, on=["score", "group"])[["index", "group", "flipped", "kl"]]


def partial_correlations(response: pd.DataFrame, scores: pd.DataFrame, primary: str,
                         baselines: list[str], rng: np.random.Generator,
                         n_boot: int = 300) -> pd.DataFrame:
    """Per baseline b: the partial Spearman correlation of each point's divergence with the
    privacy loss given b, and of the divergence with b given the privacy loss, with bootstrap
    intervals over points."""
    merged = response.merge(scores, on="index")
    rows = []
    for b in baselines:
        cols = [merged[c].to_numpy() for c in ("kl", primary, b)]

        def given(idx, x=1, z=2):
            return fits.partial_spearman(cols[0][idx], cols[x][idx], cols[z][idx])

        every = np.arange(len(merged))
        lo, hi = fits.bootstrap_interval(given, len(merged), n_boot, rng)
        blo, bhi = fits.bootstrap_interval(lambda i: given(i, 2, 1), len(merged), n_boot, rng)
        rows.append({"baseline": b, "points": len(merged), "p_given_baseline": given(every),
                     "low": lo, "high": hi, "baseline_given_p": given(every, 2, 1),
                     "baseline_low": blo, "baseline_high": bhi})
    return pd.DataFrame(rows)


def hardest_m(steps: pd.DataFrame, method: str, level: float) -> pd.DataFrame:
    """The top-m group of every score: status, steps, step-0 attack accuracy and response
    amplitude (design ``all``)."""
    top = select(steps, method, level, "all", kind="top")
    cols = ["score", "status", "steps_to_unlearn", "mia_acc_step0", "response_amplitude"]
    return top[cols].set_index("score").sort_values(["steps_to_unlearn", "mia_acc_step0"],
                                                    ascending=False)


# ---------------------------------------------------------------------------------- claim 4
def controlled_barriers(barriers: pd.DataFrame, method: str, step: int = 0) -> pd.DataFrame:
    """Per pair: the barrier on the forget points minus the barrier on their class-matched
    control points along the same path, for clean and flipped points apart, with the loss gap
    and distance beside."""
    b = barriers[(barriers.method == method) & (barriers.step == step)]
    keys = ["score", "group", "partner", "pair", "points"]
    if b.empty:
        return pd.DataFrame(columns=[*keys, "barrier_forget", "barrier_control",
                                     "loss_gap_forget", "distance", "controlled_barrier"])
    b = b.assign(side=b.subset.str.split("-").str[0], points=b.subset.str.split("-").str[1])
    wide = b.pivot_table(index=keys, columns="side", values=["barrier", "loss_gap"]).dropna()
    dist = b.groupby(keys).distance.first()
    out = pd.DataFrame({"barrier_forget": wide["barrier"]["forget"],
                        "barrier_control": wide["barrier"]["control"],
                        "loss_gap_forget": wide["loss_gap"]["forget"]}).join(dist)
    out["controlled_barrier"] = out.barrier_forget - out.barrier_control
    return out.reset_index()


def barrier_by_group(controlled: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """Mean over pairs of the controlled barrier, loss gap and distance, per group, partner and
    kind of point, with the group's kind and median score."""
    mean = controlled.groupby(["score", "group", "partner", "points"]).agg(
        controlled_barrier=("controlled_barrier", "mean"), barrier_forget=("barrier_forget", "mean"),
        loss_gap=("loss_gap_forget", "mean"), distance=("distance", "mean"),
        pairs=("pair", "size")).reset_index()
    return mean.merge(groups[["score", "group", "kind", "group_score_median"]],
                      on=["score", "group"])


#: Claim 4 leaves out groups with fewer points of a kind (clean or flipped) than this.
MIN_BARRIER_POINTS = 10


def group_point_curves(curves: pd.DataFrame, partner: str, kind: str) -> dict:
    """Per group: the forget and control points' loss curves of every pair at step 0, arrays
    [pairs, lambdas, slots] (the ``barrier_points`` table of one score's groups, one partner and
    kind of point; group names repeat across scores, so ``curves`` must hold a single score)."""
    if curves.score.nunique() > 1:
        raise ValueError(f"curves: one score's groups expected, got {sorted(curves.score.unique())}")
    out = {}
    c = curves[curves.partner == partner]
    for group, g in c.groupby("group", sort=False):
        sides = []
        for side in ("forget", "control"):
            s = g[g.subset == f"{side}-{kind}"].sort_values(["pair", "lambda", "slot"])
            shape = (s.pair.nunique(), s["lambda"].nunique(), s.slot.nunique())
            sides.append(s.loss.to_numpy(float).reshape(shape) if len(s) else None)
        if sides[0] is not None and sides[1] is not None:
            out[group] = tuple(sides)
    return out


def normalised_controlled_barrier(forget: np.ndarray, control: np.ndarray,
                                  lambdas: np.ndarray) -> float:
    """The mean over pairs of the barrier on the forget points minus the barrier on their
    controls (each the barrier of the points' mean loss along the pair's path), divided by the
    mean over pairs of the forget points' endpoint loss gap |L_F(0) - L_F(1)|:

        (mean_r [barrier(F_r) - barrier(C_r)]) / mean_r |L_F,r(0) - L_F,r(1)|."""
    f, c = forget.mean(-1), control.mean(-1)                           # [pairs, lambdas]
    controlled = barrier_heights(lambdas, f) - barrier_heights(lambdas, c)
    return float(controlled.mean() / max(np.abs(f[:, 0] - f[:, -1]).mean(), 1e-12))


@dataclass(frozen=True)
class BarrierTrend:
    """The trend of the normalised controlled barrier with P (:func:`barrier_trend`)."""

    spearman: float              # Spearman's rho over the groups (NaN: fewer than 3)
    low: float                   # its bootstrap 95% interval
    high: float
    groups: int                  # the quantile groups with enough points of the kind


def barrier_trend(curves: pd.DataFrame, groups: pd.DataFrame, p: dict, partner: str,
                  kind: str, rng: np.random.Generator, n_boot: int = 300) -> BarrierTrend:
    """Spearman's rho between each quantile group's ``p`` and its normalised controlled barrier
    (:func:`normalised_controlled_barrier`), over the quantile groups with at least
    :data:`MIN_BARRIER_POINTS` points of the kind, with a bootstrap interval that resamples
    the model pairs (jointly across groups) and each group's points (a forget point with its
    control)."""
    quantile = set(groups[groups.kind == "quantile"].group)
    arrays = {g: a for g, a in group_point_curves(curves, partner, kind).items()
              if g in quantile and g in p and a[0].shape[2] >= MIN_BARRIER_POINTS}
    if len(arrays) < 3:
        return BarrierTrend(spearman=np.nan, low=np.nan, high=np.nan, groups=len(arrays))
    lambdas = np.sort(curves["lambda"].unique())
    names = list(arrays)
    x = np.array([p[g] for g in names])

    def rho(pairs=None, slots=None) -> float:
        values = []
        for g in names:
            f, c = arrays[g]
            if pairs is not None:
                f, c = f[pairs][:, :, slots[g]], c[pairs][:, :, slots[g]]
            values.append(normalised_controlled_barrier(f, c, lambdas))
        return fits.spearman(x, values)[0]

    n_pairs = arrays[names[0]][0].shape[0]
    boots = [rho(rng.integers(0, n_pairs, n_pairs),
                 {g: rng.integers(0, arrays[g][0].shape[2], arrays[g][0].shape[2])
                  for g in names}) for _ in range(n_boot)]
    boots = np.asarray([b for b in boots if np.isfinite(b)])
    low, high = (np.quantile(boots, [0.025, 0.975]) if len(boots) >= n_boot // 2
                 else (np.nan, np.nan))
    return BarrierTrend(spearman=rho(), low=float(low), high=float(high), groups=len(names))


# ------------------------------------------------------------------------------- per point
def point_fractions(tables: UnlearnTables, level: float, checkpoints: np.ndarray,
                    budget: int) -> pd.DataFrame:
    """Per group and method: the share of its points at step 0, unlearned within K/10 and
    censored by the per-point criterion (distinguishable at a checkpoint where Welch's p,
    Bonferroni-adjusted over the checkpoints, is at most the level),
    beside the step-0 and censored shares of the same criterion under relabelled models."""
    rows = []
    for (score, group, method), pts in tables.points.groupby(["score", "group", "method"],
                                                              sort=False):
        p = pts.pivot_table(index="step", columns="index", values="welch_p").sort_index()
        steps, censored = steps_to_unlearn(p.index.to_numpy(),
                                           looks_adjusted(p.to_numpy(), 0) <= level)
        null = tables.point_null[(tables.point_null.score == score)
                                 & (tables.point_null.group == group)
                                 & (tables.point_null.method == method)
                                 & np.isclose(tables.point_null.level, level)]
        rows.append({"score": score, "group": group, "method": method,
                     "step0_fraction": float((steps == 0).mean()),
                     "quick_fraction": float((steps <= budget / 10).mean()),
                     "censored_fraction": float(censored.mean()),
                     "null_step0_fraction": float(null.step0_fraction.iloc[0]),
                     "null_censored_fraction": float(null.censored_fraction.iloc[0])})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------- utility
def utility(unlearning: pd.DataFrame) -> pd.DataFrame:
    """Mean forget / retain / test accuracy per method, model kind and step."""
    cols = ["forget_acc", "retain_acc", "test_acc"]
    return unlearning.groupby(["method", "model", "step"])[cols].mean().reset_index()
