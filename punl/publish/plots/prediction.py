"""Figures of the prediction chapter: cost curves, predicted against measured, validation,
the adaptive rule."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .style import MIN_FONT, WIDTH, categorical_palette, legend_below, log_ticks, short_score
from .unlearning import STATUS_MARKERS


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
    fig, axes = plt.subplots(1, len(aggregations), figsize=(WIDTH, 3.2), sharey=True,
                             squeeze=False)
    for ax, how in zip(axes[0], aggregations):
        c = curves[curves.aggregation == how]
        ax.fill_between(c.x, c.steps_low, np.minimum(c.steps_high, budget * 1.5), color="C1",
                        alpha=0.2, label="90% prediction interval")
        ax.plot(c.x, c.steps, color="C1", label="fit max(0, a log bx)")
        g = calibration[calibration.aggregation == how]
        for status, style in STATUS_MARKERS.items():
            part = g[g.status == status]
            ax.scatter(part.x, part.steps_to_unlearn, s=18, label=f"calibration: {status}",
                       **style)
        h = heldout[heldout.aggregation == how]
        for kind, marker in KIND_MARKERS.items():
            part = h[h.kind == kind]
            ax.scatter(part.x, part.measured_steps, marker=marker, color="0.35", s=18,
                       label=kind.replace("heldout_", "held out: "))
        _steps_axis(ax, budget)
        ax.set(xscale="log", title=how, xlabel=f"{how} of {short_score(score)} (log)",
               ylabel="steps to unlearn")
        log_ticks(ax)
    fig.tight_layout()
    legend_below(fig, axes[0][0], ncol=3)
    return fig


def predicted_against_measured(heldout: pd.DataFrame, score: str, budget: int) -> plt.Figure:
    """One panel per aggregation of ``score``: each held-out request's predicted steps with its
    interval (capped at 1.5 K: more than K) against its measured steps (censored at 1.5 K)."""
    h = heldout[heldout.score == score]
    aggregations = list(dict.fromkeys(h.aggregation))
    fig, axes = plt.subplots(1, len(aggregations), figsize=(WIDTH, 3.0), sharex=True,
                             sharey=True, squeeze=False)
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
                        yerr=[predicted - np.minimum(g.steps_low[keep], cap),
                              np.minimum(g.steps_high[keep], cap) - predicted],
                        fmt=marker, ms=4, capsize=2, alpha=0.8,
                        label=kind.replace("heldout_", "held out: "))
        ax.plot([0, cap], [0, cap], color="grey", lw=0.8, ls="--")
        ax.set_xscale("symlog", linthresh=1)
        _steps_axis(ax, budget)
        ax.axvline(budget, color="grey", lw=0.8, ls=":")
        ax.set(title=f"{how} of {short_score(score)}", xlabel="measured steps",
               ylabel="predicted steps (90% interval)" if ax is axes[0][0] else "")
    fig.tight_layout()
    legend_below(fig, axes[0][0], ncol=3)
    return fig


def validation_bars(validation: pd.DataFrame, coverage: float = 0.9) -> plt.Figure:
    """Per predictor (score, aggregation) over all held-out requests: Spearman's rho of
    predicted and measured steps, the coverage of the intervals (dotted: nominal) and their
    mean width, and the mean absolute error in steps."""
    v = validation[validation.requests == "all"]
    panels = [("steps_spearman", "rank correlation", "Spearman ρ"),
              ("steps_coverage", "interval coverage", "share covered"),
              ("steps_width", "mean interval width", "steps"),
              ("steps_mae", "mean absolute error", "steps")]
    fig, axes = plt.subplots(2, 2, figsize=(WIDTH, 5.6), sharex=True)
    for ax, (column, title, unit) in zip(axes.flat, panels):
        sns.barplot(v, x="score", y=column, hue="aggregation", ax=ax)
        ax.set(title=title, xlabel="predictor", ylabel=unit)
        ax.tick_params(axis="x", rotation=30)
    axes[0, 1].axhline(coverage, color="k", ls=":", lw=1)
    axes[0, 1].set_ylim(0, 1.05)
    axes[0, 0].axhline(0, color="k", lw=0.8)
    fig.tight_layout()
    legend_below(fig, axes[0, 0], ncol=3, title="aggregate over the request")
    return fig


def adaptive_against_fixed(fixed: pd.DataFrame, comparison: pd.DataFrame) -> plt.Figure:
    """Success rate against total steps over the held-out requests: every fixed budget (line,
    labelled with the budget) and the adaptive rule with each predictor (markers)."""
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    ax.plot(fixed.total_steps, fixed.success, marker="o", color="grey", label="fixed budget")
    for row in fixed.itertuples():
        ax.annotate(str(row.budget), (row.total_steps, row.success), fontsize=MIN_FONT,
                    textcoords="offset points", xytext=(3, -9))
    markers = dict(zip(comparison.score.unique(), "osD^v<>"))
    colours = categorical_palette(comparison.aggregation.unique())
    for row in comparison.itertuples():
        ax.scatter(row.adaptive_total_steps, row.adaptive_success, marker=markers[row.score],
                   color=colours[row.aggregation], s=40,
                   label=f"adaptive: {row.score}, {row.aggregation}")
    ax.set(xscale="symlog", xlabel="total unlearning steps over the held-out requests",
           ylabel="share of requests unlearned", ylim=(-0.03, 1.05),
           title="Adaptive rule against fixed budgets")
    fig.tight_layout()
    legend_below(fig, ax, ncol=3)
    return fig
