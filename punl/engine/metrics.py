"""Baseline difficulty metrics per training point, from the same ledgers as the privacy loss.

With R runs, records k = 1..K at steps t_k standing for w_k steps each (sum_k w_k = T):

- ``avg_grad_norm(x)``           = sum_k w_k mean_r s_{t_k}^r(x) / T  (clipped norms)
- ``avg_grad_norm_unclipped(x)`` = the same with the unclipped norms ||g||
- ``confidence(x)``              = sum_k w_k mean_r p^r_{t_k}(y | x) / T  (C-proxy)
- ``el2n(x)``                    = mean over runs and over the records within the first
                                   ``el2n_epochs`` epochs of ||softmax(f(x)) - onehot(y)||_2
                                   (Paul et al. 2021)
- ``final_loss(x)``              = mean_r l(theta_T^r; x), at the final parameters
"""
from __future__ import annotations

import numpy as np

from .ledger import Ledger


def _check_ledger_array(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"{name}: expected an array [runs, records, N], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def time_average(values: np.ndarray, steps_per_record: np.ndarray, name: str = "values") -> np.ndarray:
    """``sum_k w_k mean_r v[r, k, :] / sum_k w_k``: the step-weighted mean over training, [N]."""
    v = _check_ledger_array(values, name)
    w = np.broadcast_to(np.asarray(steps_per_record, dtype=np.float64), (v.shape[1],))
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError("steps_per_record: must be non-negative with a positive sum")
    return np.einsum("k,kn->n", w, v.mean(axis=0)) / w.sum()


def early_average(values: np.ndarray, steps: np.ndarray, until_step: float,
                  name: str = "values") -> np.ndarray:
    """Mean over runs and over the records taken at steps <= ``until_step`` (at least one)."""
    v = _check_ledger_array(values, name)
    keep = np.asarray(steps) <= until_step
    keep[0] = True
    return v[:, keep].mean(axis=(0, 1))


def baseline_metrics(ledger: Ledger, final_loss: np.ndarray, el2n_until_step: float) -> dict:
    """Every baseline column of the scores table, each an array [N]."""
    w = ledger.steps_per_record
    return {
        "avg_grad_norm": time_average(ledger.clipped_norm, w, "clipped_norm"),
        "avg_grad_norm_unclipped": time_average(ledger.grad_norm, w, "grad_norm"),
        "final_loss": np.asarray(final_loss, dtype=np.float64),
        "confidence": time_average(ledger.prob, w, "prob"),
        "el2n": early_average(ledger.el2n, ledger.record_steps, el2n_until_step, "el2n"),
    }
