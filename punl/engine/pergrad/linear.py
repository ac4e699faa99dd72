"""Linear layers: ``out = a W^T + bias``.

Per example, the weight gradient is ``b_i a_i^T``, whose squared norm is
``||a_i||^2 ||b_i||^2`` without forming it; the bias gradient is b_i. For S stacked models the
layer is one batched product over the models, and the sum ``sum_i c_i b_i^T a_i`` of weighted
per-example gradients is one more.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import layer_type
from .stacked import StackedLayer


def linear_sq_norm(layer: nn.Linear, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||b_i a_i^T||_F^2 = ||a_i||^2 ||b_i||^2`` (weight) plus ``||b_i||^2`` (bias) on a
    vector input; ``||sum_t b_it a_it^T||_F^2`` and ``||sum_t b_it||^2`` on a sequence."""
    if a.dim() == 2:  # (||a_i||^2 + 1) ||b_i||^2 with a bias
        a_sq, b_sq = torch.linalg.vecdot(a, a), torch.linalg.vecdot(b, b)
        return torch.addcmul(b_sq, a_sq, b_sq) if layer.bias is not None else a_sq.mul_(b_sq)
    # sequence inputs: per-example weight gradient sum_t b_t a_t^T
    sq = torch.einsum("b...o,b...i->boi", b, a).flatten(1).pow(2).sum(1)
    bias_sq = b.flatten(1, -2).sum(1).pow(2).sum(1)
    return sq + (bias_sq if layer.bias is not None else 0)


@layer_type(nn.Linear, norm_rule=linear_sq_norm)
class StackedLinear(StackedLayer):
    """``out_s = a_s W_s^T + bias_s``: one batched product over the S models."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        w, bias, models = self.weight(), self.bias(), self.tape.models
        if models == 1:
            out = F.linear(a, w[0], None if bias is None else bias[0])
        else:
            a3 = a.reshape(models, -1, a.shape[-1])
            out = (torch.bmm(a3, w.transpose(1, 2)) if bias is None
                   else torch.baddbmm(bias.unsqueeze(1), a3, w.transpose(1, 2)))
            out = out.view(*a.shape[:-1], w.shape[1])
        self.record(a, out)
        return out

    def example_sq_norms(self, rec, b, for_sums):
        sq = linear_sq_norm(self.spec, rec.a, b).view(rec.models, -1)
        return sq, ((rec.a, b) if for_sums else None)

    def summed(self, rec, coef, kept):
        """``sum_i coef_i b_i^T a_i`` and ``sum_i coef_i b_i`` per model (bmm over models)."""
        (a, b), models = kept, rec.models
        bc = b.reshape(models, coef.shape[1], -1) * coef.unsqueeze(2)
        bc = bc.view(models, -1, b.shape[-1])
        a3 = a.reshape(models, -1, a.shape[-1])
        return self.named(torch.bmm(bc.transpose(1, 2), a3), bc.sum(1))
