"""Per-example gradient norms and the statistics of the scores.

The norm is the L2 norm over all parameters together: ``||g_i|| = sqrt(sum_p ||g_i[p]||^2)``.
Where every parameterised layer has a registered layer type (:mod:`punl.engine.pergrad.registry`), one
forward and one backward pass give every layer's share of ``||g_i||^2`` without forming the
parameter-sized per-example gradients (:mod:`punl.engine.pergrad.stacked`); otherwise
``vmap(grad)`` forms them chunk by chunk (:mod:`punl.engine.pergrad.functional`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .functional import chunks, detached_params, per_example_grad_fn
from .registry import Params, Unsupported
from .stacked import layer_norms, supports_layer_norms


@dataclass
class ExampleStats:
    """Per-example gradient norm, loss, true-label probability and EL2N score
    ``||softmax(f(x)) - onehot(y)||_2`` at one parameter vector."""

    grad_norm: torch.Tensor
    loss: torch.Tensor
    prob: torch.Tensor
    el2n: torch.Tensor


def per_example_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      chunk_size: int | None = None, params: Params | None = None,
                      method: str = "auto") -> ExampleStats:
    """``||g_i||``, ``l_i``, ``p_{y_i}(x_i)`` and EL2N for every example, chunked; gradients are
    reduced to norms chunk by chunk and never kept. ``method`` as in per_example_grad_norms."""
    norms, logps, el2n = [], [], []
    for s, norm, logits in chunked_norms(model, x, y, chunk_size, params, method):
        norms.append(norm)
        logp_all = torch.log_softmax(logits, dim=1)
        logps.append(logp_all.gather(1, y[s].unsqueeze(1)).squeeze(1))
        onehot = F.one_hot(y[s], logits.shape[1]).to(logits.dtype)
        el2n.append((logp_all.exp() - onehot).norm(dim=1))
    logp = torch.cat(logps)
    return ExampleStats(torch.cat(norms), -logp, logp.exp(), torch.cat(el2n))


def chunked_norms(model, x, y, chunk_size, params, method):
    """Yield (chunk slice, ||g_i|| of the chunk, logits of the chunk): by the per-layer rules
    where ``method`` allows and the model has them, else by vmap(grad)."""
    if method not in ("auto", "vmap", "layers"):
        raise ValueError(f"method: expected 'auto', 'vmap' or 'layers', got {method!r}")
    params = detached_params(model) if params is None else params
    use_layers = method == "layers" or (method == "auto" and supports_layer_norms(model))
    for s in chunks(len(x), chunk_size):
        if use_layers:
            try:
                norm, logits = layer_norms(model, params, x[s], y[s])
                yield s, norm, logits
                continue
            except Unsupported:
                if method == "layers":
                    raise ValueError("method: 'layers' does not support this model") from None
                use_layers = False
        with torch.no_grad():
            grads, logits = per_example_grad_fn(model)(params, x[s], y[s])
            yield s, sum(g.flatten(1).pow(2).sum(1) for g in grads.values()).sqrt(), logits


def per_example_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           chunk_size: int | None = None, params: Params | None = None,
                           method: str = "auto") -> torch.Tensor:
    """A 1-D tensor with each example's L2 gradient norm ``||g_i||`` of the cross-entropy loss.

    ``method``: ``"vmap"`` (torch.func per-example gradients), ``"layers"`` (the per-layer
    identities of the module docstring) or ``"auto"`` (``"layers"`` when every parameterised
    layer has a rule, else ``"vmap"``)."""
    norms = [norm for _, norm, _ in chunked_norms(model, x, y, chunk_size, params, method)]
    return norms[0] if len(norms) == 1 else torch.cat(norms)
