"""Membership inference against retrained models, calibrated against a permutation null.

The statistic is LiRA's logit-scaled confidence (Carlini et al. 2022), in log space:

    phi(x) = log p_y(x) - log(1 - p_y(x)) = z_y - logsumexp_{j != y} z_j      (z the logits)

Values are centered per example: phi'(x) = phi(x) - mean_m phi_m^ret(x) over the retrained models
(leave-one-out for a retrained model's own value), since points differ far more from one another
than one point does between the unlearned and the retrained models.

**Group attack.** The balanced accuracy (TPR + TNR) / 2 of a threshold on centered values that
tells unlearned from retrained models, with the threshold (and its direction) fitted on one half
of the points and scored on the other (and vice versa, averaged), so that two samples of one
distribution score about 0.5; a bootstrap interval over points.

**Null at the same design.** Under the hypothesis that unlearned and retrained models are draws
of one distribution, the model labels are exchangeable. Relabelling the same models at random
(``n_permutations`` times; recentering each time) gives the statistic's null distribution at the
very numbers of models and points of the test, and the permutation p-value
p = (1 + #{null >= observed}) / (1 + n_permutations).

**Repeated looks.** A group is tested at every checkpoint. The single-step min-p adjustment
(Westfall and Young 1993) uses the same relabellings at every checkpoint: with p*_jk the p-value
relabelling j would have at checkpoint k, the adjusted p-value of checkpoint k is the share of
relabellings with min_k p*_jk <= p_k. Declaring "distinguishable" where the adjusted p-value is
at most the level keeps the chance of any false declaration over all checkpoints, for a group
that is never distinguishable, at most the level.

**Response.** Beside the attack: the mean over the group's points of the Kullback-Leibler
divergence between Gaussians fitted to phi under unlearned and under retrained models,

    KL(N(mu_u, s_u^2) || N(mu_r, s_r^2)) = log(s_r / s_u) + (s_u^2 + (mu_u - mu_r)^2) / (2 s_r^2) - 1/2,

with its null distribution under the same relabellings (its floor: what 16 vs 16 models show of
two identical distributions).

**Per point.** Welch's t-test of a point's phi under the two kinds of model, and the accuracy
1/2 + TV/2 of the optimal test between the two fitted Gaussians. A point is distinguishable at a
checkpoint where its p-value, Bonferroni-adjusted over the checkpoints, is at most the level
(:func:`looks_adjusted`), so a point that never differs is flagged at some look with
probability at most the level.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats


def lira_phi(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """phi = z_y - logsumexp_{j != y} z_j: equals log(p/(1-p)) without cancellation. [..., n]"""
    z_y = logits.gather(-1, y.expand(*logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, y.expand(*logits.shape[:-1]).unsqueeze(-1), float("-inf"))
    return z_y - torch.logsumexp(others, dim=-1)


def centered(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Center [..., models, points] phi arrays by each point's retrained mean (leave-one-out
    for the retrained models themselves)."""
    m = retrained.shape[-2]
    if m < 2:
        raise ValueError("retrain_seeds: centering needs at least 2 retrained models")
    total = retrained.sum(-2, keepdims=True)
    return unlearned - total / m, retrained - (total - retrained) / (m - 1)


def _best_thresholds(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of [P, na] and [P, nb]: the threshold and sign maximising the balanced accuracy
    of 'sign * (v - t) > 0 means a'."""
    values = np.concatenate([a, b], axis=1)
    is_a = np.concatenate([np.ones_like(a), np.zeros_like(b)], axis=1)
    order = np.argsort(values, axis=1)      # ties have probability 0 for continuous phi
    v, lab = np.take_along_axis(values, order, 1), np.take_along_axis(is_a, order, 1)
    zero = np.zeros((len(v), 1))
    # predicting 'a' for values > cut: TPR = #a above / na, TNR = #b at or below / nb
    a_above = a.shape[1] - np.concatenate([zero, np.cumsum(lab, 1)], 1)
    b_below = np.concatenate([zero, np.cumsum(1 - lab, 1)], 1)
    acc_up = 0.5 * (a_above / a.shape[1] + b_below / b.shape[1])
    cuts = np.concatenate([v[:, :1] - 1, (v[:, :-1] + v[:, 1:]) / 2, v[:, -1:] + 1], axis=1)
    up, down = acc_up.argmax(1), acc_up.argmin(1)
    rows = np.arange(len(v))
    use_up = acc_up[rows, up] >= 1 - acc_up[rows, down]
    return np.where(use_up, cuts[rows, up], cuts[rows, down]), np.where(use_up, 1.0, -1.0)


def _balanced_accuracy(a, b, t, sign) -> np.ndarray:
    t, sign = t[:, None], sign[:, None]
    return 0.5 * ((sign * (a - t) > 0).mean(1) + (sign * (b - t) <= 0).mean(1))


def split_attack_accuracy(a: np.ndarray, b: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Held-out balanced accuracy of the threshold attack, a vs b: [..., models, points]
    arrays (leading dimensions batched). Fit on the points with ``fold`` False, score on True,
    and the reverse; averaged. Returns the leading shape (a float for 2-D input)."""
    lead = a.shape[:-2]
    a2, b2 = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    accs = []
    for train in (~fold, fold):
        test = ~train
        if not train.any() or not test.any():
            continue
        flat = lambda x, cols: x[:, :, cols].reshape(len(x), -1)  # noqa: E731
        t, s = _best_thresholds(flat(a2, train), flat(b2, train))
        accs.append(_balanced_accuracy(flat(a2, test), flat(b2, test), t, s))
    out = np.mean(accs, axis=0).reshape(lead)
    return float(out) if out.ndim == 0 else out


def attack_accuracy(phi: np.ndarray, labels: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """The group attack on phi [..., models, points] with the models of ``labels`` [R, models]
    (True: unlearned) as the unlearned side, one accuracy per labelling: [R, ...]."""
    n_u = int(labels[0].sum())
    order = np.argsort(~labels, axis=1, kind="stable")            # unlearned first
    arranged = np.moveaxis(phi[..., order, :], -3, 0)            # [R, ..., models, points]
    u, r = centered(arranged[..., :n_u, :], arranged[..., n_u:, :])
    return split_attack_accuracy(u, r, fold)


def gaussian_kl_of_moments(mu_u, var_u, mu_r, var_r):
    """KL(N(mu_u, var_u) || N(mu_r, var_r)) (module docstring), each variance raised by 1e-12
    so that a sample without spread stays finite."""
    var_u, var_r = var_u + 1e-12, var_r + 1e-12
    return 0.5 * np.log(var_r / var_u) + (var_u + (mu_u - mu_r) ** 2) / (2 * var_r) - 0.5


def gaussian_kl(unlearned: np.ndarray, retrained: np.ndarray) -> np.ndarray:
    """KL(N(mu_u, s_u^2) || N(mu_r, s_r^2)) per point of [..., models, points] arrays."""
    return gaussian_kl_of_moments(unlearned.mean(-2), unlearned.var(-2, ddof=1),
                                  retrained.mean(-2), retrained.var(-2, ddof=1))


def mean_kl(phi: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean over points of :func:`gaussian_kl` for each labelling: [R, ...]."""
    n_u = int(labels[0].sum())
    order = np.argsort(~labels, axis=1, kind="stable")
    arranged = np.moveaxis(phi[..., order, :], -3, 0)
    return gaussian_kl(arranged[..., :n_u, :], arranged[..., n_u:, :]).mean(-1)


def relabellings(n_unlearned: int, n_retrained: int, n: int, rng: np.random.Generator,
                 pairs: bool = False) -> np.ndarray:
    """[n, models] bool: random labellings with ``n_unlearned`` True. ``pairs``: model i and
    model n_unlearned + i form a pair (a coupled design), and each labelling swaps a random
    subset of pairs."""
    models = n_unlearned + n_retrained
    if pairs:
        if n_unlearned != n_retrained:
            raise ValueError("retrain_seeds: a paired design needs as many retrained models as runs")
        swap = rng.random((n, n_unlearned)) < 0.5
        return np.concatenate([~swap, swap], axis=1)
    keys = rng.random((n, models))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    return ranks < n_unlearned


def permutation_p_values(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """p_k = (1 + #{j: null_jk >= observed_k}) / (1 + n) for [checkpoints] and [n, checkpoints]."""
    return (1 + (null >= observed[None]).sum(0)) / (1 + len(null))


def min_p_adjusted(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Single-step min-p adjusted p-values over checkpoints (module docstring)."""
    n = len(null)
    # p*_jk: the p-value relabelling j would have at checkpoint k (against the others)
    ranks = (null[None, :, :] >= null[:, None, :]).sum(1)            # [n, checkpoints]
    min_p = (ranks / n).min(1)                                       # [n]
    p = permutation_p_values(observed, null)
    return (1 + (min_p[:, None] <= p[None, :]).sum(0)) / (1 + n)


def fold_resample(halves: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One bootstrap resample of the points that keeps each in its own half: the points of
    each half are drawn with replacement from that half only, and returned half after half.
    (Resampling all points and keeping the positional fold would put copies of one point in
    both halves, so the threshold fitted on one half would be scored on itself.)"""
    return np.concatenate([rng.choice(h, len(h)) for h in halves])


@dataclass(frozen=True)
class AttackTrack:
    """The group attack at every checkpoint, with its null and adjustments (arrays [C])."""

    accuracy: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    null_mean: np.ndarray
    null_q95: np.ndarray
    p_value: np.ndarray
    adjusted_p: np.ndarray
    divergence: np.ndarray
    divergence_null_mean: np.ndarray
    divergence_null_q95: np.ndarray


def attack_track(phi: np.ndarray, n_unlearned: int, rng: np.random.Generator,
                 n_permutations: int, n_bootstrap: int, paired: bool = False,
                 level: float = 0.95) -> AttackTrack:
    """The attack on phi [checkpoints, models, points] (the first ``n_unlearned`` models are
    the unlearned ones) at every checkpoint, against ``n_permutations`` relabellings shared by
    all checkpoints, with a bootstrap interval over points (resampled within each half of
    the split, :func:`fold_resample`)."""
    models, points = phi.shape[1:]
    fold = rng.permutation(points) < points // 2
    truth = (np.arange(models) < n_unlearned)[None]
    observed = attack_accuracy(phi, truth, fold)[0]                          # [C]
    labels = relabellings(n_unlearned, models - n_unlearned, n_permutations, rng, paired)
    null = attack_accuracy(phi, labels, fold)                                # [n, C]
    halves = [np.flatnonzero(~fold), np.flatnonzero(fold)]
    boot_fold = np.repeat([False, True], [len(h) for h in halves])
    boots = np.stack([attack_accuracy(phi[:, :, fold_resample(halves, rng)], truth,
                                      boot_fold)[0] for _ in range(n_bootstrap)])
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2], axis=0)
    kl, kl_null = mean_kl(phi, truth)[0], mean_kl(phi, labels)
    return AttackTrack(observed, lo, hi, null.mean(0), np.quantile(null, 0.95, axis=0),
                       permutation_p_values(observed, null), min_p_adjusted(observed, null),
                       kl, kl_null.mean(0), np.quantile(kl_null, 0.95, axis=0))


def welch_p_values(phi: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Two-sided Welch p-value per point: phi [..., models, points], labels [R, models] ->
    [R, ..., points] (identical samples read as p = 1)."""
    n_u = int(labels[0].sum())
    order = np.argsort(~labels, axis=1, kind="stable")
    arranged = np.moveaxis(phi[..., order, :], -3, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(arranged[..., :n_u, :], arranged[..., n_u:, :], axis=-2,
                              equal_var=False)
    return np.nan_to_num(res.pvalue, nan=1.0)


def welch_t(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Welch's t statistic and two-sided p-value per point, unlearned vs retrained phi."""
    with warnings.catch_warnings():  # identical samples: t is undefined, read as p = 1
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(unlearned, retrained, axis=0, equal_var=False)
    return np.nan_to_num(res.statistic), np.nan_to_num(res.pvalue, nan=1.0)


def gaussian_fit_accuracy(unlearned: np.ndarray, retrained: np.ndarray, grid: int = 2001) -> np.ndarray:
    """Per point: 1/2 + TV/2 between Gaussians fitted to its phi values under the two kinds of
    model, the accuracy of the optimal (likelihood-ratio) test between the fits. [points]"""
    mu_u, sd_u = unlearned.mean(0), unlearned.std(0, ddof=1) + 1e-6
    mu_r, sd_r = retrained.mean(0), retrained.std(0, ddof=1) + 1e-6
    lo = np.minimum(mu_u - 8 * sd_u, mu_r - 8 * sd_r)
    hi = np.maximum(mu_u + 8 * sd_u, mu_r + 8 * sd_r)
    t = np.linspace(0, 1, grid)[:, None]
    x = lo + t * (hi - lo)
    diff = np.abs(stats.norm.pdf(x, mu_u, sd_u) - stats.norm.pdf(x, mu_r, sd_r))
    tv = 0.5 * np.trapezoid(diff, x, axis=0)
    return 0.5 + 0.5 * np.clip(tv, 0, 1)


def looks_adjusted(p: np.ndarray, axis: int = 0) -> np.ndarray:
    """Bonferroni-adjusted p-values over the looks along ``axis`` (the checkpoints of one test):
    min(1, C p) for C looks. Rejecting where it is at most the level keeps the chance of any false
    rejection among the looks at most the level, whatever their dependence. Unlike Holm's
    step-down version, each look's threshold (level / C) does not depend on the other looks, so
    the false flags of a point that is indistinguishable from some checkpoint on fall at its
    later looks as they fall at the same looks of a point that never differs (where its effect
    is gone from that checkpoint on): the placebo's false flags are a measured model of them
    (:mod:`punl.analysis.lawtest`)."""
    p = np.asarray(p, float)
    return np.minimum(p * p.shape[axis], 1.0)


def steps_to_unlearn(steps: np.ndarray, distinguishable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First checkpoint from which ``distinguishable`` stays False to the end of the budget.

    ``distinguishable``: bool [checkpoints, ...]. Returns (steps, censored): never unlearned
    within the budget gives the last step and censored=True (kept, never dropped)."""
    d = np.asarray(distinguishable, dtype=bool)
    # suffix_clean[k] = True when every checkpoint >= k is indistinguishable
    suffix_clean = np.flip(np.cumprod(np.flip(~d, axis=0), axis=0), axis=0).astype(bool)
    censored = ~suffix_clean[-1]
    first = np.argmax(suffix_clean, axis=0)
    out = np.asarray(steps)[first]
    return np.where(censored, steps[-1], out), censored


def group_status(distinguishable: np.ndarray) -> str:
    """``never distinguishable`` (at no checkpoint), ``censored`` (still at the last one) or
    ``unlearned`` (distinguishable at some checkpoint, and not from some later one on)."""
    d = np.asarray(distinguishable, dtype=bool)
    if not d.any():
        return "never distinguishable"
    return "censored" if d[-1] else "unlearned"
