"""One record per layer type: how the per-layer path computes that layer's share of the
per-example gradient norms and how it runs the layer for S stacked models.

A layer type is one file that defines its stacked twin (a :class:`punl.engine.pergrad.stacked.StackedLayer`)
and registers it with its norm rule::

    @layer_type(nn.Linear, norm_rule=linear_sq_norm)
    class StackedLinear(StackedLayer): ...

``norm_rule(layer, a, b) -> [B]`` gives ``||g_i[layer]||^2`` from the layer's input a and the
gradient b of the summed loss with respect to its output (one model); ``check(layer)`` raises
:class:`Unsupported` for a configuration the rules do not cover (the model then takes the vmap
path); ``weight_rules`` lists interchangeable rules for the weight's share, timed per shape.
A model takes the per-layer path when every module that owns parameters has a record.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

Params = dict[str, torch.Tensor]


class Unsupported(Exception):
    """The per-layer path does not cover this model or layer; the vmap path takes over."""


def supported(layer: nn.Module) -> None:
    """The default check: every configuration of the layer type is covered."""


@dataclass(frozen=True)
class LayerType:
    """What the per-layer path knows of one ``nn.Module`` type."""

    module: type
    norm_rule: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    stacked: type                  # a StackedLayer subclass: stacked(layer, prefix, tape)
    check: Callable[[nn.Module], None] = supported
    weight_rules: Mapping[str, Callable] = field(default_factory=dict)

    def twin(self, layer: nn.Module, prefix: str, tape) -> nn.Module:
        """The stacked version of ``layer`` (:class:`Unsupported` where ``check`` refuses)."""
        self.check(layer)
        return self.stacked(layer, prefix, tape)

    def sq_norms(self, layer: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The layer's share of every example's ``||g_i||^2`` (one model)."""
        self.check(layer)
        return self.norm_rule(layer, a, b)


#: The registered layer types, by module type.
LAYER_TYPES: dict[type, LayerType] = {}


def layer_type(module: type, norm_rule: Callable, check: Callable[[nn.Module], None] = supported,
               weight_rules: Mapping[str, Callable] | None = None):
    """Class decorator registering the decorated stacked layer as ``module``'s twin, with its
    norm rule (module docstring)."""
    def register(stacked: type) -> type:
        LAYER_TYPES[module] = LayerType(module, norm_rule, stacked, check, weight_rules or {})
        return stacked
    return register


def size_class(shape: torch.Size) -> tuple[int, ...]:
    """The shape with its leading (row) dimension rounded up to a power of two, so that batches
    of varying size share a timing."""
    return (1 << max(shape[0] - 1, 0).bit_length(), *shape[1:])


def timed(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int = 3,
          warm_up: bool = True) -> dict[str, float]:
    """Best wall-clock time of each ``fn()`` over ``rounds`` rounds after one warm-up call each
    (unless the caller has made them), the rounds interleaved (round r of every candidate before
    round r + 1 of any), so that a burst of background load does not fall on one candidate
    alone."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    for fn in fns.values() if warm_up else ():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best
