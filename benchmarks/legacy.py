"""The baseline the engine benchmarks compare against: noisy SGD one model at a time, as punl
ran it before models were stacked (per-example norms, then a second backward pass for the sum
of clipped gradients, per-parameter noise draws)."""
from __future__ import annotations

import numpy as np
import torch

from punl.engine.pergrad import per_example_grad_norms, weighted_loss_grad
from punl.engine.sgd import Member


def legacy_step(model, params, xb, yb, rule, gen):
    """One update of one model: two passes, noise drawn parameter by parameter."""
    weights = torch.ones(len(xb))
    if rule.clip_per_example and len(xb):
        norms = per_example_grad_norms(model, xb, yb, None, params)
        weights = (rule.clip / norms.clamp_min(1e-12)).clamp(max=1.0)
    summed = weighted_loss_grad(model, params, xb, yb, weights) if len(xb) else \
        {k: torch.zeros_like(p) for k, p in params.items()}
    new = {}
    for k, p in params.items():
        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        g = (summed[k] + rule.sigma * rule.clip * noise) / rule.expected_batch
        new[k] = p - rule.lr * (g + rule.weight_decay * p + rule.l1_penalty * torch.sign(p))
    return new


def legacy_run(model, members: list[Member], x, y, rule, steps: int) -> list:
    """Every member alone, ``steps`` legacy steps on its frame (Poisson rate B / |frame|)."""
    out = []
    for m in members:
        gen = torch.Generator().manual_seed(int(m.seed))
        frame = torch.as_tensor(np.asarray(m.frame))
        q = m.sample_rate(rule)
        params = m.start
        for _ in range(steps):
            idx = frame[torch.rand(len(frame), generator=gen) < q]
            params = legacy_step(model, params, x[idx], y[idx], rule, gen)
        out.append(params)
    return out
