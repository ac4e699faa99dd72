"""Figures across runs: the front page's headline figure and the sweeps' claims and
overviews."""
from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from ...analysis.fits import recorded_log_model
from .style import WIDTH, legend_below, log_ticks, plain
from .unlearning import STATUS_MARKERS

if TYPE_CHECKING:
    from ...analysis.measures import Headline


def headline_figure(runs: dict[str, Headline], budgets: dict[str, int]) -> plt.Figure:
    """The book's front figure, one colour per run: left, each quantile group's steps to
    unlearn against its median privacy loss with the censoring-aware fit of the log law max(0, a log bP)
    (filled: unlearned, open: censored, x: never distinguishable; dotted: each budget K);
    right, the response amplitude A against P (log-log) with the least-squares line of log A
    on log P. ``runs[name]`` is the run's :func:`punl.analysis.measures.headline` (``rows`` with ``p``,
    the steps ``fit`` and the ``slope`` of log A on log P), ``budgets[name]`` its budget K."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH, 3.5))
    colours = dict(zip(runs, sns.color_palette("tab10", len(runs))))
    for name, run in runs.items():
        colour, rows, fit = colours[name], run.rows, run.fit
        for status, style in STATUS_MARKERS.items():
            part = rows[rows.status == status]
            style = {k: (colour if v == "C0" else v) for k, v in style.items()}
            left.scatter(part.p, part.steps_to_unlearn, s=22, **style)
        if np.isfinite(fit.log_a) and len(rows):
            p = np.geomspace(max(rows.p.min(), 1e-12), rows.p.max(), 200)
            left.plot(p, recorded_log_model(p, fit.log_a, fit.log_b), color=colour, label=name)
        else:
            left.plot([], [], color=colour, label=name)
        left.axhline(budgets[name], color=colour, lw=0.8, ls=":")
        positive = rows[(rows.response_amplitude > 0) & (rows.p > 0)].sort_values("p")
        right.scatter(positive.p, positive.response_amplitude, color=colour, s=18)
        slope = run.slope
        if np.isfinite(slope.slope) and len(positive):
            p = np.geomspace(positive.p.min(), positive.p.max(), 50)
            right.plot(p, np.exp(slope.intercept) * p ** slope.slope, color=colour)
    left.set(xscale="log", xlabel="group median privacy loss P (log scale)",
             ylabel="steps to unlearn", title="Steps to unlearn")
    if any(len(points.get_offsets()) for points in right.collections):
        right.set(xscale="log", yscale="log")
    else:
        right.text(0.5, 0.5, "no group responded:\nA <= 0 for every group", ha="center",
                   va="center", transform=right.transAxes)
    right.set(xlabel="group median privacy loss P (log scale)",
              ylabel="response amplitude A (nats)", title="Divergence response")
    for ax, axis in ((left, "x"), (right, "x"), (right, "y")):
        log_ticks(ax, axis)
    fig.tight_layout()
    status = [plt.Line2D([], [], ls="", marker="o", color="grey", label="unlearned"),
              plt.Line2D([], [], ls="", marker="o", mfc="none", color="grey", label="censored"),
              plt.Line2D([], [], ls="", marker="x", color="grey", label="never distinguishable")]
    handles, labels = left.get_legend_handles_labels()
    legend_below(fig, handles=handles + status, labels=labels + [h.get_label() for h in status],
                  ncol=4)
    return fig


VERDICT_MARKERS = {"supported": dict(marker="o", color="tab:green"),
                   "not supported": dict(marker="X", color="tab:red"),
                   "inconclusive": dict(marker="o", color="grey", mfc="none")}


def _value_ticks(ax, values) -> None:
    """Ticks at the swept values when they are numbers (no minor labels)."""
    values = pd.Series(values)
    if pd.api.types.is_numeric_dtype(values):
        ax.xaxis.set_major_locator(FixedLocator(sorted(values.unique())))
        ax.xaxis.set_major_formatter(FuncFormatter(plain))
        ax.xaxis.set_minor_formatter(NullFormatter())


def claims_against(numbers: pd.DataFrame, x: str, log_x: bool = False) -> plt.Figure:
    """One small panel per claim: its number (``numbers``: columns ``claim``, ``measure``,
    ``number``, ``verdict``, ``fragile`` and ``x``) against the swept value ``x``, the marker
    showing the verdict (green dot: supported, red cross: not supported, open grey circle:
    inconclusive; a black ring: fragile)."""
    claims = list(dict.fromkeys(numbers.claim))
    cols = 3
    rows = -(-len(claims) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH, 2.3 * rows + 0.5), squeeze=False,
                             sharex=True)
    for ax, claim in zip(axes.flat, claims):
        c = numbers[numbers.claim == claim].sort_values(x)
        ax.plot(c[x], c.number, color="grey", lw=1)
        for r in c.itertuples():
            ax.plot(getattr(r, x), r.number, ls="", ms=7, **VERDICT_MARKERS[r.verdict])
            if r.fragile:
                ax.plot(getattr(r, x), r.number, ls="", ms=12, marker="o", mfc="none",
                        color="k", mew=0.8)
        ax.set_title(claim, fontsize="small")
        ax.set(xlabel=x, xscale="log" if log_x else "linear")
        _value_ticks(ax, c[x])
    for ax in axes.flat[len(claims):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("the claim's number")
    fig.tight_layout()
    handles = [plt.Line2D([], [], ls="", ms=7, label=v, **m) for v, m in VERDICT_MARKERS.items()]
    handles.append(plt.Line2D([], [], ls="", ms=11, marker="o", mfc="none", color="k",
                              label="fragile"))
    legend_below(fig, handles=handles, labels=[h.get_label() for h in handles], ncol=4)
    return fig


def sweep_overview(summary: pd.DataFrame, x: str, log_x: bool = False) -> plt.Figure:
    """Mean privacy loss of clean and flipped points and the median steps to unlearn of the
    quantile groups against the swept value ``x`` (``summary`` from the sweep's points)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH, 3.2))
    s = summary.sort_values(x)
    for kind, colour in (("clean", "tab:blue"), ("flipped", "tab:red")):
        column = f"mean privacy loss ({kind})"
        if column in s and s[column].notna().any():
            left.plot(s[x], s[column], marker="o", color=colour, label=f"{kind} points")
    left.set(yscale="log", xlabel=x, ylabel="mean privacy loss P (log scale)",
             title="Privacy loss", xscale="log" if log_x else "linear")
    log_ticks(left, "y")
    if "median steps_to_unlearn" in s:
        right.plot(s[x], s["median steps_to_unlearn"], marker="o", color="k",
                   label="median over quantile groups")
    right.set(xlabel=x, ylabel="steps to unlearn", title="Steps to unlearn", ylim=(0, None),
              xscale="log" if log_x else "linear")
    for ax in (left, right):
        _value_ticks(ax, s[x])
    fig.tight_layout()
    h1, l1 = left.get_legend_handles_labels()
    h2, l2 = right.get_legend_handles_labels()
    legend_below(fig, handles=h1 + h2, labels=l1 + l2, ncol=3)
    return fig
