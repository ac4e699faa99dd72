"""Two-dimensional convolutions: per-example weight-gradient norms by the fastest of four
rules, and S stacked models as one grouped convolution or one per model.

The weight gradient of example i is ``G_i = b_i U_i^T`` with U_i the unfolded input patches
[C_in k k, L]; ``||G_i||_F^2`` comes from the fastest of four rules (``CONV_WEIGHT_RULES``:
shifted views or patch products, F.unfold products, per-example gradients from one grouped
backward-weight convolution, and the Gram form ``sum_{l,l'} (U_i^T U_i)_{ll'} (b_i^T b_i)_{ll'}``),
timed once per layer configuration, shapes, dtype and device; the bias gradient is
``sum_l b_i[:, l]``. Grouped convolutions and string or non-zero padding are not covered.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Unsupported, layer_type, size_class, timed
from .stacked import Record, StackedLayer


def _patches(a: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
    """Input patches [B, L, C_in k_h k_w] of a convolution (a strided view, copied once).

    The order of the K entries differs from the weight's layout; norms do not depend on it."""
    if layer.dilation != (1, 1):
        return F.unfold(a, layer.kernel_size, layer.dilation, layer.padding,
                        layer.stride).transpose(1, 2)
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    view = F.pad(a, (pw, pw, ph, ph)).unfold(2, kh, sh).unfold(3, kw, sw)  # [B, C, H', W', kh, kw]
    n, c, h, w = view.shape[:4]
    return view.permute(0, 2, 3, 1, 4, 5).reshape(n, h * w, c * kh * kw)


def _conv2d_weight_sq_norm_shifted(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||G_i||^2 for a stride-1 convolution without forming the patches.

    In a channels-last copy of the padded input, kernel offset (r, s) sees the input rows at flat
    positions p + r W_p + s, where p = h W_p + w runs over the output positions laid out with the
    padded width W_p (the columns w >= W' read past the row and get a zero output gradient). So
    G_i[:, :, r, s] = b_ext_i @ A_i[offset(r, s) : offset(r, s) + L_ext], a strided view: one
    batched product per kernel offset and no copy of the input per offset."""
    (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
    a = F.pad(a, (pw, pw, ph, ph)).permute(0, 2, 3, 1).contiguous()       # [B, Hp, Wp, C]
    n, hp, wp, c = a.shape
    ho, wo = b.shape[2], b.shape[3]
    length = (ho - 1) * wp + wo
    b_ext = F.pad(b, (0, wp - wo)).flatten(2)[:, :, :length]               # [B, O, L_ext]
    sq = a.new_zeros(n)
    for r in range(kh):
        for s in range(kw):
            window = a.as_strided((n, length, c), (hp * wp * c, c, 1), (r * wp + s) * c)
            sq += torch.bmm(b_ext, window).flatten(1).pow(2).sum(1)
    return sq


def _conv2d_weight_sq_direct(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||b_i U_i^T||_F^2``: shifted views for stride 1, otherwise one batched product with
    the patches."""
    if layer.stride == (1, 1) and layer.dilation == (1, 1) and a.is_contiguous():
        return _conv2d_weight_sq_norm_shifted(layer, a, b)
    return torch.bmm(b.flatten(2), _patches(a, layer)).flatten(1).pow(2).sum(1)


def _conv2d_weight_sq_unfold(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||b_i U_i^T||_F^2`` with U_i = F.unfold(a_i) of shape [C_in k k, L]."""
    u = F.unfold(a, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    return torch.bmm(b.flatten(2), u.transpose(1, 2)).flatten(1).pow(2).sum(1)


def _conv2d_weight_sq_ghost(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_{l,l'} (U_i^T U_i)_{ll'} (b_i^T b_i)_{ll'}`` (equal to ``||b_i U_i^T||_F^2``),
    cheap when the spatial size L is small against C_in k k and C_out."""
    u, b = _patches(a, layer), b.flatten(2)                                          # [B, L, K]
    return (torch.bmm(u, u.transpose(1, 2)) * torch.bmm(b.transpose(1, 2), b)).sum((1, 2))


def conv2d_example_weight_grads(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-example weight gradients ``[B, C_out, C_in, k_h, k_w]``: one grouped backward-weight
    convolution with the batch folded into the groups (input [1, B C_in, H, W], one group per
    example)."""
    n, c, o = a.shape[0], a.shape[1], b.shape[1]
    shape = (n * o, c, *layer.kernel_size)
    grads = torch.ops.aten.convolution_backward(
        b.reshape(1, n * o, *b.shape[2:]), a.reshape(1, n * c, *a.shape[2:]),
        b.new_empty(1).expand(shape), None, layer.stride, layer.padding, layer.dilation,
        False, [0, 0], n, [False, True, False])[1]
    return grads.view(n, o, c, *layer.kernel_size)


def _conv2d_weight_sq_grouped(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||G_i||_F^2`` from the per-example weight gradients of the grouped kernel."""
    return conv2d_example_weight_grads(layer, a, b).flatten(1).pow(2).sum(1)


CONV_WEIGHT_RULES: dict[str, Callable[[nn.Conv2d, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "direct": _conv2d_weight_sq_direct,
    "unfold": _conv2d_weight_sq_unfold,
    "grouped": _conv2d_weight_sq_grouped,
    "ghost": _conv2d_weight_sq_ghost,
}
_CONV_RULE_CHOICE: dict["ConvRuleKey", str] = {}


class ConvRuleKey(NamedTuple):
    """What a timed choice of convolution rule depends on (the cache key)."""
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    input_size_class: tuple[int, ...]   # [rows rounded up to a power of two, C_in, H, W]
    out_channels: int
    contiguous: bool
    dtype: torch.dtype
    device: torch.device
    with_sums: bool


def _conv_rule_key(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor,
                   with_sums: bool) -> ConvRuleKey:
    return ConvRuleKey(layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                       size_class(a.shape), b.shape[1], a.is_contiguous(), a.dtype, a.device,
                       with_sums)


def conv_rule_choices() -> dict[ConvRuleKey, str]:
    """The convolution rules chosen so far in this process, by what the choice depended on."""
    return dict(_CONV_RULE_CHOICE)


def _conv_candidates(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> list[str]:
    """Every rule, less the Gram rule where its [L, L] products clearly cost more than the
    [C_out, C_in k k] ones (L^2 > 4 C_out C_in k k)."""
    length = b.shape[2] * b.shape[3]
    k = a.shape[1] * layer.kernel_size[0] * layer.kernel_size[1]
    return [r for r in CONV_WEIGHT_RULES if r != "ghost" or length * length <= 4 * k * b.shape[1]]


def conv2d_weight_rule(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor,
                       with_sums: bool = False) -> str:
    """The fastest rule of ``CONV_WEIGHT_RULES`` for this layer and these shapes, timed once
    per (configuration, shapes with the batch rounded up to a power of two, dtype, device) and
    cached. ``with_sums``: a weighted sum of the
    per-example weight gradients is needed too, which the ``grouped`` rule has for a weighted
    reduction and the others for one more backward-weight convolution (added to their time)."""
    key = _conv_rule_key(layer, a, b, with_sums)
    if key not in _CONV_RULE_CHOICE:
        fns = {r: functools.partial(CONV_WEIGHT_RULES[r], layer, a, b)
               for r in _conv_candidates(layer, a, b)}
        if with_sums:
            fns["sum"] = functools.partial(_conv2d_weight_sum, layer, a, b, 1)
        with torch.no_grad():
            times = timed(fns, a.device)
        extra = times.pop("sum", 0.0)
        times = {r: t + (0 if r == "grouped" else extra) for r, t in times.items()}
        _CONV_RULE_CHOICE[key] = min(times, key=times.get)
    return _CONV_RULE_CHOICE[key]


def _conv2d_weight_sum(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor,
                       groups: int) -> torch.Tensor:
    """``sum_i b_i U_i^T`` for a convolution of S = ``groups`` stacked models (one backward-weight
    convolution): a [B, S C_in, H, W], b [B, S C_out, H', W'] -> [S C_out, C_in, k, k]."""
    shape = (b.shape[1], a.shape[1] // groups, *layer.kernel_size)
    return torch.ops.aten.convolution_backward(
        b, a, b.new_empty(1).expand(shape), None, layer.stride, layer.padding, layer.dilation,
        False, [0, 0], groups, [False, True, False])[1]


def conv2d_sq_norm(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||G_i||_F^2`` by the timed rule plus ``||sum_l b_i[:, l]||^2`` with a bias."""
    sq = CONV_WEIGHT_RULES[conv2d_weight_rule(layer, a, b)](layer, a, b)
    return sq + (b.flatten(2).sum(2).pow(2).sum(1) if layer.bias is not None else 0)


def check_conv2d(layer: nn.Conv2d) -> None:
    """The rules cover ungrouped convolutions with numeric zero padding."""
    if layer.groups != 1 or isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        raise Unsupported


def _models_into_channels(t: torch.Tensor, models: int) -> torch.Tensor:
    """[S B, C, ...] -> [B, S C, ...] (the layout of a grouped convolution with S groups)."""
    return t.view(models, -1, *t.shape[1:]).transpose(0, 1).flatten(1, 2)


def _channels_into_models(t: torch.Tensor, models: int) -> torch.Tensor:
    """[B, S C, ...] -> [S B, C, ...], the inverse of _models_into_channels."""
    return t.view(t.shape[0], models, -1, *t.shape[2:]).transpose(0, 1).flatten(0, 1)


def _conv2d_grouped(layer: nn.Conv2d, a, weight, bias, models):
    """S convolutions as one grouped convolution (one group per model) on [B, S C, H, W].
    Returns its input and output ([B, S C_out, H', W'])."""
    grouped = _models_into_channels(a, models)
    out = F.conv2d(grouped, weight.flatten(0, 1), None if bias is None else bias.flatten(),
                   layer.stride, layer.padding, layer.dilation, models)
    return grouped, out


def _conv2d_per_model(layer: nn.Conv2d, a, weight, bias, models):
    """S convolutions one after the other on the model-major rows, outputs concatenated.
    Returns the input and the output ([S B, C_out, H', W'])."""
    biases = [None] * models if bias is None else bias.unbind(0)
    outs = [F.conv2d(a_s, w_s, b_s, layer.stride, layer.padding, layer.dilation)
            for a_s, w_s, b_s in zip(_split_models(a, models), weight.unbind(0), biases)]
    return a, outs[0] if models == 1 else torch.cat(outs)


def _split_models(t: torch.Tensor, models: int) -> tuple[torch.Tensor, ...]:
    """[S B, ...] rows -> S tensors [B, ...]."""
    return (t,) if models == 1 else t.reshape(models, -1, *t.shape[1:]).unbind(0)


CONV_STACK_LAYOUTS = {"grouped": _conv2d_grouped, "per_model": _conv2d_per_model}
_CONV_LAYOUT_CHOICE: dict[tuple, str] = {}


def conv2d_stack_layout(layer: nn.Conv2d, a: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor | None) -> str:
    """How to run the convolutions of S = len(weight) stacked models: ``"per_model"`` for one
    model, otherwise the faster of ``CONV_STACK_LAYOUTS`` for the forward pass and the backward
    pass to the input, timed once per (configuration, S, input shape with the rows rounded up to
    a power of two, dtype, device) and cached."""
    models = weight.shape[0]
    if models == 1:
        return "per_model"
    key = (layer.kernel_size, layer.stride, layer.padding, layer.dilation, tuple(weight.shape),
           bias is not None, size_class(a.shape), a.requires_grad, a.dtype, a.device)
    if key not in _CONV_LAYOUT_CHOICE:
        probe = a.detach().requires_grad_(a.requires_grad)

        def run(layout):
            out = CONV_STACK_LAYOUTS[layout](layer, probe, weight, bias, models)[1]
            if probe.requires_grad:
                torch.autograd.grad(out, probe, out.detach())

        with torch.enable_grad():
            times = timed({layout: functools.partial(run, layout)
                            for layout in CONV_STACK_LAYOUTS}, a.device)
        _CONV_LAYOUT_CHOICE[key] = min(times, key=times.get)
    return _CONV_LAYOUT_CHOICE[key]


@layer_type(nn.Conv2d, norm_rule=conv2d_sq_norm, check=check_conv2d,
            weight_rules=CONV_WEIGHT_RULES)
class StackedConv2d(StackedLayer):
    """S convolutions, grouped or one per model (``conv2d_stack_layout``); with the grouped
    layout the recorded rows are ordered (example, model)."""

    batched_over_models = False

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight(), self.bias()
        layout = conv2d_stack_layout(self.spec, a, weight, bias)
        recorded, out = CONV_STACK_LAYOUTS[layout](self.spec, a, weight, bias, len(weight))
        self.record(recorded, out, example_major=layout == "grouped")
        return _channels_into_models(out, len(weight)) if layout == "grouped" else out

    def _rows(self, rec: Record, t: torch.Tensor) -> torch.Tensor:
        """One row per (model, example) or (example, model): [N, C, H, W]."""
        if not rec.example_major:
            return t
        return t.reshape(-1, t.shape[1] // rec.models, *t.shape[2:])

    def _by_model(self, rec: Record, rows: torch.Tensor) -> torch.Tensor:
        """[N, ...] rows -> [S, B, ...]."""
        models = rec.models
        if rec.example_major:
            return rows.view(-1, models, *rows.shape[1:]).transpose(0, 1)
        return rows.view(models, -1, *rows.shape[1:])

    def example_sq_norms(self, rec, b, for_sums):
        """``||G_i||^2`` by the timed rule, plus ``||sum_l b_i[:, l]||^2`` with a bias; keeps
        the per-example bias gradients and either the per-example weight gradients (grouped
        rule) or a and b."""
        a_rows, b_rows = self._rows(rec, rec.a), self._rows(rec, b)
        rule = conv2d_weight_rule(self.spec, a_rows, b_rows, with_sums=for_sums)
        weight_grads = bias_grads = None
        if rule == "grouped" and for_sums:
            weight_grads = conv2d_example_weight_grads(self.spec, a_rows, b_rows).flatten(1)
            sq = weight_grads.pow(2).sum(1)
        else:
            sq = CONV_WEIGHT_RULES[rule](self.spec, a_rows, b_rows)
        if self.bias_name is not None:
            bias_grads = b_rows.flatten(2).sum(2)
            sq = sq + bias_grads.pow(2).sum(1)
        if not for_sums:
            return self._by_model(rec, sq), None
        inputs = (rec.a, b) if weight_grads is None else None
        return self._by_model(rec, sq), (weight_grads, bias_grads, inputs)

    def summed(self, rec, coef, kept):
        """Per model, ``sum_i coef_i G_i``: the weighted per-example gradients when the grouped
        rule formed them, otherwise a backward-weight convolution of ``coef * b``."""
        weight_grads, bias_grads, inputs = kept
        models, spec = rec.models, self.spec
        weight_shape = (models, *spec.weight.shape)
        bias = None if bias_grads is None else self._weighted(rec, bias_grads, coef)
        if weight_grads is not None:
            return self.named(self._weighted(rec, weight_grads, coef).view(weight_shape), bias)
        a, b = inputs
        b_rows = self._rows(rec, b)
        bc = (b_rows.view(len(b_rows), -1) * self._by_model_inverse(rec, coef)).view(b.shape)
        if rec.example_major:
            weight = _conv2d_weight_sum(spec, a, bc, models)
        else:
            weight = torch.stack([_conv2d_weight_sum(spec, a_s, b_s, 1) for a_s, b_s in
                                  zip(_split_models(a, models), _split_models(bc, models))])
        return self.named(weight.view(weight_shape), bias)

    def _by_model_inverse(self, rec: Record, coef: torch.Tensor) -> torch.Tensor:
        """[S, B] -> [N, 1] in the rows' order."""
        return (coef.t() if rec.example_major else coef).reshape(-1, 1)

    def _weighted(self, rec: Record, grads: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """``sum_i coef[s, i] grads[row(s, i)]`` for every model: [S, D]."""
        return torch.einsum("sid,si->sd", self._by_model(rec, grads), coef)
