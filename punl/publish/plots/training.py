"""Figures of the training chapter: loss and accuracy, clipping, gradient-norm
trajectories."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ...engine.ledger import Ledger
from .style import WIDTH, legend_below, legend_right


def training_curves(ledger: Ledger) -> plt.Figure:
    """Train and test accuracy of every run at every ledger record."""
    curves = pd.concat([
        pd.DataFrame({"step": ledger.record_steps, "run": r, "split": split,
                      "accuracy": getattr(ledger, f"{split}_acc")[r]})
        for r in range(ledger.runs) for split in ("train", "test")])
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    sns.lineplot(curves, x="step", y="accuracy", hue="split", units="run", estimator=None,
                 alpha=0.6, lw=1, ax=ax)
    ax.set(title=f"Accuracy of each of the {ledger.runs} runs", ylim=(0, 1.02),
           xlabel="training step", ylabel="accuracy (fraction of points)")
    legend_right(ax, "split")
    return fig


def clipped_fraction_curve(ledger: Ledger, clip: float) -> plt.Figure:
    """At every record, the fraction of (run, point) norms above C."""
    frac = (ledger.grad_norm > clip).mean(axis=(0, 2))
    fig, ax = plt.subplots(figsize=(WIDTH, 3.0))
    ax.plot(ledger.record_steps, frac, marker="o", ms=4)
    ax.set(title=f"Per-example gradient norms above C = {clip:g}", xlabel="training step",
           ylabel="share of norms clipped", ylim=(0, None))
    return fig


def norm_trajectories(ledger: Ledger, flipped: np.ndarray, clip: float, n: int = 5) -> plt.Figure:
    """Left: the unclipped norm (mean over runs) of the n points with the lowest and highest
    average norm (dashed: flipped). Right: median and inter-quartile band, clean vs flipped."""
    steps, norms = ledger.record_steps, ledger.grad_norm.mean(axis=0)  # [records, N]
    order = np.argsort(norms.mean(axis=0))
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH, 3.4), sharey=True)
    handles = {}
    for (group, idx), colour in zip({f"lowest {n}": order[:n], f"highest {n}": order[-n:]}.items(),
                                    ("tab:blue", "tab:red")):
        for i in idx:
            line, = left.plot(steps, norms[:, i], color=colour, ls="--" if flipped[i] else "-",
                              lw=1)
            handles.setdefault(f"{group} average norm", line)
    left.set(title="Extreme points", xlabel="training step",
             ylabel="gradient norm (mean over runs)", yscale="log")
    for kind, mask, colour in (("clean", ~flipped, "tab:blue"), ("flipped", flipped, "tab:red")):
        if mask.any():
            q25, q50, q75 = np.percentile(norms[:, mask], [25, 50, 75], axis=1)
            line, = right.plot(steps, q50, color=colour, lw=2)
            right.fill_between(steps, q25, q75, color=colour, alpha=0.2)
            handles[f"{kind} points: median, quartiles ({mask.sum()})"] = line
    right.set(title="Clean and flipped points", xlabel="training step")
    for ax in (left, right):
        handles["clipping norm C"] = ax.axhline(clip, color="k", ls=":", lw=1)
    fig.tight_layout()
    legend_below(fig, ncol=2, handles=list(handles.values()), labels=list(handles))
    return fig
