"""Forget groups cut from a score column of the scores table.

Points are ranked by the score, ties broken by the unclipped average gradient norm. Groups:

- ``q0`` .. ``q{G-1}``: the ranking cut into G equal quantile bins (``q0`` lowest); each group is
  m points drawn from its bin, class-stratified (each class contributes in proportion to its
  share of the bin);
- ``bottom`` / ``top``: the m lowest / highest ranked points;
- ``random``: m points drawn class-stratified from the whole training set;
- ``p_over_<b>`` / ``<b>_over_p``: the m points on which the privacy loss and baseline b
  disagree most, one way and the other, class-stratified (:func:`disagreement_groups`);
- held-out deletion requests (:func:`heldout_groups`), unlearned like every group but never used
  to fit a prediction or decide a claim: ``r0``.. random (class-stratified), ``mix0``.. mixed
  (mostly points of the lower half of the ranking with a few of its top tenth) and ``cls0``..
  single-class groups.

Each group draws from its own random stream, so rebuilding one group reproduces it exactly.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.config import ConfigError

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


# ------------------------------------------------------------------------ held-out requests
#: The kinds of held-out request, by the prefix of their labels.
HELDOUT_KINDS = {"r": "heldout_random", "mix": "heldout_mixed", "cls": "heldout_class"}
#: Share of a mixed request's points taken from the top tenth, cycling over the requests.
MIXED_HARD_SHARES = (0.04, 0.1, 0.2)


def group_kind(label: str) -> str:
    """The kind of a group from its label: ``quantile`` (q0, q1, ..), ``disagreement``
    (<a>_over_<b>), a held-out request kind (r0, mix0, cls0, ..; :data:`HELDOUT_KINDS`), or the
    label itself (bottom, top, random)."""
    if re.fullmatch(r"q\d+", label):
        return "quantile"
    if "_over_" in label:
        return "disagreement"
    prefix = re.fullmatch(r"(r|mix|cls)\d+", label)
    return HELDOUT_KINDS[prefix[1]] if prefix else label


def quantile_groups(labels) -> list[str]:
    """The quantile groups ``q0``, ``q1``, ... among ``labels``, in order, each once."""
    q = {g for g in labels if isinstance(g, str) and group_kind(g) == "quantile"}
    return sorted(q, key=lambda g: int(g[1:]))


def is_heldout(kind: str) -> bool:
    """Whether a group kind is a held-out request kind."""
    return kind in HELDOUT_KINDS.values()


def hard_count(m: int, j: int) -> int:
    """The number of top-tenth points in mixed request j of m points: m times the j-th share of
    :data:`MIXED_HARD_SHARES` (cycling), rounded, at least 1."""
    return max(1, round(m * MIXED_HARD_SHARES[j % len(MIXED_HARD_SHARES)]))


def mixed_fits(n: int, m: int) -> bool:
    """Whether mixed requests of m points fit n points: the easy part within the lower half of
    the ranking and the hard part within its top tenth."""
    most = max(hard_count(m, j) for j in range(len(MIXED_HARD_SHARES)))
    return m - 1 <= n // 2 and most <= math.ceil(n / 10)


def heldout_groups(scores: pd.DataFrame, score: str, n_requests: int, m: int,
                   seed: int) -> list[ForgetGroup]:
    """``n_requests`` held-out requests of each kind, m points each, every one from its own
    stream (labelled with ``score``, by which the mixed ones are cut):

    - ``r{j}``: m points drawn class-stratified from the whole training set;
    - ``mix{j}``: :func:`hard_count` points from the top tenth of the ranking by ``score`` and
      the rest from its lower half (a request whose median is low and whose maximum is high);
    - ``cls{j}``: m points of one class (the classes with at least m points, in an order drawn
      once, cycling)."""
    if n_requests <= 0:
        return []
    n = len(scores)
    order = ranking(scores, score)
    labels = scores["label"].to_numpy()
    values = scores[score].to_numpy()
    if not mixed_fits(n, m):
        raise ConfigError(f"group_size: mixed held-out requests of {m} points do not fit the "
                         f"{n} training points; lower group_size or set heldout_requests: 0")
    classes, counts = np.unique(labels, return_counts=True)
    eligible = classes[counts >= m]
    if not len(eligible):
        raise ConfigError(f"group_size: no class has {m} points for a single-class held-out "
                         "request; lower group_size or set heldout_requests: 0")
    class_order = np.random.default_rng(stream_seed(seed, score, "cls")).permutation(eligible)
    easy, hard = order[: n // 2], order[-math.ceil(n / 10):]
    groups = []

    def add(label, idx):
        groups.append(ForgetGroup(score, label, np.sort(idx), float(np.median(values[idx]))))

    for j in range(n_requests):
        rng = np.random.default_rng(stream_seed(seed, score, f"r{j}"))
        add(f"r{j}", stratified_sample(np.arange(n), labels, m, rng))
    for j in range(n_requests):
        rng = np.random.default_rng(stream_seed(seed, score, f"mix{j}"))
        h = hard_count(m, j)
        add(f"mix{j}", np.concatenate([rng.choice(easy, m - h, replace=False),
                                       rng.choice(hard, h, replace=False)]))
    for j in range(n_requests):
        rng = np.random.default_rng(stream_seed(seed, score, f"cls{j}"))
        members = np.flatnonzero(labels == class_order[j % len(class_order)])
        add(f"cls{j}", rng.choice(members, m, replace=False))
    return groups


def class_composition(group: ForgetGroup, labels: np.ndarray) -> dict[int, int]:
    """How many points of each class the group holds."""
    classes, counts = np.unique(labels[group.indices], return_counts=True)
    return {int(c): int(k) for c, k in zip(classes, counts)}
