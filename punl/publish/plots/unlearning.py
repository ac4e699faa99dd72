"""Figures of the unlearning chapter: the attack over steps, steps and response against the
score, per-point fractions, utility."""
from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter

from ...analysis.fits import recorded_log_model
from .style import WIDTH, legend_below, legend_right, log_ticks, ordered_palette, plain, score_label

if TYPE_CHECKING:
    from ...analysis.measures import StepsFit


STATUS_MARKERS = {"unlearned": dict(marker="o", facecolors="C0", edgecolors="C0"),
                  "censored": dict(marker="o", facecolors="none", edgecolors="C0"),
                  "never distinguishable": dict(marker="x", color="C0")}


def attack_curves(attack: pd.DataFrame, groups: list[str], methods: list[str],
                  level: float) -> plt.Figure:
    """Held-out attack accuracy against the step for ``groups`` (design ``all``), one panel per
    method: the bootstrap band, filled markers where the group is distinguishable (adjusted p
    <= level), and the permutation null's mean and 95% quantile (grey, dashed)."""
    fig, axes = plt.subplots(1, len(methods), figsize=(WIDTH, 3.4), sharey=True,
                             squeeze=False)
    palette = ordered_palette(groups)
    a = attack[(attack.design == "all") & attack.group.isin(groups)]
    for ax, method in zip(axes[0], methods):
        m = a[a.method == method]
        for group in groups:
            g = m[m.group == group].sort_values("step")
            if g.empty:
                continue
            x, colour = g.step + 1, palette[group]
            ax.fill_between(x, g.mia_ci_low, g.mia_ci_high, color=colour, alpha=0.1)
            ax.plot(x, g.mia_acc, color=colour, lw=1, label=group)
            hit = g.adjusted_p <= level
            ax.scatter(x[hit], g.mia_acc[hit], color=colour, s=14)
            ax.scatter(x[~hit], g.mia_acc[~hit], facecolors="none", edgecolors=colour, s=14)
        null = m.groupby("step")[["null_mean", "null_q95"]].mean()
        ax.plot(null.index + 1, null.null_mean, color="grey", lw=1, ls=":", label="null mean")
        ax.plot(null.index + 1, null.null_q95, color="grey", lw=1, ls="--",
                label="null 95% quantile")
        ax.set(xscale="log", title=method, xlabel="unlearning step k + 1",
               ylabel="attack accuracy (held-out)")
        log_ticks(ax)
    fig.tight_layout()
    legend_below(fig, axes[0][-1], ncol=6, title=f"group (filled: distinguishable at {level:g})")
    return fig


def steps_against_score(rows: pd.DataFrame, fitted: dict[str, StepsFit], budget: int,
                        score: str) -> plt.Figure:
    """Per method: each quantile group's steps to unlearn against ``p`` (filled: unlearned,
    open: censored at K, x: never distinguishable) with the censoring-aware fits of the log
    law and of a line (``fitted[method]`` from :func:`punl.analysis.measures.steps_fits`)."""
    methods = list(fitted)
    fig, axes = plt.subplots(1, len(methods), figsize=(WIDTH, 3.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        g = rows[rows.method == method]
        for status, style in STATUS_MARKERS.items():
            part = g[g.status == status]
            ax.scatter(part.p, part.steps_to_unlearn, label=status, **style)
        f = fitted[method]
        if np.isfinite(f.log_a) and len(g):
            p = np.geomspace(max(g.p.min(), 1e-12), g.p.max(), 200)
            ax.plot(p, recorded_log_model(p, f.log_a, f.log_b), color="C1",
                    label="fit max(0, a log bP)")
        ax.axhline(budget, color="grey", lw=0.8, ls=":", label=f"budget K = {budget}")
        ax.set(title=method, xlabel=score_label(score), xscale="log",
               ylabel="steps to unlearn", ylim=(-0.04 * budget, None))
        log_ticks(ax)
    fig.tight_layout()
    legend_below(fig, axes[0][0], ncol=5)
    return fig


def _symlog_ticks(ax, top: float, linthresh: float) -> None:
    """Readable ticks for a symlog axis from 0 to ``top``: 0, then 1, 3 x 10^k from the
    linear threshold up (below it the axis is linear and compressed, so ticks there would sit
    on top of each other)."""
    ticks = [0.0] + [m * 10.0 ** e for e in range(-4, 4) for m in (1, 3)
                     if linthresh <= m * 10.0 ** e <= top * 1.5]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(plain))


def response_curves(attack: pd.DataFrame, rows: pd.DataFrame, method: str) -> plt.Figure:
    """The mean Gaussian-fit KL divergence of each quantile group against the step (points),
    its fit A exp(-ck) + floor (lines) and the null's 95% quantile (grey band, mean over
    groups)."""
    from ...analysis.fits import exp_decay
    fig, ax = plt.subplots(figsize=(WIDTH, 3.6))
    palette = ordered_palette(list(rows.group))
    a = attack[(attack.method == method) & (attack.design == "all")]
    for row in rows.itertuples():
        g = a[a.group == row.group].sort_values("step")
        colour = palette[row.group]
        ax.scatter(g.step + 1, g.divergence, color=colour, s=12)
        k = np.geomspace(1, g.step.max() + 1, 200) - 1
        ax.plot(k + 1, exp_decay(k, row.response_amplitude, row.response_rate,
                                 row.response_floor), color=colour, lw=1, label=row.group)
    null = a[a.group.isin(rows.group)].groupby("step").divergence_null_q95.mean()
    ax.fill_between(null.index + 1, 0, null, color="grey", alpha=0.2, label="null 95%")
    top = float(a[a.group.isin(rows.group)].divergence.max()) if len(rows) else 1.0
    ax.set_xscale("log")
    linthresh = 0.01
    ax.set_yscale("symlog", linthresh=linthresh, linscale=0.5)
    _symlog_ticks(ax, top, linthresh)
    ax.set(xlabel="unlearning step k + 1", ylabel="KL divergence D(k) (nats)",
           title=f"{method}: points measured, lines A exp(-ck) + floor")
    log_ticks(ax)
    legend_right(ax, "group")
    return fig


def amplitude_against_score(rows: pd.DataFrame, score: str) -> plt.Figure:
    """The response amplitude A of each quantile group against its ``p``, per method, log-log."""
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    ax.set(xlabel=score_label(score), ylabel="response amplitude A (nats)",
           title="Amplitude of the divergence response")
    responding = rows[(rows.response_amplitude > 0) & (rows.p > 0)]
    if responding.empty:
        ax.text(0.5, 0.5, "no group responded: A <= 0 for every group", ha="center",
                va="center", transform=ax.transAxes)
        return fig
    for method, g in responding.groupby("method", sort=False):
        positive = g.sort_values("p")
        ax.plot(positive.p, positive.response_amplitude, marker="o", ms=4, label=method)
    ax.set(xscale="log", yscale="log")
    log_ticks(ax, "x")
    log_ticks(ax, "y")
    legend_right(ax, "method")
    return fig


def point_fraction_bars(fractions: pd.DataFrame) -> plt.Figure:
    """Per group: the share of points at step 0 and censored by the per-point criterion,
    against the same shares under relabelled models (the floor)."""
    fig, axes = plt.subplots(2, 1, figsize=(WIDTH, 5.2), sharex=True)
    titles = {"step0_fraction": "Points never distinguishable (unlearned at step 0)",
              "censored_fraction": "Points still distinguishable at K (censored)"}
    x = np.arange(len(fractions))
    for ax, (what, title) in zip(axes, titles.items()):
        ax.bar(x - 0.2, fractions[what], width=0.4, label="measured")
        ax.bar(x + 0.2, fractions[f"null_{what}"], width=0.4, color="grey",
               label="null floor (relabelled models)")
        ax.set(title=title, ylabel="share of points", ylim=(0, 1))
    axes[1].set_xticks(x, fractions.group, rotation=60, ha="right")
    axes[1].set_xlabel("forget group")
    fig.tight_layout()
    legend_below(fig, axes[0], ncol=2)
    return fig


def disagreement_bars(comparison: pd.DataFrame) -> plt.Figure:
    """Step-0 attack accuracy of the two disagreement groups of every baseline."""
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    x = np.arange(len(comparison))
    ax.bar(x - 0.2, comparison.acc_p_over, width=0.4, label="ranked high by P")
    ax.bar(x + 0.2, comparison.acc_baseline_over, width=0.4, label="ranked high by the baseline")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xticks(x, comparison.baseline)
    ax.set(ylabel="attack accuracy at step 0", ylim=(0.4, None), xlabel="baseline metric",
           title="Where P and a baseline disagree")
    legend_right(ax)
    return fig


UTILITY_SETS = {"forget_acc": "forget set", "retain_acc": "retain set", "test_acc": "test set"}


def utility_curves(util: pd.DataFrame) -> plt.Figure:
    """Forget, retain and test accuracy against the step, one panel per method, one line
    style per kind of model."""
    long = util.melt(id_vars=["method", "model", "step"], var_name="set", value_name="accuracy")
    long = long.assign(set=long.set.map(UTILITY_SETS), step1=long.step + 1)
    methods = list(dict.fromkeys(util.method))
    fig, axes = plt.subplots(1, len(methods), figsize=(WIDTH, 3.2), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        sns.lineplot(long[long.method == method], x="step1", y="accuracy", hue="set",
                     style="model", hue_order=list(UTILITY_SETS.values()), ax=ax)
        ax.set(xscale="log", title=method, xlabel="unlearning step k + 1",
               ylabel="accuracy (fraction of points)")
        log_ticks(ax)
    fig.tight_layout()
    legend_below(fig, axes[0][0], ncol=4)
    return fig
