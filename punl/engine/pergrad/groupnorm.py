"""GroupNorm: ``out = x_hat * weight + bias`` with x_hat the group-normalised input.

Per example the affine gradients are ``sum_l b_i x_hat_i`` (weight) and ``sum_l b_i`` (bias)
per channel, in one pass: the affine gradients of one group norm with the examples folded into
the channels. For S stacked models the normalisation runs once on all rows and the affine map
per model.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .registry import layer_type
from .stacked import StackedLayer


def _groupnorm(a: torch.Tensor, groups: int, eps: float, weight=None, bias=None):
    """(group norm of a with the optional affine map, per-(example, group) mean, 1 / std)."""
    return torch.native_group_norm(a, weight, bias, a.shape[0], a.shape[1],
                                   math.prod(a.shape[2:]), groups, eps)


def _groupnorm_example_grads(a: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                             b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example GroupNorm gradients ``(sum_l b_i x_hat_i, sum_l b_i)``, each [B, C], in one
    pass over a and b: the weight and bias gradients of a group norm with the B examples folded
    into the channels (one example of B C channels in B G groups, same mean and 1 / std)."""
    n, c, length = a.shape[0], a.shape[1], math.prod(a.shape[2:])
    # the affine weight enters only the input gradient (not asked for); CUDA needs a tensor
    unit_weight = a.new_ones(n * c)
    _, gw, gb = torch.ops.aten.native_group_norm_backward(
        b.reshape(1, n * c, length), a.reshape(1, n * c, length), mean.reshape(1, -1),
        rstd.reshape(1, -1), unit_weight, 1, n * c, length, mean.numel(), [False, True, True])
    return gw.view(n, c), gb.view(n, c)


def groupnorm_sq_norm(layer: nn.GroupNorm, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||sum_l b_i x_hat_i||^2 + ||sum_l b_i||^2`` over the channels (0 without affine)."""
    if not layer.affine:
        return a.new_zeros(len(a))
    _, mean, rstd = _groupnorm(a, layer.num_groups, layer.eps)
    gw, gb = _groupnorm_example_grads(a, mean, rstd, b)
    return gw.pow(2).sum(1) + gb.pow(2).sum(1)


@layer_type(nn.GroupNorm, norm_rule=groupnorm_sq_norm)
class StackedGroupNorm(StackedLayer):
    """``out = x_hat * weight_s + bias_s`` with x_hat the group-normalised input (one fused
    operation for one model); records the input and the groups' mean and 1 / std."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        models, channels, spec = self.tape.models, a.shape[1], self.spec
        weight, bias = self.weight(), self.bias()
        if models == 1:
            out, mean, rstd = _groupnorm(a, spec.num_groups, spec.eps, weight[0], bias[0])
        else:
            x_hat, mean, rstd = _groupnorm(a, spec.num_groups, spec.eps)
            shape = (models, 1, channels) + (1,) * (a.dim() - 2)
            out = torch.addcmul(bias.view(shape), x_hat.view(models, -1, *a.shape[1:]),
                                weight.view(shape)).view(a.shape)
        self.record(a, out, saved=(mean.detach(), rstd.detach()))
        return out

    def example_sq_norms(self, rec, b, for_sums):
        gw, gb = _groupnorm_example_grads(rec.a, *rec.saved, b)
        sq = gw.pow(2).sum(1) + gb.pow(2).sum(1)
        return sq.view(rec.models, -1), ((gw, gb) if for_sums else None)

    def summed(self, rec, coef, kept):
        models = rec.models
        gw, gb = (torch.einsum("sic,si->sc", g.view(models, -1, g.shape[1]), coef) for g in kept)
        return self.named(gw, gb)
