"""The book's figures: each function draws one figure from tables the package computed.

Functions take tables (and the few settings they show), return the matplotlib Figure, and never
compute a number the tables do not hold, apart from the summaries a figure draws (means and
quantiles over runs). Every figure is sized for the book's text column (:data:`WIDTH` inches
at :data:`DPI`, drawn at twice the resolution in notebooks), with labelled axes and legends
outside the data.
"""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from .fits import recorded_log_model
from .groups import quantile_groups
from .ledger import Ledger
from .tables import privacy_order

#: Width of a figure in inches: the book's text column at :data:`DPI` (about 670 pixels).
WIDTH = 7.0
DPI = 96
#: The smallest font a figure uses, in points.
MIN_FONT = 8


def set_style() -> None:
    """The book's plotting style: fonts readable at the column's width, and, in a notebook,
    figures drawn at twice the resolution they are shown at."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.9)
    matplotlib.rcParams.update({"figure.dpi": DPI, "savefig.bbox": "tight",
                                "legend.frameon": False, "axes.titleweight": "bold",
                                "figure.figsize": (WIDTH, 3.6)})
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        if get_ipython() is not None:
            set_matplotlib_formats("retina")
    except ImportError:
        pass


def _palette(names) -> dict:
    names = list(names)
    return dict(zip(names, sns.color_palette("tab10" if len(names) <= 10 else "tab20",
                                             len(names))))


def _ordered_palette(names) -> dict:
    """Colours along a sequential map, for groups in the order of their score (``q0`` ...)."""
    names = list(names)
    return dict(zip(names, sns.color_palette("viridis", len(names))))


def _plain(value, _=None) -> str:
    """A tick label without an exponent: ``0.3``, ``20``, ``1e+04`` only beyond 10^4."""
    return f"{value:g}"


def log_ticks(ax, axis: str = "x") -> None:
    """Readable ticks on a log axis, from its current limits: plain numbers at 1, 2, 5 x 10^k
    over spans up to 1.5 decades, 1 and 3 x 10^k up to 3 decades, powers of ten beyond; no
    labels on minor ticks."""
    low, high = ax.get_xlim() if axis == "x" else ax.get_ylim()
    if not (low > 0 and high > low):
        return
    span = np.log10(high / low)
    mantissas = (1, 2, 3, 5) if span <= 1 else (1, 2, 5) if span <= 1.5 else \
        (1, 3) if span <= 3 else (1,)
    step = max(1, int(np.ceil(span / 6))) if span > 6 else 1
    exponents = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1, step)
    ticks = [m * 10.0 ** e for e in exponents for m in mantissas if low <= m * 10.0 ** e <= high]
    if not ticks:      # a span inside one mantissa step: keep matplotlib's own ticks
        return
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(_plain))
    target.set_minor_formatter(NullFormatter())


def _legend_below(fig, ax=None, ncol: int = 4, title: str | None = None, handles=None,
                  labels=None) -> None:
    """One legend for the figure, centred below its panels (outside the data)."""
    if handles is None:
        handles, labels = (ax or fig.axes[0]).get_legend_handles_labels()
    for a in fig.axes:
        if a.get_legend() is not None:
            a.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
                   title=title, fontsize="small")


def _legend_right(ax, title: str | None = None) -> None:
    """The axes' legend to the right of its data."""
    ax.legend(title=title, bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")


def _score_label(score: str) -> str:
    """``privacy loss P, α = 8 (log scale)`` for ``privacy_loss_a8``; other scores by name."""
    alpha = privacy_order(score)
    if alpha is not None:
        return f"privacy loss P, α = {alpha:g} (log scale)"
    return f"{score} (log scale)"


# -------------------------------------------------------------------------------- training
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
    _legend_right(ax, "split")
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
    _legend_below(fig, ncol=2, handles=list(handles.values()), labels=list(handles))
    return fig


# ---------------------------------------------------------------------------------- scores
def privacy_histogram(scores: pd.DataFrame, column: str) -> plt.Figure:
    """Histogram of a privacy-loss column on a log axis, clean and flipped points apart (each
    normalised to its own count); points with zero loss are left out of the log axis."""
    positive = scores[scores[column] > 0].assign(
        **{"training label": lambda t: np.where(t.flipped, "flipped", "clean")})
    order = [k for k in ("clean", "flipped") if (positive["training label"] == k).any()]
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    sns.histplot(positive, x=column, hue="training label", hue_order=order,
                 log_scale=True, stat="density", common_norm=False, element="step", bins=40,
                 ax=ax)
    ax.set(title="Distribution of the per-instance privacy loss", xlabel=_score_label(column),
           ylabel="density (per label kind)")
    log_ticks(ax)
    legend = ax.get_legend()
    if legend is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), title="training label")
    return fig


def _show_image(ax, image: np.ndarray) -> None:
    if image.ndim == 3 and image.shape[0] == 3:
        ax.imshow(((image - image.min()) / (np.ptp(image) or 1)).transpose(1, 2, 0))
    else:
        ax.imshow(image.reshape(image.shape[-2:]), cmap="gray_r")
    ax.axis("off")


def extreme_images(images: np.ndarray, scores: pd.DataFrame, column: str,
                   n: int = 6) -> plt.Figure:
    """The n training images with the lowest ``column`` (top row) and the n with the highest
    (bottom row), titled with the training label, whether it was flipped, and the score."""
    ranked = scores.sort_values(column).index
    fig, axes = plt.subplots(2, n, figsize=(WIDTH, 4.6))
    for ax, i in [*zip(axes[0], ranked[:n]), *zip(axes[1], ranked[-n:][::-1])]:
        _show_image(ax, images[i])
        row = scores.loc[i]
        mark = f"flipped from {row.true_label}" if row.flipped else "clean"
        ax.set_title(f"label {row.label}\n{mark}\nP = {row[column]:.3g}", fontsize=MIN_FONT + 1,
                     color="tab:red" if row.flipped else "k")
    fig.suptitle(f"Lowest (top row) and highest (bottom row) {column}; flipped labels in red",
                 fontsize="medium")
    fig.tight_layout()
    return fig


def correlation_heatmap(rho: pd.DataFrame) -> plt.Figure:
    """A Spearman correlation matrix as an annotated heatmap."""
    fig, ax = plt.subplots(figsize=(WIDTH, 5.6))
    sns.heatmap(rho, annot=True, fmt=".2f", cmap="vlag", vmin=-1, vmax=1, ax=ax,
                annot_kws={"size": MIN_FONT}, cbar_kws={"label": "Spearman ρ"})
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
    fig, axes = plt.subplots(1, len(methods), figsize=(WIDTH, 3.4), sharey=True,
                             squeeze=False)
    palette = _ordered_palette(groups)
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
    _legend_below(fig, axes[0][-1], ncol=6, title=f"group (filled: distinguishable at {level:g})")
    return fig


def steps_against_score(rows: pd.DataFrame, fitted: dict, budget: int, score: str) -> plt.Figure:
    """Per method: each quantile group's steps to unlearn against ``p`` (filled: unlearned,
    open: censored at K, x: never distinguishable) with the censoring-aware fits of the log
    law and of a line (``fitted[method]`` from :func:`punl.analysis.steps_fits`)."""
    methods = list(fitted)
    fig, axes = plt.subplots(1, len(methods), figsize=(WIDTH, 3.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        g = rows[rows.method == method]
        for status, style in STATUS_MARKERS.items():
            part = g[g.status == status]
            ax.scatter(part.p, part.steps_to_unlearn, label=status, **style)
        f = fitted[method]
        if np.isfinite(f["log_a"]) and len(g):
            p = np.geomspace(max(g.p.min(), 1e-12), g.p.max(), 200)
            ax.plot(p, recorded_log_model(p, f["log_a"], f["log_b"]), color="C1",
                    label="fit max(0, a log bP)")
        ax.axhline(budget, color="grey", lw=0.8, ls=":", label=f"budget K = {budget}")
        ax.set(title=method, xlabel=_score_label(score), xscale="log",
               ylabel="steps to unlearn", ylim=(-0.04 * budget, None))
        log_ticks(ax)
    fig.tight_layout()
    _legend_below(fig, axes[0][0], ncol=5)
    return fig


def _symlog_ticks(ax, top: float) -> None:
    """Readable ticks for a symlog axis from 0 to ``top``: 0, then 1, 3 x 10^k."""
    ticks = [0.0] + [m * 10.0 ** e for e in range(-4, 4) for m in (1, 3)
                     if m * 10.0 ** e <= top * 1.5]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))


def response_curves(attack: pd.DataFrame, rows: pd.DataFrame, method: str) -> plt.Figure:
    """The mean Gaussian-fit KL divergence of each quantile group against the step (points),
    its fit A exp(-ck) + floor (lines) and the null's 95% quantile (grey band, mean over
    groups)."""
    from .fits import exp_decay
    fig, ax = plt.subplots(figsize=(WIDTH, 3.6))
    palette = _ordered_palette(list(rows.group))
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
    ax.set_yscale("symlog", linthresh=0.01, linscale=0.5)
    _symlog_ticks(ax, top)
    ax.set(xlabel="unlearning step k + 1", ylabel="KL divergence D(k) (nats)",
           title=f"{method}: points measured, lines A exp(-ck) + floor")
    log_ticks(ax)
    _legend_right(ax, "group")
    return fig


def amplitude_against_score(rows: pd.DataFrame, score: str) -> plt.Figure:
    """The response amplitude A of each quantile group against its ``p``, per method, log-log."""
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    ax.set(xlabel=_score_label(score), ylabel="response amplitude A (nats)",
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
    _legend_right(ax, "method")
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
    _legend_below(fig, axes[0], ncol=2)
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
    _legend_right(ax)
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
    _legend_below(fig, axes[0][0], ncol=4)
    return fig


# -------------------------------------------------------------------------------- barriers
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
    _legend_below(fig, axes[0][0], ncol=7)
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
        ax.set(xscale="log", xlabel=f"group median {_score_label(score)}", ylabel=label)
        log_ticks(ax)
    axes[0].axhline(0, color="grey", lw=0.8, ls=":")
    fig.tight_layout()
    _legend_below(fig, axes[0], ncol=6)
    return fig


def barrier_trajectories(barriers: pd.DataFrame, method: str) -> plt.Figure:
    """The mean controlled barrier (forget minus control, clean points) between the model
    after k unlearning steps and its age-matched partner, per group."""
    from .analysis import controlled_barriers
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
    _legend_below(fig, axes[0], ncol=10, title="group")
    return fig


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
        ax.set(xscale="log", title=how, xlabel=f"{how} of {score} (log)",
               ylabel="steps to unlearn")
        log_ticks(ax)
    fig.tight_layout()
    _legend_below(fig, axes[0][0], ncol=3)
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
        ax.set(title=f"{how} of {score}", xlabel="measured steps",
               ylabel="predicted steps (90% interval)")
    fig.tight_layout()
    _legend_below(fig, axes[0][0], ncol=3)
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
    _legend_below(fig, axes[0, 0], ncol=3, title="aggregate over the request")
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
    colours = _palette(comparison.aggregation.unique())
    for row in comparison.itertuples():
        ax.scatter(row.adaptive_total_steps, row.adaptive_success, marker=markers[row.score],
                   color=colours[row.aggregation], s=40,
                   label=f"adaptive: {row.score}, {row.aggregation}")
    ax.set(xscale="symlog", xlabel="total unlearning steps over the held-out requests",
           ylabel="share of requests unlearned", ylim=(-0.03, 1.05),
           title="Adaptive rule against fixed budgets")
    fig.tight_layout()
    _legend_below(fig, ax, ncol=3)
    return fig


# ---------------------------------------------------------------------------- across runs
def headline_figure(runs: dict[str, dict]) -> plt.Figure:
    """The book's front figure, one colour per run: left, each quantile group's steps to
    unlearn against its median privacy loss with the censoring-aware fit of the log law max(0, a log bP)
    (filled: unlearned, open: censored, x: never distinguishable; dotted: each budget K);
    right, the response amplitude A against P (log-log) with the least-squares line of log A
    on log P. ``runs[name]`` holds ``rows`` (with ``p``), ``fit`` (from
    :func:`punl.analysis.steps_fits`), ``slope`` (from :func:`punl.fits.log_log_slope`) and
    ``budget``."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH, 3.5))
    colours = dict(zip(runs, sns.color_palette("tab10", len(runs))))
    for name, run in runs.items():
        colour, rows, fit = colours[name], run["rows"], run["fit"]
        for status, style in STATUS_MARKERS.items():
            part = rows[rows.status == status]
            style = {k: (colour if v == "C0" else v) for k, v in style.items()}
            left.scatter(part.p, part.steps_to_unlearn, s=22, **style)
        if np.isfinite(fit["log_a"]) and len(rows):
            p = np.geomspace(max(rows.p.min(), 1e-12), rows.p.max(), 200)
            left.plot(p, recorded_log_model(p, fit["log_a"], fit["log_b"]), color=colour, label=name)
        else:
            left.plot([], [], color=colour, label=name)
        left.axhline(run["budget"], color=colour, lw=0.8, ls=":")
        positive = rows[(rows.response_amplitude > 0) & (rows.p > 0)].sort_values("p")
        right.scatter(positive.p, positive.response_amplitude, color=colour, s=18)
        slope = run["slope"]
        if np.isfinite(slope["slope"]) and len(positive):
            p = np.geomspace(positive.p.min(), positive.p.max(), 50)
            right.plot(p, np.exp(slope["intercept"]) * p ** slope["slope"], color=colour)
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
    _legend_below(fig, handles=handles + status, labels=labels + [h.get_label() for h in status],
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
        ax.xaxis.set_major_formatter(FuncFormatter(_plain))
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
    _legend_below(fig, handles=handles, labels=[h.get_label() for h in handles], ncol=4)
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
    _legend_below(fig, handles=h1 + h2, labels=l1 + l2, ncol=3)
    return fig
