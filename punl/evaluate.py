"""Evaluating many models of one architecture at once: parameters stacked along a leading
dimension and ``vmap(functional_call)`` over it, so S models cost one batched forward pass."""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from .pergrad import Params


def stack_params(params: list[Params]) -> Params:
    """[{name: tensor}] * S -> {name: tensor[S, ...]}."""
    return {k: torch.stack([p[k] for p in params]) for k in params[0]}


def stacked_logits(model: nn.Module, stacked: Params, x: torch.Tensor,
                   chunk_size: int | None = 2048) -> torch.Tensor:
    """Logits of every stacked model on every input: [S, n, classes]."""
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    fn = vmap(lambda p, xb: functional_call(model, (p, buffers), (xb,)), in_dims=(0, None))
    step = chunk_size or len(x)
    with torch.no_grad():
        return torch.cat([fn(stacked, x[i:i + step]) for i in range(0, len(x), step)], dim=1)


def looped_logits(model: nn.Module, params: list[Params], x: torch.Tensor) -> torch.Tensor:
    """The one-by-one reference for :func:`stacked_logits`."""
    with torch.no_grad():
        return torch.stack([functional_call(model, p, (x,)) for p in params])


def stacked_accuracy(model: nn.Module, stacked: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Accuracy of every stacked model: [S]."""
    return (stacked_logits(model, stacked, x).argmax(-1) == y).float().mean(-1)


def stacked_losses(model: nn.Module, stacked: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy of every stacked model: [S, n]."""
    logits = stacked_logits(model, stacked, x)
    return -torch.log_softmax(logits, -1).gather(-1, y.expand(len(logits), -1).unsqueeze(-1)).squeeze(-1)
