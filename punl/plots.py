"""The book's figures: each function draws one figure from tables the package computed.

Functions take tables (and the few settings they show), return the matplotlib Figure, and never
compute a number the tables do not hold, apart from the summaries a figure draws (means and
quantiles over runs).
"""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .ledger import Ledger


def set_style() -> None:
    """The book's plotting style."""
    sns.set_theme(context="notebook", style="whitegrid")
    matplotlib.rcParams.update({"figure.dpi": 90, "savefig.bbox": "tight"})


def _palette(names) -> dict:
    names = list(names)
    return dict(zip(names, sns.color_palette("tab10" if len(names) <= 10 else "tab20",
                                             len(names))))


# -------------------------------------------------------------------------------- training
def training_curves(ledger: Ledger) -> plt.Figure:
    """Train and test accuracy of every run at every ledger record."""
    curves = pd.concat([
        pd.DataFrame({"step": ledger.record_steps, "run": r, "split": split,
                      "accuracy": getattr(ledger, f"{split}_acc")[r]})
        for r in range(ledger.runs) for split in ("train", "test")])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(curves, x="step", y="accuracy", hue="split", units="run", estimator=None,
                 alpha=0.6, lw=1, ax=ax)
    ax.set(title="Accuracy per run during noisy-SGD training", ylim=(0, 1.02),
           xlabel="training step")
    return fig


def clipped_fraction_curve(ledger: Ledger, clip: float) -> plt.Figure:
    """At every record, the fraction of (run, point) norms above C."""
    frac = (ledger.grad_norm > clip).mean(axis=(0, 2))
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(ledger.record_steps, frac, marker="o")
    ax.set(title=f"Fraction of per-example norms above C = {clip:g}", xlabel="training step",
           ylabel="fraction clipped")
    return fig


def norm_trajectories(ledger: Ledger, flipped: np.ndarray, clip: float, n: int = 5) -> plt.Figure:
    """Left: the unclipped norm (mean over runs) of the n points with the lowest and highest
    average norm (dashed: flipped). Right: median and inter-quartile band, clean vs flipped."""
    steps, norms = ledger.record_steps, ledger.grad_norm.mean(axis=0)  # [records, N]
    order = np.argsort(norms.mean(axis=0))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for (group, idx), colour in zip({f"lowest {n}": order[:n], f"highest {n}": order[-n:]}.items(),
                                    ("tab:blue", "tab:red")):
        for i in idx:
            left.plot(steps, norms[:, i], color=colour, ls="--" if flipped[i] else "-",
                      label=group if i == idx[0] else None)
    left.set(title="Lowest and highest average norm (dashed: flipped)", xlabel="training step",
             ylabel="gradient norm (mean over runs)", yscale="log")
    left.legend()
    for kind, mask, colour in (("clean", ~flipped, "tab:blue"), ("flipped", flipped, "tab:red")):
        if mask.any():
            q25, q50, q75 = np.percentile(norms[:, mask], [25, 50, 75], axis=1)
            right.plot(steps, q50, color=colour, label=f"{kind} ({mask.sum()} points)")
            right.fill_between(steps, q25, q75, color=colour, alpha=0.2)
    right.set(title="Median and inter-quartile range", xlabel="training step")
    right.legend()
    for ax in (left, right):
        ax.axhline(clip, color="k", ls=":", lw=1)
    return fig


# ---------------------------------------------------------------------------------- scores
def privacy_histogram(scores: pd.DataFrame, column: str) -> plt.Figure:
    """Histogram of a privacy-loss column on a log axis, clean and flipped points apart (each
    normalised to its own count); points with zero loss are left out of the log axis."""
    positive = scores[scores[column] > 0].assign(
        **{"training label": lambda t: np.where(t.flipped, "flipped", "clean")})
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.histplot(positive, x=column, hue="training label", hue_order=["clean", "flipped"],
                 log_scale=True, stat="density", common_norm=False, element="step", bins=40,
                 ax=ax)
    ax.set(title=f"Per-instance privacy loss ({column})", xlabel=f"{column} (log scale)")
    return fig


def _show_image(ax, image: np.ndarray) -> None:
    if image.ndim == 3 and image.shape[0] == 3:
        ax.imshow(((image - image.min()) / (np.ptp(image) or 1)).transpose(1, 2, 0))
    else:
        ax.imshow(image.reshape(image.shape[-2:]), cmap="gray_r")
    ax.axis("off")


def extreme_images(images: np.ndarray, scores: pd.DataFrame, column: str,
                   n: int = 8) -> plt.Figure:
    """The n training images with the lowest ``column`` (top row) and the n with the highest
    (bottom row), titled with the training label, whether it was flipped, and the score."""
    ranked = scores.sort_values(column).index
    fig, axes = plt.subplots(2, n, figsize=(1.5 * n, 4.4))
    for ax, i in [*zip(axes[0], ranked[:n]), *zip(axes[1], ranked[-n:][::-1])]:
        _show_image(ax, images[i])
        row = scores.loc[i]
        mark = f"flipped (was {row.true_label})" if row.flipped else "clean"
        ax.set_title(f"label {row.label}\n{mark}\nP = {row[column]:.3g}", fontsize=8,
                     color="tab:red" if row.flipped else "k")
    fig.suptitle(f"Lowest (top) and highest (bottom) {column}; flipped labels in red")
    return fig


def correlation_heatmap(rho: pd.DataFrame) -> plt.Figure:
    """A Spearman correlation matrix as an annotated heatmap."""
    fig, ax = plt.subplots(figsize=(8, 6.5))
    sns.heatmap(rho, annot=True, fmt=".2f", cmap="vlag", vmin=-1, vmax=1, ax=ax,
                annot_kws={"size": 7})
    ax.set(title="Spearman correlation between scores")
    return fig


# ------------------------------------------------------------------------------ unlearning
STATUS_MARKERS = {"unlearned": dict(marker="o", facecolors="C0", edgecolors="C0"),
                  "censored": dict(marker="o", facecolors="none", edgecolors="C0"),
                  "never distinguishable": dict(marker="x", color="C0")}


def attack_curves(attack: pd.DataFrame, groups: list[str], methods: list[str],
                  level: float) -> plt.Figure:
    """Held-out attack accuracy against the step for ``groups`` (design ``all``), one panel per
    method: the bootstrap band, filled markers where the group is distinguishable (adjusted p
    <= level), and the permutation null's mean and 95% quantile (grey, dashed)."""
    fig, axes = plt.subplots(1, len(methods), figsize=(5.6 * len(methods), 4), sharey=True,
                             squeeze=False)
    palette = _palette(groups)
    a = attack[(attack.design == "all") & attack.group.isin(groups)]
    for ax, method in zip(axes[0], methods):
        m = a[a.method == method]
        for group in groups:
            g = m[m.group == group].sort_values("step")
            if g.empty:
                continue
            x, colour = g.step + 1, palette[group]
            ax.fill_between(x, g.mia_ci_low, g.mia_ci_high, color=colour, alpha=0.12)
            ax.plot(x, g.mia_acc, color=colour, lw=1, label=group)
            hit = g.adjusted_p <= level
            ax.scatter(x[hit], g.mia_acc[hit], color=colour, s=18)
            ax.scatter(x[~hit], g.mia_acc[~hit], facecolors="none", edgecolors=colour, s=18)
        null = m.groupby("step")[["null_mean", "null_q95"]].mean()
        ax.plot(null.index + 1, null.null_mean, color="grey", lw=1, ls=":")
        ax.plot(null.index + 1, null.null_q95, color="grey", lw=1, ls="--",
                label="null: mean, 95%")
        ax.set(xscale="log", title=method, xlabel="unlearning step k + 1",
               ylabel="attack accuracy (held-out)")
    axes[0][-1].legend(title="group", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def steps_against_score(rows: pd.DataFrame, fitted: dict, budget: int, score: str) -> plt.Figure:
    """Per method: each quantile group's steps to unlearn against ``p`` (filled: unlearned,
    open: censored at K, x: never distinguishable) with the censoring-aware fits of the log
    law and of a line (``fitted[method]`` from :func:`punl.analysis.steps_fits`)."""
    methods = list(fitted)
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 3.8), squeeze=False)
    for ax, method in zip(axes[0], methods):
        g = rows[rows.method == method]
        for status, style in STATUS_MARKERS.items():
            part = g[g.status == status]
            ax.scatter(part.p, part.steps_to_unlearn, label=status, **style)
        f = fitted[method]
        if np.isfinite(f["log_a"]) and len(g):
            p = np.geomspace(max(g.p.min(), 1e-12), g.p.max(), 200)
            ax.plot(p, f["log_a"] * np.log1p(f["log_b"] * p), color="C1",
                    label=f"a log(bP+1), loglik {f['log_likelihood_log']:.1f}")
        ax.axhline(budget, color="grey", lw=0.8, ls=":")
        ax.set(title=method, xlabel=f"group median {score} (log scale)", xscale="log",
               ylabel="steps to unlearn")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def response_curves(attack: pd.DataFrame, rows: pd.DataFrame, method: str) -> plt.Figure:
    """The mean Gaussian-fit KL divergence of each quantile group against the step (points),
    its fit A exp(-ck) + floor (lines) and the null's 95% quantile (grey band, mean over
    groups)."""
    from .fits import exp_decay
    fig, ax = plt.subplots(figsize=(7, 4.2))
    palette = _palette(list(rows.group))
    a = attack[(attack.method == method) & (attack.design == "all")]
    for row in rows.itertuples():
        g = a[a.group == row.group].sort_values("step")
        colour = palette[row.group]
        ax.scatter(g.step + 1, g.divergence, color=colour, s=14)
        k = np.geomspace(1, g.step.max() + 1, 200) - 1
        ax.plot(k + 1, exp_decay(k, row.response_amplitude, row.response_rate,
                                 row.response_floor), color=colour, lw=1, label=row.group)
    null = a[a.group.isin(rows.group)].groupby("step").divergence_null_q95.mean()
    ax.fill_between(null.index + 1, 0, null, color="grey", alpha=0.2, label="null 95%")
    ax.set(xscale="log", yscale="symlog", xlabel="unlearning step k + 1",
           ylabel="mean KL divergence (unlearned || retrained)", title=method)
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def amplitude_against_score(rows: pd.DataFrame, score: str) -> plt.Figure:
    """The response amplitude A of each quantile group against its ``p``, per method, log-log."""
    fig, ax = plt.subplots(figsize=(5.6, 4))
    for method, g in rows.groupby("method", sort=False):
        positive = g[g.response_amplitude > 0]
        ax.plot(positive.p, positive.response_amplitude, marker="o", label=method)
    ax.set(xscale="log", yscale="log", xlabel=f"group median {score} (log scale)",
           ylabel="response amplitude A", title="Amplitude of the divergence response")
    ax.legend()
    return fig


def point_fraction_bars(fractions: pd.DataFrame) -> plt.Figure:
    """Per group: the share of points at step 0 and censored by the per-point criterion,
    against the same shares under relabelled models (the floor)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, what in zip(axes, ("step0_fraction", "censored_fraction")):
        x = np.arange(len(fractions))
        ax.bar(x - 0.2, fractions[what], width=0.4, label="measured")
        ax.bar(x + 0.2, fractions[f"null_{what}"], width=0.4, color="grey", label="null floor")
        ax.set_xticks(x, fractions.group, rotation=90, fontsize=8)
        ax.set(title=what.replace("_", " "), ylabel="share of points")
    axes[0].legend()
    fig.tight_layout()
    return fig


def disagreement_bars(comparison: pd.DataFrame) -> plt.Figure:
    """Step-0 attack accuracy of the two disagreement groups of every baseline."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = np.arange(len(comparison))
    ax.bar(x - 0.2, comparison.acc_p_over, width=0.4, label="ranked high by P")
    ax.bar(x + 0.2, comparison.acc_baseline_over, width=0.4, label="ranked high by the baseline")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, comparison.baseline)
    ax.set(ylabel="attack accuracy at step 0", ylim=(0.4, None),
           title="Where P and a baseline disagree")
    ax.legend(fontsize=8)
    return fig


def utility_curves(util: pd.DataFrame) -> sns.FacetGrid:
    """Forget, retain and test accuracy against the step, per method and kind of model."""
    long = util.melt(id_vars=["method", "model", "step"], var_name="set", value_name="accuracy")
    long["step + 1"] = long.step + 1
    grid = sns.relplot(long, x="step + 1", y="accuracy", hue="set", style="model", col="method",
                       kind="line", height=3.2)
    grid.set(xscale="log")
    return grid


# -------------------------------------------------------------------------------- barriers
def path_losses_figure(paths: pd.DataFrame, method: str, step: int = 0) -> sns.FacetGrid:
    """Mean loss (over model pairs) along the path from the unlearned (at step 0: the
    original) model to its partner, per group, on forget and control points; one panel per
    partner and kind of point."""
    p = paths[(paths.method == method) & (paths.step == step)]
    p = p.assign(side=p.subset.str.split("-").str[0], points=p.subset.str.split("-").str[1])
    return sns.relplot(p, x="lambda", y="loss", hue="group", style="side", col="partner",
                       row="points", kind="line", height=3.0, aspect=1.2)


def controlled_barrier_figure(by_group: pd.DataFrame, score: str) -> plt.Figure:
    """Per quantile group: the controlled barrier (forget minus control), the loss gap and the
    parameter distance against the group's median score, per partner and kind of point."""
    q = by_group[by_group.kind == "quantile"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for ax, col in zip(axes, ["controlled_barrier", "loss_gap", "distance"]):
        sns.lineplot(q, x="group_score_median", y=col, hue="partner", style="points",
                     marker="o", ax=ax)
        ax.set(xscale="log", xlabel=f"group median {score} (log scale)")
    axes[0].axhline(0, color="grey", lw=0.8, ls=":")
    fig.tight_layout()
    return fig


def barrier_trajectories(barriers: pd.DataFrame, method: str) -> sns.FacetGrid:
    """The mean controlled barrier (forget minus control, clean points) between the model
    after k unlearning steps and its age-matched partner, per group."""
    from .analysis import controlled_barriers
    steps = sorted(barriers.step.unique())
    frames = [controlled_barriers(barriers, method, k).assign(step=k) for k in steps]
    c = pd.concat(frames, ignore_index=True)
    c = c[c.points == "clean"].assign(**{"step + 1": lambda t: t.step + 1})
    grid = sns.relplot(c, x="step + 1", y="controlled_barrier", hue="group", col="partner",
                       kind="line", errorbar=None, height=3.3)
    grid.set(xscale="log")
    return grid


# ------------------------------------------------------------------------------ prediction
KIND_MARKERS = {"heldout_random": "s", "heldout_mixed": "D", "heldout_class": "^"}


def _steps_axis(ax, budget: int) -> None:
    ax.set_yscale("symlog", linthresh=1)
    ax.axhline(budget, color="grey", lw=0.8, ls=":")


def cost_curves(calibration: pd.DataFrame, curves: pd.DataFrame, heldout: pd.DataFrame,
                budget: int, score: str) -> plt.Figure:
    """One panel per aggregation: each calibration group's steps against its predictor value x
    (filled: unlearned, open: censored at K, x: never distinguishable), the fitted law with its
    prediction interval (band), and the held-out requests (grey, by kind), which the fit did
    not see."""
    aggregations = list(dict.fromkeys(curves.aggregation))
    fig, axes = plt.subplots(1, len(aggregations), figsize=(5 * len(aggregations), 3.9),
                             sharey=True, squeeze=False)
    for ax, how in zip(axes[0], aggregations):
        c = curves[curves.aggregation == how]
        ax.fill_between(c.x, c.steps_low, np.minimum(c.steps_high, budget * 1.5), color="C1",
                        alpha=0.2, label="90% prediction interval")
        ax.plot(c.x, c.steps, color="C1", label="a log(bx + 1)")
        g = calibration[calibration.aggregation == how]
        for status, style in STATUS_MARKERS.items():
            part = g[g.status == status]
            ax.scatter(part.x, part.steps_to_unlearn, label=f"calibration: {status}", **style)
        h = heldout[heldout.aggregation == how]
        for kind, marker in KIND_MARKERS.items():
            part = h[h.kind == kind]
            ax.scatter(part.x, part.measured_steps, marker=marker, color="0.35", s=22,
                       label=kind.replace("heldout_", "held out: "))
        _steps_axis(ax, budget)
        ax.set(xscale="log", title=f"{how} of {score}", xlabel=f"{how} over the group (log)",
               ylabel="steps to unlearn")
    axes[0][-1].legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7)
    fig.tight_layout()
    return fig


def predicted_against_measured(heldout: pd.DataFrame, score: str, budget: int) -> plt.Figure:
    """One panel per aggregation of ``score``: each held-out request's predicted steps with its
    interval (capped at 1.5 K: more than K) against its measured steps (censored at 1.5 K)."""
    h = heldout[heldout.score == score]
    aggregations = list(dict.fromkeys(h.aggregation))
    fig, axes = plt.subplots(1, len(aggregations), figsize=(4.6 * len(aggregations), 4),
                             sharex=True, sharey=True, squeeze=False)
    cap = 1.5 * budget
    for ax, how in zip(axes[0], aggregations):
        g = h[h.aggregation == how]
        measured = np.where(g.censored, cap, g.measured_steps)
        for kind, marker in KIND_MARKERS.items():
            keep = (g.kind == kind).to_numpy()
            if not keep.any():
                continue
            predicted = np.minimum(g.predicted_steps[keep], cap)
            ax.errorbar(measured[keep], predicted,
                        yerr=[predicted - g.steps_low[keep],
                              np.minimum(g.steps_high[keep], cap) - predicted],
                        fmt=marker, ms=5, capsize=2, alpha=0.8,
                        label=kind.replace("heldout_", ""))
        ax.plot([0, cap], [0, cap], color="grey", lw=0.8, ls="--")
        ax.set_xscale("symlog", linthresh=1)
        _steps_axis(ax, budget)
        ax.axvline(budget, color="grey", lw=0.8, ls=":")
        ax.set(title=f"{how} of {score}", xlabel="measured steps (censored at 1.5 K)",
               ylabel="predicted steps, 90% interval")
    axes[0][-1].legend(title="held-out requests", fontsize=8)
    fig.tight_layout()
    return fig


def validation_bars(validation: pd.DataFrame, coverage: float = 0.9) -> plt.Figure:
    """Per predictor (score, aggregation) over all held-out requests: Spearman's rho of
    predicted and measured steps, the coverage of the intervals (dotted: nominal) and their
    mean width, and the mean absolute error in steps."""
    v = validation[validation.requests == "all"]
    panels = [("steps_spearman", "rank correlation (Spearman)"),
              ("steps_coverage", "interval coverage"), ("steps_width", "mean interval width"),
              ("steps_mae", "mean absolute error (steps)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    for ax, (column, title) in zip(axes, panels):
        sns.barplot(v, x="score", y=column, hue="aggregation", ax=ax)
        ax.set(title=title, xlabel="", ylabel="")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        if ax is not axes[-1]:
            ax.get_legend().remove()
    axes[1].axhline(coverage, color="k", ls=":", lw=1)
    axes[1].set_ylim(0, 1.05)
    axes[0].axhline(0, color="k", lw=0.8)
    fig.tight_layout()
    return fig


def adaptive_against_fixed(fixed: pd.DataFrame, comparison: pd.DataFrame) -> plt.Figure:
    """Success rate against total steps over the held-out requests: every fixed budget (line,
    labelled with the budget) and the adaptive rule with each predictor (markers)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(fixed.total_steps, fixed.success, marker="o", color="grey", label="fixed budget")
    for row in fixed.itertuples():
        ax.annotate(str(row.budget), (row.total_steps, row.success), fontsize=7,
                    textcoords="offset points", xytext=(3, -9))
    markers = dict(zip(comparison.score.unique(), "osD^v<>"))
    colours = _palette(comparison.aggregation.unique())
    for row in comparison.itertuples():
        ax.scatter(row.adaptive_total_steps, row.adaptive_success, marker=markers[row.score],
                   color=colours[row.aggregation], s=45, label=f"{row.score}, {row.aggregation}")
    ax.set(xscale="symlog", xlabel="total unlearning steps over the held-out requests",
           ylabel="share of requests unlearned", ylim=(-0.03, 1.05),
           title="Adaptive rule against fixed budgets")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7)
    fig.tight_layout()
    return fig
