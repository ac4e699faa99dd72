"""Per-example gradients by ``vmap(grad)`` through ``functional_call``: the path every model
takes, and the reference the per-layer path is tested against.

For a model f with parameters theta and the cross-entropy loss l(theta; x, y), the per-example
gradient of example i is ``g_i = d l(theta; x_i, y_i) / d theta``, computed in chunks of
``chunk_size`` examples so that at most ``chunk_size`` copies of the parameter vector are alive.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .registry import Params


def detached_params(model: nn.Module) -> Params:
    """The model's parameters as a name -> tensor dict, detached from autograd."""
    return {k: v.detach() for k, v in model.named_parameters()}


def chunks(n: int, chunk_size: int | None) -> Iterator[slice]:
    """Slices of at most ``chunk_size`` of n rows (all of them for None)."""
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1 or None, got {chunk_size}")
    step = n if not chunk_size else chunk_size
    for start in range(0, n, max(step, 1)):
        yield slice(start, min(start + step, n))


def _single_example_loss(model: nn.Module, buffers: Params):
    """l(theta; x, y) for one example, returning (loss, logits) so the logits come for free."""

    def loss(params: Params, x: torch.Tensor, y: torch.Tensor):
        logits = functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0)), logits.squeeze(0)

    return loss


def per_example_grad_fn(model: nn.Module):
    """``(params, x, y) -> ({p: [B, *shape]}, logits [B, classes])`` by vmap(grad)."""
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    return vmap(grad(_single_example_loss(model, buffers), has_aux=True), in_dims=(None, 0, 0))


def per_example_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      chunk_size: int | None = None, params: Params | None = None) -> Params:
    """Per-example gradients ``g_i[p]`` of the cross-entropy loss, one tensor per parameter
    ``p`` with a leading batch dimension: ``out[p].shape == (len(x), *p.shape)``."""
    params = detached_params(model) if params is None else params
    fn = per_example_grad_fn(model)
    parts = [fn(params, x[s], y[s])[0] for s in chunks(len(x), chunk_size)]
    return {k: torch.cat([p[k] for p in parts]) for k in params}


def weighted_loss_grad(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                       weights: torch.Tensor) -> Params:
    """``sum_i w_i g_i`` in one backward pass: the gradient of ``sum_i w_i l_i``.

    With ``w_i = min(1, C / ||g_i||)`` this is the sum of clipped per-example gradients."""
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def total(p):
        logits = functional_call(model, (p, buffers), (x,))
        return (F.cross_entropy(logits, y, reduction="none") * weights).sum()

    return grad(total)(params)
