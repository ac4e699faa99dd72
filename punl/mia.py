"""Membership inference against retrained models: is a forget group still distinguishable?

The statistic is LiRA's logit-scaled confidence (Carlini et al. 2022), in log space:

    phi(x) = log p_y(x) - log(1 - p_y(x)) = z_y - logsumexp_{j != y} z_j      (z the logits)

Values are centered per example: phi'(x) = phi(x) - mean_m phi_m^ret(x) over the retrained models
(leave-one-out for a retrained model's own value), since points differ far more from one another
than one point does between the unlearned and the retrained models.

Group level: the accuracy of a threshold attack telling unlearned from retrained centered values,
with the threshold (and its direction) fitted on one half of the points and scored on the other
(and vice versa), so two samples of one distribution score ~0.5; balanced accuracy
(TPR + TNR) / 2; a bootstrap interval over points. Example level (U-LiRA style): Gaussian fits of
phi under unlearned and retrained models per point, their Welch t statistic, and the accuracy of
the optimal test between the two fitted Gaussians, 1/2 + TV(N_u, N_r)/2.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import stats


def lira_phi(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """phi = z_y - logsumexp_{j != y} z_j: equals log(p/(1-p)) without cancellation. [..., n]"""
    z_y = logits.gather(-1, y.expand(*logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, y.expand(*logits.shape[:-1]).unsqueeze(-1), float("-inf"))
    return z_y - torch.logsumexp(others, dim=-1)


def centered(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Center [models, points] phi arrays by each point's retrained mean (leave-one-out for the
    retrained models themselves)."""
    m = retrained.shape[0]
    if m < 2:
        raise ValueError("retrain_seeds: centering needs at least 2 retrained models")
    total = retrained.sum(0, keepdims=True)
    return unlearned - total / m, retrained - (total - retrained) / (m - 1)


def _best_threshold(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Threshold and sign maximising the balanced accuracy of 'sign * (v - t) > 0 means a'."""
    values = np.concatenate([a, b])
    is_a = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    order = np.argsort(values, kind="stable")
    v, lab = values[order], is_a[order]
    # predicting 'a' for values > cut: TPR = (#a above), TNR = (#b at or below)
    a_above = len(a) - np.concatenate([[0], np.cumsum(lab)])
    b_below = np.concatenate([[0], np.cumsum(1 - lab)])
    acc_up = 0.5 * (a_above / len(a) + b_below / len(b))
    cuts = np.concatenate([[v[0] - 1], (v[:-1] + v[1:]) / 2, [v[-1] + 1]])
    best_up, best_down = np.argmax(acc_up), np.argmax(1 - acc_up)
    if acc_up[best_up] >= 1 - acc_up[best_down]:
        return float(cuts[best_up]), 1
    return float(cuts[best_down]), -1


def _balanced_accuracy(a: np.ndarray, b: np.ndarray, t: float, sign: int) -> float:
    return 0.5 * (np.mean(sign * (a - t) > 0) + np.mean(sign * (b - t) <= 0))


def split_attack_accuracy(a: np.ndarray, b: np.ndarray, fold: np.ndarray) -> float:
    """Held-out balanced accuracy of the threshold attack on [models, points] arrays ``a`` vs
    ``b``: fit on the points with ``fold`` False, score on True, and the reverse; averaged."""
    accs = []
    for train in (~fold, fold):
        test = ~train
        if not train.any() or not test.any():
            continue
        t, s = _best_threshold(a[:, train].ravel(), b[:, train].ravel())
        accs.append(_balanced_accuracy(a[:, test].ravel(), b[:, test].ravel(), t, s))
    return float(np.mean(accs))


def group_attack(unlearned: np.ndarray, retrained: np.ndarray, n_bootstrap: int,
                 rng: np.random.Generator, level: float = 0.95) -> dict[str, float]:
    """Group-level MIA on phi arrays [models, points]: accuracy, bootstrap interval over points,
    and the null accuracy (one half of the retrained models against the other)."""
    u, r = centered(unlearned, retrained)
    n = u.shape[1]
    fold = rng.permutation(n) < n // 2
    acc = split_attack_accuracy(u, r, fold)
    boots = []
    for _ in range(n_bootstrap):
        pick = rng.integers(0, n, n)
        boots.append(split_attack_accuracy(u[:, pick], r[:, pick], fold))
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    half = retrained.shape[0] // 2
    null = np.nan
    if half >= 2 and retrained.shape[0] - half >= 2:
        ra, rb = centered(retrained[:half], retrained[half:])
        null = split_attack_accuracy(ra, rb, fold)
    return {"mia_acc": acc, "mia_ci_low": float(lo), "mia_ci_high": float(hi), "mia_null": null}


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


def welch_t(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Welch's t statistic and two-sided p-value per point, unlearned vs retrained phi."""
    with warnings.catch_warnings():  # identical samples: t is undefined, read as p = 1
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(unlearned, retrained, axis=0, equal_var=False)
    return np.nan_to_num(res.statistic), np.nan_to_num(res.pvalue, nan=1.0)


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
