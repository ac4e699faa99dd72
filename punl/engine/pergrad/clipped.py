"""Sums of clipped per-example gradients of S models, the step of noisy SGD.

``clipped_gradient_sums`` returns, per model s and example j, ``||g_sj||``, ``sum_j w_sj
min(1, C / ||g_sj||) g_sj`` and the number clipped. The weight gradient of a layer is linear in
the output gradient b, so the weighted sum needs no second backward pass: it is the layer's
weight gradient with b scaled row by row by the coefficients, or the weighted sum of
per-example gradients a rule already formed. All S models run in one stacked pass where that
pays (always for conv-free models; models with convolutions take one pass per model on the CPU,
measured faster there, and the faster of the two, timed once, elsewhere); models without layer
rules use vmap over models of vmap(grad) over examples.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import vmap

from .functional import per_example_grad_fn
from .registry import Params, Unsupported, size_class, timed
from .stacked import Twin, layer_pass, sum_into_first, supports_layer_norms, twin_of


@dataclass(frozen=True)
class ClippedSums:
    """Per model s and example j: ``norms[s, j] = ||g_sj||``; ``summed[p][s] = sum_j
    w_sj min(1, C / ||g_sj||) g_sj[p]``; ``n_clipped[s] = #{j : w_sj > 0, ||g_sj|| > C}``."""

    norms: torch.Tensor
    summed: Params
    n_clipped: torch.Tensor


def _clip_coefficients(norms: torch.Tensor, weights: torch.Tensor,
                       clip: float | None) -> torch.Tensor:
    """``w_sj min(1, C / ||g_sj||)`` (``w_sj`` without clipping), in the dtype of the norms."""
    weights = weights.to(norms.dtype)
    if clip is None:
        return weights
    return weights * (clip / norms.clamp_min(1e-12)).clamp(max=1.0)


def _count_clipped(norms: torch.Tensor, weights: torch.Tensor, clip: float | None) -> torch.Tensor:
    if clip is None:
        return torch.zeros(norms.shape[0], dtype=torch.long, device=norms.device)
    return ((norms > clip) & (weights > 0)).sum(1)


def _clipped_sums_stacked(model, params, x, y, weights, clip) -> ClippedSums:
    """All S models in one pass."""
    parts, _ = layer_pass(model, params, x, y, True)
    with torch.no_grad():
        norms = sum_into_first(sq for _, sq, _ in parts).clamp_min_(0).sqrt_()
        coef = _clip_coefficients(norms, weights, clip)
        summed: Params = {}
        for rec, _, kept in parts:
            summed.update(rec.layer.summed(rec, coef, kept))
    return ClippedSums(norms, {k: summed[k] for k in params}, _count_clipped(norms, weights, clip))


def _clipped_sums_per_model(model, params, x, y, weights, clip) -> ClippedSums:
    """One pass per model, results concatenated."""
    parts = [_clipped_sums_stacked(model, {k: v[s:s + 1] for k, v in params.items()},
                                   x[s:s + 1], y[s:s + 1], weights[s:s + 1], clip)
             for s in range(len(y))]
    return ClippedSums(torch.cat([p.norms for p in parts]),
                       {k: torch.cat([p.summed[k] for p in parts]) for k in params},
                       torch.cat([p.n_clipped for p in parts]))


def stacking_pays(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                   weights: torch.Tensor, clip: float | None) -> bool:
    """Whether one pass of S stacked models beats one pass per model.

    Models whose stacked layers are all ``batched_over_models`` (conv-free ones): always (the
    layers are batched products over the models). Models with convolutions: never on the CPU, where S passes over working sets S times smaller win
    (16 small CNNs or ResNets on 64 images each: about 1.5x to 2.5x faster one by one);
    elsewhere the faster of the two, timed once per (S, input shape with the batch rounded up to
    a power of two, dtype, device) and cached."""
    twin, args = twin_of(model), (params, x, y, weights, clip)
    if len(x) == 1 or all(layer.batched_over_models for layer in twin.layers):
        return True
    return x.device.type != "cpu" and stacking_measured_faster(model, twin, *args)


class StackingFallbackWarning(RuntimeWarning):
    """The stacked per-example pass raised on this device; the model runs one pass per model
    (same results, slower). A test run can turn it into an error
    (``-W error::punl.engine.pergrad.StackingFallbackWarning``)."""


def stacking_measured_faster(model: nn.Module, twin: Twin, *args) -> bool:
    """One stacked pass against one pass per model, timed once per key and cached."""
    x = args[1]
    key = (len(x), size_class(x.shape[1:]), x.dtype, x.device)
    if key not in twin.stacking:
        try:
            _clipped_sums_stacked(model, *args)   # does it run here? (and the warm-up)
        except RuntimeError as err:
            # a safety net for device-only failures (one was seen on a GPU: the rules read
            # thread-local state in hooks that CUDA runs on another thread); the per-model
            # pass is tested there
            warnings.warn(f"punl: the stacked per-example pass failed ({err}); this model "
                          "uses one pass per model", StackingFallbackWarning, stacklevel=2)
            twin.stacking[key] = False
            return False
        _clipped_sums_per_model(model, *args)
        times = timed({"stacked": functools.partial(_clipped_sums_stacked, model, *args),
                        "per_model": functools.partial(_clipped_sums_per_model, model, *args)},
                       x.device, rounds=1, warm_up=False)
        twin.stacking[key] = times["stacked"] < times["per_model"]
    return twin.stacking[key]


def _clipped_sums_by_layers(model, params, x, y, weights, clip) -> ClippedSums:
    args = (params, x, y, weights, clip)
    stacked = stacking_pays(model, *args)
    return (_clipped_sums_stacked if stacked else _clipped_sums_per_model)(model, *args)


def _clipped_sums_by_vmap(model, params, x, y, weights, clip) -> ClippedSums:
    """The same sums from per-example gradients: vmap over models of vmap(grad) over examples."""
    with torch.no_grad():
        grads, _ = vmap(per_example_grad_fn(model))(params, x, y)         # {p: [S, B, *shape]}
        norms = sum(g.flatten(2).pow(2).sum(2) for g in grads.values()).sqrt()
        coef = _clip_coefficients(norms, weights, clip)
        summed = {k: torch.einsum("sb,sb...->s...", coef, g) for k, g in grads.items()}
    return ClippedSums(norms, summed, _count_clipped(norms, weights, clip))


def clipped_gradient_sums(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                          weights: torch.Tensor, clip: float | None) -> ClippedSums:
    """Per-example gradient norms and the sum of clipped per-example gradients of S models.

    ``params``: {name: [S, *shape]}; ``x``: [S, B, *input]; ``y``: [S, B] labels; ``weights``:
    [S, B] (1 for a batch member, 0 for padding); ``clip``: C, or None for no clipping. With
    g_sj the gradient of ``cross_entropy(f(params_s, x_sj), y_sj)``, returns ``||g_sj||``,
    ``sum_j w_sj min(1, C / ||g_sj||) g_sj`` (``sum_j w_sj g_sj`` when C is None) and the number
    of members (w > 0) with ``||g_sj|| > C``. One forward and one backward pass to the layer
    outputs serve all three (module docstring); models without layer rules use vmap(grad)."""
    if y.dim() != 2 or x.shape[:2] != y.shape or weights.shape != y.shape:
        raise ValueError(f"x, y, weights: expected [S, B, ...], [S, B], [S, B]; got "
                         f"{tuple(x.shape)}, {tuple(y.shape)}, {tuple(weights.shape)}")
    if y.shape[1] == 0:
        norms = x.new_zeros(y.shape)
        return ClippedSums(norms, {k: torch.zeros_like(v) for k, v in params.items()},
                           _count_clipped(norms, weights, None))
    if supports_layer_norms(model):
        try:
            return _clipped_sums_by_layers(model, params, x, y, weights, clip)
        except Unsupported:
            pass
    return _clipped_sums_by_vmap(model, params, x, y, weights, clip)
