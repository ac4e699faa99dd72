"""Many models of one architecture at once: evaluated stacked (vmap) or one by one.

Two ways: parameters stacked along a leading dimension with ``vmap(functional_call)`` (one
batched forward pass for S models), or one model after the other. Which is faster depends on the
shapes (``python -m benchmarks evaluation``, one thread): stacking wins for fully connected models on
a few inputs, such as a forget group (2.3x for 32 MLPs on 50 points), and loses for
convolutional models (0.3-0.7x) and on large input sets (0.96x for 32 MLPs on 1,437 points).
:func:`many_logits` chooses accordingly. Convolutional models evaluated one by one run over
their inputs in chunks of 256 (2.2x faster than all at once for a small CNN on 4,000 MNIST
images, one thread: the working set stays in cache).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from .pergrad import Params

STACK_MAX_INPUTS = 256  # stacking pays for conv-free models on at most this many inputs
CONV_EVAL_CHUNK = 256   # convolutional models evaluate fastest on inputs in chunks of this size


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


def looped_logits(model: nn.Module, params: list[Params], x: torch.Tensor,
                  chunk_size: int | None = None) -> torch.Tensor:
    """Logits of each model in turn, over inputs in chunks of ``chunk_size`` (None: all at
    once): [S, n, classes]."""
    step = chunk_size or max(len(x), 1)
    with torch.no_grad():
        return torch.stack([torch.cat([functional_call(model, p, (x[i:i + step],))
                                       for i in range(0, len(x), step)]) for p in params])


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def stacking_pays(model: nn.Module, n_inputs: int) -> bool:
    """The measured rule: stack conv-free models evaluated on few inputs."""
    return not _has_conv(model) and n_inputs <= STACK_MAX_INPUTS


def many_logits(model: nn.Module, params: list[Params], x: torch.Tensor) -> torch.Tensor:
    """Logits of every model in ``params`` on ``x`` ([S, n, classes]), stacked where it pays."""
    if stacking_pays(model, len(x)):
        return stacked_logits(model, stack_params(params), x)
    return looped_logits(model, params, x, CONV_EVAL_CHUNK if _has_conv(model) else None)


def many_accuracy(model: nn.Module, params: list[Params], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Accuracy of every model: [S]."""
    return (many_logits(model, params, x).argmax(-1) == y).float().mean(-1)


def many_losses(model: nn.Module, params: list[Params], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy of every model: [S, n]."""
    logits = many_logits(model, params, x)
    return -torch.log_softmax(logits, -1).gather(-1, y.expand(len(logits), -1).unsqueeze(-1)).squeeze(-1)
