"""Loss barriers on a set S along the linear path between two models A and B.

    L_S(lambda)      = mean_{x in S} l((1 - lambda) theta_A + lambda theta_B; x)
    barrier(A, B; S) = max_{lambda in grid interior} [ L_S(lambda) - ((1 - lambda) L_S(0) + lambda L_S(1)) ]

signed: a negative barrier is a path below the chord (a convex path). Reported beside the
endpoint loss gap L_S(A) - L_S(B) and the parameter distance ||theta_A - theta_B||_2.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..engine.multimodel import many_losses
from ..engine.pergrad import Params


def interpolate(a: Params, b: Params, lambdas: np.ndarray) -> list[Params]:
    """The parameters (1 - lambda) a + lambda b for every lambda of the grid."""
    return [{k: torch.lerp(a[k], b[k], float(lam)) for k in a} for lam in lambdas]


def path_losses(model: nn.Module, a: Params, b: Params, x: torch.Tensor, y: torch.Tensor,
                lambdas: np.ndarray) -> np.ndarray:
    """L_S(lambda) for every lambda of the grid."""
    return many_losses(model, interpolate(a, b, lambdas), x, y).mean(-1).double().cpu().numpy()


def pair_point_losses(model: nn.Module, starts: list[Params], ends: list[Params],
                      x: torch.Tensor, y: torch.Tensor, lambdas: np.ndarray) -> np.ndarray:
    """Each point's loss along the path of every (start, end) pair, evaluated together:
    [pairs, L, points]."""
    models = [m for a, b in zip(starts, ends) for m in interpolate(a, b, lambdas)]
    losses = many_losses(model, models, x, y).double().cpu().numpy()
    return losses.reshape(len(starts), len(lambdas), len(x))


def pair_path_losses(model: nn.Module, starts: list[Params], ends: list[Params], x: torch.Tensor,
                     y: torch.Tensor, lambdas: np.ndarray) -> np.ndarray:
    """L_S(lambda) along the path of every (start, end) pair, evaluated together: [pairs, L]."""
    return pair_point_losses(model, starts, ends, x, y, lambdas).mean(-1)


def barrier_heights(lambdas: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """:func:`barrier_height` of every curve of ``losses`` [..., L]."""
    lambdas, losses = np.asarray(lambdas, float), np.asarray(losses, float)
    chord = (1 - lambdas) * losses[..., :1] + lambdas * losses[..., -1:]
    return (losses - chord)[..., 1:-1].max(-1)


def barrier_height(lambdas: np.ndarray, losses: np.ndarray) -> float:
    """max over interior grid points of L(lambda) minus the chord between the endpoints."""
    lambdas, losses = np.asarray(lambdas, float), np.asarray(losses, float)
    if len(lambdas) < 3 or lambdas[0] != 0 or lambdas[-1] != 1:
        raise ValueError("lambdas: need a grid from 0 to 1 with at least one interior point")
    chord = (1 - lambdas) * losses[0] + lambdas * losses[-1]
    return float(np.max((losses - chord)[1:-1]))


def param_distance(a: Params, b: Params) -> float:
    """||theta_A - theta_B||_2 over all parameters."""
    return float(torch.sqrt(sum((a[k] - b[k]).double().pow(2).sum() for k in a)))
