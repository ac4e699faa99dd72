"""Figures of the loss-barrier chapter: losses along paths, controlled barriers,
trajectories."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ...study.groups import quantile_groups
from .style import WIDTH, legend_below, log_ticks, score_label


def path_losses_figure(paths: pd.DataFrame, method: str, step: int = 0) -> plt.Figure:
    """Mean loss (over model pairs) along the path from the unlearned (at step 0: the
    original) model to its partner, per quantile group, on forget (solid) and control (dashed)
    points; one panel per partner and kind of point."""
    p = paths[(paths.method == method) & (paths.step == step)]
    p = p.assign(side=p.subset.str.split("-").str[0], points=p.subset.str.split("-").str[1])
    groups = quantile_groups(p.group.unique()) or sorted(p.group.unique())
    p = p[p.group.isin(groups)]
    kinds = [k for k in ("clean", "flipped") if (p.points == k).any()]
    partners = ["coupled", "independent"]
    fig, axes = plt.subplots(len(kinds), 2, figsize=(WIDTH, 2.7 * len(kinds) + 0.6),
                             squeeze=False, sharex=True)
    for r, kind in enumerate(kinds):
        for c, partner in enumerate(partners):
            ax = axes[r][c]
            sns.lineplot(p[(p.points == kind) & (p.partner == partner)], x="lambda", y="loss",
                         hue="group", hue_order=groups, style="side",
                         style_order=["forget", "control"], palette="viridis", errorbar=None,
                         ax=ax)
            ax.set(title=f"{partner} partner, {kind} points", xlabel="λ (0: original, 1: partner)",
                   ylabel="mean loss (nats)")
    fig.tight_layout()
    legend_below(fig, axes[0][0], ncol=7)
    return fig


def controlled_barrier_figure(by_group: pd.DataFrame, score: str) -> plt.Figure:
    """Per quantile group: the controlled barrier (forget minus control), the loss gap and the
    parameter distance against the group's median score, per partner and kind of point."""
    q = by_group[by_group.kind == "quantile"]
    fig, axes = plt.subplots(3, 1, figsize=(WIDTH, 7.0), sharex=True)
    labels = {"controlled_barrier": "controlled barrier (nats)",
              "loss_gap": "endpoint loss gap (nats)", "distance": "parameter distance"}
    for ax, (col, label) in zip(axes, labels.items()):
        sns.lineplot(q, x="group_score_median", y=col, hue="partner", style="points",
                     marker="o", ax=ax)
        ax.set(xscale="log", xlabel=f"group median {score_label(score)}", ylabel=label)
        log_ticks(ax)
    axes[0].axhline(0, color="grey", lw=0.8, ls=":")
    fig.tight_layout()
    legend_below(fig, axes[0], ncol=6)
    return fig


def barrier_trajectories(barriers: pd.DataFrame, method: str) -> plt.Figure:
    """The mean controlled barrier (forget minus control, clean points) between the model
    after k unlearning steps and its age-matched partner, per group."""
    from ...analysis.measures import controlled_barriers
    steps = sorted(barriers.step.unique())
    frames = [controlled_barriers(barriers, method, k).assign(step=k) for k in steps]
    c = pd.concat(frames, ignore_index=True)
    c = c[c.points == "clean"].assign(step1=lambda t: t.step + 1)
    groups = quantile_groups(c.group.unique()) or sorted(c.group.unique())
    partners = ["coupled", "independent"]
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.2), sharey=True)
    for ax, partner in zip(axes, partners):
        sns.lineplot(c[c.partner == partner], x="step1", y="controlled_barrier", hue="group",
                     hue_order=groups, palette="viridis", errorbar=None, marker="o", ax=ax)
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set(xscale="log", title=f"{partner} partner", xlabel="unlearning step k + 1",
               ylabel="controlled barrier (nats)")
        log_ticks(ax)
    fig.tight_layout()
    legend_below(fig, axes[0], ncol=10, title="group")
    return fig
