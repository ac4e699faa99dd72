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

from .analysis import barrier_summary, fit_line, log_model
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
def mia_curves(unlearning: pd.DataFrame, score: str, methods: list[str],
               threshold: float) -> plt.Figure:
    """Held-out MIA accuracy with its bootstrap band against the step, per group of ``score``,
    one panel per method; the dashed line is the unlearning threshold."""
    mia = (unlearning[(unlearning.model == "unlearned") & (unlearning.score == score)]
           .groupby(["method", "group", "step"])[["mia_acc", "mia_ci_low", "mia_ci_high"]]
           .first().reset_index())
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 3.8), sharey=True,
                             squeeze=False)
    palette = _palette(sorted(mia.group.unique()))
    for ax, method in zip(axes[0], methods):
        for group, g in mia[mia.method == method].groupby("group"):
            ax.fill_between(g.step + 1, g.mia_ci_low, g.mia_ci_high, color=palette[group],
                            alpha=0.12)
            ax.plot(g.step + 1, g.mia_acc, marker="o", ms=3, color=palette[group], label=group)
        ax.axhline(threshold, ls="--", c="k", lw=1)
        ax.set(xscale="log", title=method, xlabel="unlearning step k + 1",
               ylabel="MIA accuracy (held-out)")
    axes[0][-1].legend(title="group", bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


def steps_against_score(steps: pd.DataFrame, fits: pd.DataFrame, score: str) -> plt.Figure:
    """Per method: each quantile group's steps to unlearn against its median score (open
    markers: censored at K) with the fitted log and line curves of ``fits``."""
    fig, axes = plt.subplots(1, len(fits), figsize=(5 * len(fits), 3.6), squeeze=False)
    for ax, (_, fit) in zip(axes[0], fits.iterrows()):
        g = steps[(steps.score == score) & (steps.method == fit.method)
                  & steps.group.str.match(r"q\d")]
        for censored in (False, True):
            part = g[g.censored == censored]
            ax.scatter(part.group_score_median, part.steps_to_unlearn, edgecolors="C0",
                       facecolors="none" if censored else "C0",
                       label="censored" if censored else "unlearned")
        if np.isfinite(fit.log_a):
            p = np.geomspace(g.group_score_median.min(), g.group_score_median.max(), 200)
            ax.plot(p, log_model(p, fit.log_a, fit.log_b),
                    label=f"a log(bP+1), R2={fit.log_r2:.2f}")
            line = fit_line(g.group_score_median, g.steps_to_unlearn)
            ax.plot(p, line["intercept"] + line["slope"] * p, ls=":",
                    label=f"line, R2={fit.line_r2:.2f}")
        ax.set(title=fit.method, xlabel=f"group median {score} (log scale)",
               ylabel="steps to unlearn", xscale="log")
        ax.legend(fontsize=8)
    return fig


def hardest_m_bars(hard: pd.DataFrame) -> plt.Figure:
    """Steps to unlearn and mean MIA accuracy of the top-m group of every score, per method."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3), sharey=True)
    hard["steps_to_unlearn"].plot.barh(ax=axes[0])
    axes[0].set_xlabel("steps to unlearn (top-m group)")
    hard["mean_mia_acc"].plot.barh(ax=axes[1], legend=False)
    axes[1].set_xlabel("mean MIA accuracy over checkpoints")
    axes[1].set_xlim(0.45, None)
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
def path_losses_figure(barriers: pd.DataFrame, score: str, method: str) -> sns.FacetGrid:
    """Loss along the path from the original to its retrained partner (step 0), one curve per
    group of ``score``, one panel per partner."""
    b0 = barriers[(barriers.step == 0) & (barriers.score == score) & (barriers.method == method)]
    return sns.relplot(b0, x="lambda", y="loss", hue="group", col="partner", kind="line",
                       marker="o", height=3.3)


def barrier_scatter(step0: pd.DataFrame, score: str) -> plt.Figure:
    """Barrier, loss gap and parameter distance at step 0 against the group's median score."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, col in zip(axes, ["barrier", "loss_gap", "distance"]):
        sns.scatterplot(step0, x="group_score_median", y=col, hue="partner", ax=ax)
        ax.set(xscale="log", xlabel=f"group median {score} (log scale)")
    fig.tight_layout()
    return fig


def barrier_trajectories(barriers: pd.DataFrame, score: str) -> sns.FacetGrid:
    """The barrier between the model after k unlearning steps and its age-matched partner."""
    traj = barrier_summary(barriers)
    traj = traj[traj.score == score].assign(**{"step + 1": lambda t: t.step + 1})
    grid = sns.relplot(traj, x="step + 1", y="barrier", hue="group", style="partner",
                       col="method", kind="line", height=3.3)
    grid.set(xscale="log")
    return grid
