"""Claim 4's measures: the trend of the controlled barrier with the privacy loss over the quantile
groups (:func:`barrier_trends`, decided in :mod:`punl.analysis.claims`), and the paper's loss-barrier
figure in numbers: the m points of highest privacy loss (group ``top``) against the m of lowest
(``bottom``), from the original model (step 0) and from the model unlearned for K steps to a
retrained partner (:func:`hard_easy_barriers`).

For each model pair the controlled barrier is the barrier on the forget points minus the barrier on
their class-matched controls along the same path (:func:`punl.analysis.measures.controlled_barriers`);
over the n pairs its mean x̄ gets Student's interval x̄ ± t_{0.975, n-1} s / √n.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from . import measures
from .measures import controlled_barriers, fmt

@dataclass(frozen=True)
class BarrierTrends:
    """Claim 4's measurements under one choice (:func:`barrier_trends`)."""

    controlled: pd.DataFrame     # :func:`punl.analysis.measures.controlled_barriers`
    p: dict[str, float]          # each quantile group's P, by group
    trends: dict[tuple[str, str], measures.BarrierTrend]     # by (partner, points)


def barrier_trends(study, choice) -> BarrierTrends:
    """Claim 4's measurements under ``choice`` (a :class:`punl.analysis.claims.Choice`) of the
    ``study`` (a :class:`punl.analysis.claims.Study`): the controlled barriers, each quantile group's P
    and, for each (partner, points), the bootstrap trend of the normalised controlled barrier
    with P (:func:`punl.analysis.measures.barrier_trend`)."""
    controlled = measures.controlled_barriers(study.tables.barriers, study.primary_method)
    q = study.quantiles(study.primary_method, choice)
    p = dict(zip(q.group, q.p))
    curves = study.tables.barrier_points
    curves = curves[(curves.method == study.primary_method) & (curves.score == study.primary_score)]
    groups = study.tables.groups[study.tables.groups.score == study.primary_score]
    trends = {(partner, points): measures.barrier_trend(
        curves, groups, p, partner, points,
        study.rng("barrier", partner, points))
        for partner in ("independent", "coupled") for points in ("clean", "flipped")}
    return BarrierTrends(controlled=controlled, p=p, trends=trends)


def trend_interval(t: measures.BarrierTrend) -> str:
    """``rho [low, high]`` of one barrier trend, or why it has none."""
    if np.isfinite(t.spearman):
        return f"{fmt(t.spearman)} [{fmt(t.low)}, {fmt(t.high)}]"
    return f"not measured ({t.groups} group{'s' * (t.groups != 1)} with enough points, 3 needed)"


#: The groups compared, hardest first, with their names in prose.
HARD_EASY = {"top": "hardest", "bottom": "easiest"}


def mean_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``values`` and Student's ``confidence`` interval of it (NaN bounds with
    fewer than two values)."""
    x = np.asarray(values, float)
    mean = float(x.mean()) if len(x) else np.nan
    if len(x) < 2:
        return mean, np.nan, np.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return mean, mean - half, mean + half


def hard_easy_barriers(barriers: pd.DataFrame, method: str, budget: int, score: str,
                       partner: str = "independent") -> pd.DataFrame:
    """Per group (``top``, ``bottom``), kind of point and step (0 and ``budget``): the mean
    controlled barrier over the model pairs with its 95% interval, and the pairs."""
    rows = []
    for step in (0, budget):
        c = controlled_barriers(barriers[barriers.score == score], method, step)
        c = c[(c.partner == partner) & c.group.isin(list(HARD_EASY))]
        for (group, points), g in c.groupby(["group", "points"]):
            mean, low, high = mean_interval(g.controlled_barrier)
            rows.append({"group": group, "points": points, "step": step, "pairs": len(g),
                         "controlled_barrier": mean, "low": low, "high": high})
    columns = ["group", "points", "step", "pairs", "controlled_barrier", "low", "high"]
    return pd.DataFrame(rows, columns=columns)


def hard_easy_sentence(table: pd.DataFrame, sizes: dict[str, int], budget: int) -> str:
    """The figure's finding in words: each group's controlled barrier from the original model
    and after ``budget`` steps, with intervals (``sizes``: each group's points)."""
    if table.empty:
        return ("Neither the hardest nor the easiest group was measured along paths to an "
                "independent partner, so the figure has nothing to compare.")
    parts = []
    for group, word in HARD_EASY.items():
        for points, g in table[table.group == group].groupby("points"):
            at = {int(r.step): f"{fmt(r.controlled_barrier, 2)} nats" + (
                      f" [{fmt(r.low, 2)}, {fmt(r.high, 2)}]" if np.isfinite(r.low)
                      else " (one pair, no interval)") for r in g.itertuples()}
            steps = ", ".join(f"{'from the original' if k == 0 else f'after {budget} steps'} "
                              f"{v}" for k, v in sorted(at.items()))
            parts.append(f"the {word} {sizes.get(group, '?')} ({points} points): {steps}")
    return ("Controlled barrier (forget minus control, mean over model pairs, 95% interval) "
            "to an independent retrained partner: " + "; ".join(parts) + ".")
