"""Figures of the scores chapter: the privacy loss distribution, extreme images,
correlations."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .style import MIN_FONT, WIDTH, log_ticks, score_label


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
    ax.set(title="Distribution of the per-instance privacy loss", xlabel=score_label(column),
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
