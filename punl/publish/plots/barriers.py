"""Figures of the loss-barrier chapter: the hardest against the easiest points along the paths
(the paper's figure), controlled barriers, trajectories."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ...analysis.barriers import HARD_EASY
from ...study.groups import quantile_groups
from .style import WIDTH, legend_below, log_ticks, score_label


def hard_easy_paths(paths: pd.DataFrame, method: str, budget: int, sizes: dict[str, int],
                    partner: str = "independent") -> plt.Figure:
    """The paper's loss-barrier figure: mean loss (over model pairs, log scale) along the path
    to an independent retrained partner from the original model (left) and from the model
    unlearned for ``budget`` steps (right), on the hardest m points by the privacy loss (group
    ``top``) and the easiest m (``bottom``), forget points solid and their class-matched
    controls dashed (``sizes``: each group's m)."""
    p = paths[(paths.method == method) & (paths.partner == partner)
              & paths.group.isin(["top", "bottom"])]
    p = p.assign(side=p.subset.str.split("-").str[0], points=p.subset.str.split("-").str[1])
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.3), sharey=True)
    colours = {"top": "C3", "bottom": "C0"}
    for ax, step, title in zip(axes, (0, budget), ("from the original model",
                                                   f"from the model after {budget} steps")):
        here = p[p.step == step]
        for (group, points), g in here.groupby(["group", "points"]):
            for side, dash in (("forget", "-"), ("control", "--")):
                line = g[g.side == side].sort_values("lambda")
                label = (f"{HARD_EASY[group]} {sizes.get(group, '')} ({points}), {side}"
                         ).replace("  ", " ")
                ax.plot(line["lambda"], line.loss, ls=dash, color=colours[group], lw=1.5,
                        label=label)
        ax.set(title=title, xlabel="λ (0: start, 1: retrained partner)", yscale="log")
        log_ticks(ax, "y")
    axes[0].set_ylabel("mean loss (nats, log scale)")
    fig.tight_layout()
    legend_below(fig, axes[0], ncol=2)
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
