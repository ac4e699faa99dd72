"""The per-point study's figures: each draws one figure from the tables the package computed.

The paper's first two figures on points: steps to unlearn against the privacy loss (every
training point, the censored marked, the fitted log law and line, the placebo's floor beside),
and the hardest m points by P against the hardest m by each baseline. Beside them the
distribution of steps against the placebo's and the per-point test's power. Sizes and styles
follow :mod:`punl.publish.plots`.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.fits import recorded_log_model
from .plots.style import WIDTH, legend_below, log_ticks, plain, score_label
from ..core.tables import privacy_order


def _steps_axis(ax, checkpoints: np.ndarray) -> None:
    """A symlog steps axis with a tick at every checkpoint."""
    top = float(checkpoints[-1])
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(-0.3, top * 1.6)
    ax.set_yticks(list(checkpoints))
    ax.yaxis.set_major_formatter(plt.FuncFormatter(plain))
    ax.yaxis.set_minor_formatter(plt.NullFormatter())


def steps_against_privacy(rows: pd.DataFrame, placebo: pd.DataFrame, law, checkpoints,
                          score: str, rng_seed: int = 0) -> plt.Figure:
    """Left: every training point's recorded steps against its privacy loss (``p``), jittered
    within its checkpoint interval so that points on one checkpoint do not hide each other;
    censored points at the top (triangles); the fitted log law and line
    (``law``: :class:`punl.analysis.lawtest.LawTest`). Right: per tenth of the points by P, the share
    distinguishable at some checkpoint, against the placebo's share (its floor: what the
    criterion flags with nothing to find)."""
    ck = np.asarray(checkpoints, float)
    fig, (ax, share_ax) = plt.subplots(1, 2, figsize=(WIDTH, 3.4),
                                       gridspec_kw={"width_ratios": [1.7, 1]})
    rng = np.random.default_rng(rng_seed)
    steps = rows.steps_to_unlearn.to_numpy(float)
    lower = np.concatenate([[0.0], ck])[np.searchsorted(ck, steps)]
    jitter = np.where(steps > 0, lower + (steps - lower) * rng.uniform(0.15, 1, len(steps)),
                      rng.uniform(-0.25, 0.25, len(steps)))
    kinds = {"never distinguishable": dict(color="0.65", s=5, marker="."),
             "unlearned": dict(color="C0", s=9, marker="o", alpha=0.6),
             "censored": dict(color="C3", s=22, marker="^")}
    for status, style in kinds.items():
        part = rows.status.to_numpy() == status
        y = np.where(status == "censored", ck[-1] * 1.3, jitter[part]) if part.any() else []
        ax.scatter(rows.p[part], y, label=f"{status} ({int(part.sum())})", **style)
    grid = np.geomspace(max(rows.p.min(), 1e-9), rows.p.max(), 200)
    ax.plot(grid, recorded_log_model(grid, law.log_law.a, law.log_law.b),
            color="C1", lw=1.6, label="log law max(0, a log bP)")
    ax.plot(grid, np.clip(law.line.intercept + law.line.slope * grid, 0, None),
            color="C2", lw=1.2, ls="--", label="line c + dP")
    ax.set(xscale="log", xlabel=score_label(score), ylabel="steps to unlearn (symlog)")
    _steps_axis(ax, ck)
    log_ticks(ax)
    bins = pd.qcut(rows.p.rank(method="first"), 10, labels=False)
    flagged = rows.status != "never distinguishable"
    shares = flagged.groupby(bins).mean()
    centres = rows.p.groupby(bins).median()
    share_ax.plot(centres, shares, marker="o", color="C0", label="training points")
    floor = float((placebo.status != "never distinguishable").mean()) if len(placebo) else np.nan
    share_ax.axhline(floor, color="C3", ls=":", label=f"placebo ({floor:.1%})")
    share_ax.set(xscale="log", xlabel="P (tenth's median)", ylabel="share distinguishable",
                 ylim=(0, max(0.05, float(shares.max()) * 1.15)))
    log_ticks(share_ax)
    fig.tight_layout()
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = share_ax.get_legend_handles_labels()
    legend_below(fig, handles=handles + h2, labels=labels + l2, ncol=3)
    return fig


def hardest_bars(means: pd.DataFrame) -> plt.Figure:
    """Mean steps to unlearn (censored counted at K) of the hardest m points by each score,
    with 95% bootstrap intervals, one panel per m (``means`` from
    :func:`punl.analysis.pointclaims.hardest_means`)."""
    shares = sorted(means.share.unique())
    fig, axes = plt.subplots(1, len(shares), figsize=(WIDTH, 2.9), sharey=True, squeeze=False)
    for ax, share in zip(axes[0], shares):
        part = means[means.share == share]
        x = np.arange(len(part))
        colours = ["C1" if privacy_order(s) is not None else "C0" for s in part.score]
        ax.bar(x, part["mean"], color=colours, width=0.6)
        ax.errorbar(x, part["mean"], yerr=[part["mean"] - part.low, part.high - part["mean"]],
                    fmt="none", ecolor="black", capsize=3, lw=1)
        ax.set_xticks(x, [f"P, α = {privacy_order(s):g}" if privacy_order(s) is not None else s
                          for s in part.score],
                      rotation=20, ha="right")
        ax.set(title=f"hardest {share:.0%} (m = {int(part.m.iloc[0])})",
               ylabel="mean steps to unlearn" if share == shares[0] else None)
    fig.tight_layout()
    return fig


def step_distribution(rows: pd.DataFrame, placebo: pd.DataFrame, checkpoints) -> plt.Figure:
    """The share of points recorded at each checkpoint (and censored), training points against
    the placebo's test points."""
    ck = list(np.asarray(checkpoints, int))
    labels = ["never"] + [str(k) for k in ck[1:]] + ["censored"]

    def shares(frame):
        cat = np.where(frame.status == "never distinguishable", 0, np.where(
            frame.censored, len(ck), np.searchsorted(ck, frame.steps_to_unlearn)))
        return np.bincount(cat, minlength=len(ck) + 1) / max(len(frame), 1)

    fig, ax = plt.subplots(figsize=(WIDTH, 2.8))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, shares(rows), width=0.4, color="C0", label="training points")
    ax.bar(x + 0.2, shares(placebo), width=0.4, color="C3", label="placebo (test points)")
    ax.set_yscale("log")
    ax.set_xticks(x, labels)
    ax.set(xlabel="recorded steps to unlearn", ylabel="share of points (log scale)")
    fig.tight_layout()
    legend_below(fig, ax, ncol=2)
    return fig


def effect_distribution(rows: pd.DataFrame, mde: float) -> plt.Figure:
    """The training points' step-0 effects |d| against the smallest effect the per-point test
    detects with 80% power (``mde``)."""
    fig, ax = plt.subplots(figsize=(WIDTH, 2.6))
    effect = rows.effect_step0.abs()
    ax.hist(effect, bins=np.linspace(0, max(float(effect.max()), mde) * 1.05, 50), color="C0")
    ax.axvline(mde, color="C3", ls="--", label=f"detected with 80% power ({mde:.2f})")
    ax.set(xlabel="|d| at step 0 (mean difference of phi over its pooled sd)",
           ylabel="points", yscale="log")
    fig.tight_layout()
    legend_below(fig, ax, ncol=1)
    return fig
