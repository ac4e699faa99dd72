"""Forget groups cut from a score column of the scores table.

Points are ranked by the score, ties broken by the unclipped average gradient norm. Groups:

- ``q0`` .. ``q{G-1}``: the ranking cut into G equal quantile bins (``q0`` lowest); each group is
  m points drawn from its bin, class-stratified (each class contributes in proportion to its
  share of the bin);
- ``bottom`` / ``top``: the m lowest / highest ranked points;
- ``random``: m points drawn class-stratified from the whole training set;
- ``p_over_<b>`` / ``<b>_over_p``: the m points on which the privacy loss and baseline b
  disagree most, one way and the other, class-stratified (:func:`disagreement_groups`).

Each group draws from its own random stream, so rebuilding one group reproduces it exactly.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

TIE_BREAK = "avg_grad_norm_unclipped"


def stream_seed(*labels) -> int:
    """A 63-bit seed derived from labels (stable across processes and Python versions)."""
    digest = hashlib.sha256("/".join(map(str, labels)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class ForgetGroup:
    """A forget set: ``indices`` into the training set, cut from ``score`` as group ``label``."""

    score: str
    label: str
    indices: np.ndarray
    score_median: float

    @property
    def key(self) -> str:
        """``label/score``: unique among the groups of one configuration."""
        return f"{self.label}/{self.score}"

    def retain_indices(self, n: int) -> np.ndarray:
        """R = D \\ F, checked: disjoint from F and together they cover every point once."""
        mask = np.ones(n, dtype=bool)
        mask[self.indices] = False
        retain = np.flatnonzero(mask)
        assert len(np.intersect1d(retain, self.indices)) == 0
        assert len(retain) + len(self.indices) == n
        return retain


def ranking(scores: pd.DataFrame, score: str) -> np.ndarray:
    """Point indices from lowest to highest score, ties broken by the unclipped gradient norm;
    points without a value (a memorisation estimate with no shadow model on one side) rank
    lowest."""
    if score not in scores.columns:
        raise ValueError(f"primary_score: {score!r} is not a column of the scores table; "
                         f"choose from {list(scores.columns)}")
    values = np.nan_to_num(scores[score].to_numpy(dtype=float), nan=-np.inf)  # no estimate: lowest
    return np.lexsort((scores[TIE_BREAK].to_numpy(), values))


def stratified_sample(candidates: np.ndarray, labels: np.ndarray, m: int,
                      rng: np.random.Generator) -> np.ndarray:
    """m points from ``candidates``, each class in proportion to its share (largest remainder)."""
    picked = [rng.choice(candidates[labels[candidates] == c], size=t, replace=False)
              for c, t in _quotas(labels[candidates], m).items() if t > 0]
    return np.sort(np.concatenate(picked))


def make_groups(scores: pd.DataFrame, score: str, n_groups: int, m: int, seed: int,
                kinds: tuple[str, ...] = ("quantile", "bottom", "top", "random")) -> list[ForgetGroup]:
    """The forget groups of ``score`` (see the module docstring)."""
    n = len(scores)
    if m * max(n_groups, 1) > n or m >= n:
        raise ValueError(f"group_size: {m} points x {n_groups} groups exceeds the {n} training points")
    order = ranking(scores, score)
    labels = scores["label"].to_numpy()
    values = scores[score].to_numpy()
    groups = []

    def add(label, idx):
        groups.append(ForgetGroup(score, label, np.sort(idx), float(np.median(values[idx]))))

    if "quantile" in kinds:
        for g, bin_ in enumerate(np.array_split(order, n_groups)):
            add(f"q{g}", stratified_sample(bin_, labels, m, np.random.default_rng(
                stream_seed(seed, score, f"q{g}"))))
    if "bottom" in kinds:
        add("bottom", order[:m])
    if "top" in kinds:
        add("top", order[-m:])
    if "random" in kinds:
        add("random", stratified_sample(np.arange(n), labels, m, np.random.default_rng(
            stream_seed(seed, score, "random"))))
    return groups


def _quotas(labels: np.ndarray, m: int) -> dict[int, int]:
    """m split over the classes in proportion to their shares (largest remainder)."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * m / counts.sum()
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take))[: m - take.sum()]:
        take[i] += 1
    return dict(zip(classes.tolist(), take.tolist()))


def disagreement_groups(scores: pd.DataFrame, primary: str, baseline: str,
                        m: int) -> list[ForgetGroup]:
    """The m points whose rank by ``primary`` most exceeds their rank by ``baseline``
    (``p_over_<baseline>``: high privacy loss, low baseline) and the m with the reverse
    (``<baseline>_over_p``), class-stratified: each class gives its share of m, its points
    with the largest (smallest) rank gap. Ranks are fractions in [0, 1) of :func:`ranking`;
    both groups are labelled with ``primary`` as their score."""
    n = len(scores)
    if 2 * m > n:
        raise ValueError(f"group_size: two disagreement groups of {m} exceed the {n} points")
    rank = {s: np.empty(n) for s in (primary, baseline)}
    for s in rank:
        rank[s][ranking(scores, s)] = np.arange(n) / n
    gap = rank[primary] - rank[baseline]
    labels = scores["label"].to_numpy()
    high, low = [], []
    for c, take in _quotas(labels, m).items():
        members = np.flatnonzero(labels == c)
        order = members[np.lexsort((members, gap[members]))]
        high.append(order[len(order) - take:])
        low.append(order[:take])
    values = scores[primary].to_numpy()
    return [ForgetGroup(primary, label, np.sort(np.concatenate(idx)),
                        float(np.median(values[np.concatenate(idx)])))
            for label, idx in ((f"p_over_{baseline}", high), (f"{baseline}_over_p", low))]


def class_composition(group: ForgetGroup, labels: np.ndarray) -> dict[int, int]:
    """How many points of each class the group holds."""
    classes, counts = np.unique(labels[group.indices], return_counts=True)
    return {int(c): int(k) for c, k in zip(classes, counts)}
