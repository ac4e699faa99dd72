"""Noisy SGD: Poisson sampling, Gaussian noise, the update step, and runs of many steps.

The one engine that training, shadow models, retraining and unlearning all use. One step at
parameters theta_t applies an :class:`~punl.methods.UpdateRule` (formula in
:mod:`punl.methods`): every point joins the batch independently with probability q = B / n, the
per-example gradients are clipped to C (unless the rule says not to), summed, noised with
sigma * C * xi (xi ~ N(0, I)) and divided by B. Each model draws its batches and its noise from
its own seeded generator, in a fixed order (the batch mask, then the noise of every parameter),
so a model's trajectory depends only on its start, its data and its seed.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .methods import UpdateRule
from .pergrad import Params, per_example_grad_norms, weighted_loss_grad

OnStep = Callable[[int, Params, int], None]


def draw_noise(params: Params, gen: torch.Generator) -> Params:
    """xi ~ N(0, I) with the shape of every parameter, drawn from ``gen`` in a fixed order."""
    return {k: torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
            for k, p in params.items()}


def poisson_batch(n: int, q: float, gen: torch.Generator) -> torch.Tensor:
    """Indices of a Poisson-sampled batch: each of ``n`` points is kept with probability ``q``."""
    return (torch.rand(n, generator=gen) < q).nonzero().squeeze(1)


def noisy_sgd_update(model: nn.Module, params: Params, xb: torch.Tensor, yb: torch.Tensor,
                     noise: Params, rule: UpdateRule,
                     chunk_size: int | None = None) -> tuple[Params, int]:
    """One update of the formula in :mod:`punl.methods`, given the batch and the noise draw.

    Returns the new parameters and how many batch examples were clipped."""
    n_clipped = 0
    if len(xb):
        weights = torch.ones(len(xb), device=xb.device)
        if rule.clip_per_example:
            norms = per_example_grad_norms(model, xb, yb, chunk_size, params)
            weights = (rule.clip / norms.clamp_min(1e-12)).clamp(max=1.0)
            n_clipped = int((norms > rule.clip).sum())
        summed = weighted_loss_grad(model, params, xb, yb, weights)
    else:
        summed = {k: torch.zeros_like(p) for k, p in params.items()}
    new = {}
    for k, p in params.items():
        g = (summed[k] + rule.sigma * rule.clip * noise[k]) / rule.expected_batch
        g = g + rule.weight_decay * p + rule.l1_penalty * torch.sign(p)
        new[k] = p - rule.lr * g
    return new, n_clipped


def run_steps(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
              rule: UpdateRule, steps: int, gen: torch.Generator, on_step: OnStep | None = None,
              chunk_size: int | None = None) -> Params:
    """``steps`` noisy-SGD updates on (x, y); ``on_step(t, params, batch_size)`` before each."""
    q = rule.sample_rate(len(x))
    for t in range(steps):
        idx = poisson_batch(len(x), q, gen).to(x.device)
        if on_step is not None:
            on_step(t, params, len(idx))
        params, _ = noisy_sgd_update(model, params, x[idx], y[idx], draw_noise(params, gen), rule,
                                     chunk_size)
    return params


def run_to_checkpoints(model: nn.Module, start: Params, x: torch.Tensor, y: torch.Tensor,
                       rule: UpdateRule, checkpoints: Sequence[int], seed: int,
                       chunk_size: int | None = None) -> list[Params]:
    """Parameters after each checkpoint's number of steps of ``rule`` on (x, y) from ``start``
    (one stream seeded by ``seed``; checkpoints non-decreasing, 0 gives ``start`` itself)."""
    gen = torch.Generator().manual_seed(seed)
    out, params, done = [], start, 0
    for k in np.asarray(checkpoints, dtype=int):
        params = run_steps(model, params, x, y, rule, int(k) - done, gen, chunk_size=chunk_size)
        done = int(k)
        out.append(params)
    return out


def train_models(model: nn.Module, starts: Sequence[Params], x: torch.Tensor, y: torch.Tensor,
                 rule: UpdateRule, steps: int, seeds: Sequence[int],
                 chunk_size: int | None = None) -> list[Params]:
    """One model per (start, seed): ``steps`` updates of ``rule`` on (x, y) from ``start``."""
    if len(starts) != len(seeds):
        raise ValueError(f"seeds: {len(seeds)} seeds for {len(starts)} starting points")
    return [run_steps(model, start, x, y, rule, steps, torch.Generator().manual_seed(seed),
                      chunk_size=chunk_size) for start, seed in zip(starts, seeds)]
