"""Per-example gradients, their norms and sums of clipped per-example gradients.

For a model f with parameters theta and the cross-entropy loss l(theta; x, y), the per-example
gradient of example i is ``g_i = d l(theta; x_i, y_i) / d theta`` (every parameter is a variable).
It is computed as ``vmap(grad(l))`` over the batch through ``functional_call``, in chunks of
``chunk_size`` examples so that at most ``chunk_size`` copies of the parameter vector are alive.
The norm is the L2 norm over all parameters together: ``||g_i|| = sqrt(sum_p ||g_i[p]||^2)``.

Norms have a second, faster path that never forms the parameter-sized gradient of a linear layer.
Because no layer mixes examples (no BatchNorm), the gradient of sum_i l_i with respect to a layer's
output, b = d(sum_i l_i)/d out, has row i equal to d l_i / d out_i. One forward pass records each
layer's input a, one backward pass gives b, and each layer's share of ||g_i||^2 follows from them:

- Linear on a vector: ``||b_i a_i^T||_F^2 = ||a_i||^2 ||b_i||^2`` (weight), ``||b_i||^2`` (bias);
- Conv2d: ``||G_i||_F^2`` with ``G_i = b_i U_i^T`` and U_i the unfolded input patches
  [C_in k k, L], by the fastest of four rules (``CONV_WEIGHT_RULES``: shifted views or patch
  products, F.unfold products, per-example gradients from one grouped backward-weight
  convolution, and the Gram form ``sum_{l,l'} (U_i^T U_i)_{ll'} (b_i^T b_i)_{ll'}``), timed once
  per layer configuration, shapes, dtype and device; bias ``||sum_l b_i[:, l]||^2``;
- GroupNorm: ``sum_l b_i x_hat_i`` (weight) and ``sum_l b_i`` (bias) per channel, with x_hat the
  normalised input, in one pass: the affine gradients of one group norm with the examples
  folded into the channels.

The same pass serves S models of one architecture at once (parameters stacked along a leading
dimension): a copy of the model whose parameterised layers take stacked parameters runs on the
S * B (model, example) rows; linear layers are batched products over the models, convolutions
are one grouped convolution or one convolution per model (timed once per shape), and on the CPU
a model with convolutions takes one such pass per model (measured faster there). The weight
gradient of a layer is linear in b, so the sum of clipped gradients ``sum_i c_i g_i`` needs no
second backward pass: it is the layer's weight gradient with b scaled row by row by c_i, or the
c-weighted sum of per-example gradients a rule already formed (:func:`clipped_gradient_sums`).

Models with any other parameterised layer fall back to ``vmap(grad)``.
"""
from __future__ import annotations

import copy
import functools
import math
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

Params = dict[str, torch.Tensor]


def detached_params(model: nn.Module) -> Params:
    """The model's parameters as a name -> tensor dict, detached from autograd."""
    return {k: v.detach() for k, v in model.named_parameters()}


def _chunks(n: int, chunk_size: int | None) -> Iterator[slice]:
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


def _per_example_grad_fn(model: nn.Module):
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    return vmap(grad(_single_example_loss(model, buffers), has_aux=True), in_dims=(None, 0, 0))


def per_example_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      chunk_size: int | None = None, params: Params | None = None) -> Params:
    """Per-example gradients ``g_i[p]`` of the cross-entropy loss, one tensor per parameter
    ``p`` with a leading batch dimension: ``out[p].shape == (len(x), *p.shape)``."""
    params = detached_params(model) if params is None else params
    fn = _per_example_grad_fn(model)
    parts = [fn(params, x[s], y[s])[0] for s in _chunks(len(x), chunk_size)]
    return {k: torch.cat([p[k] for p in parts]) for k in params}


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
    for s, norm, logits in _chunked_norms(model, x, y, chunk_size, params, method):
        norms.append(norm)
        logp_all = torch.log_softmax(logits, dim=1)
        logps.append(logp_all.gather(1, y[s].unsqueeze(1)).squeeze(1))
        onehot = F.one_hot(y[s], logits.shape[1]).to(logits.dtype)
        el2n.append((logp_all.exp() - onehot).norm(dim=1))
    logp = torch.cat(logps)
    return ExampleStats(torch.cat(norms), -logp, logp.exp(), torch.cat(el2n))


def _chunked_norms(model, x, y, chunk_size, params, method):
    """Yield (chunk slice, ||g_i|| of the chunk, logits of the chunk)."""
    if method not in ("auto", "vmap", "layers"):
        raise ValueError(f"method: expected 'auto', 'vmap' or 'layers', got {method!r}")
    params = detached_params(model) if params is None else params
    use_layers = method == "layers" or (method == "auto" and supports_layer_norms(model))
    for s in _chunks(len(x), chunk_size):
        if use_layers:
            try:
                norm, logits = _layer_norms(model, params, x[s], y[s])
                yield s, norm, logits
                continue
            except _Unsupported:
                if method == "layers":
                    raise ValueError("method: 'layers' does not support this model") from None
                use_layers = False
        with torch.no_grad():
            grads, logits = _per_example_grad_fn(model)(params, x[s], y[s])
            yield s, sum(g.flatten(1).pow(2).sum(1) for g in grads.values()).sqrt(), logits


def per_example_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           chunk_size: int | None = None, params: Params | None = None,
                           method: str = "auto") -> torch.Tensor:
    """A 1-D tensor with each example's L2 gradient norm ``||g_i||`` of the cross-entropy loss.

    ``method``: ``"vmap"`` (torch.func per-example gradients), ``"layers"`` (the per-layer
    identities of the module docstring) or ``"auto"`` (``"layers"`` when every parameterised
    layer has a rule, else ``"vmap"``)."""
    norms = [norm for _, norm, _ in _chunked_norms(model, x, y, chunk_size, params, method)]
    return norms[0] if len(norms) == 1 else torch.cat(norms)


class _Unsupported(Exception):
    pass


# ---------------------------------------------------------------- per-layer norm rules

NORM_RULES: dict[type, object] = {}


def norm_rule(layer_type: type):
    """Register ``fn(layer, a, b) -> [B]`` giving the layer's share of ``||g_i||^2``."""
    def wrap(fn):
        NORM_RULES[layer_type] = fn
        return fn
    return wrap


@norm_rule(nn.Linear)
def _linear_sq_norm(layer: nn.Linear, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dim() == 2:  # (||a_i||^2 + 1) ||b_i||^2 with a bias
        a_sq, b_sq = torch.linalg.vecdot(a, a), torch.linalg.vecdot(b, b)
        return torch.addcmul(b_sq, a_sq, b_sq) if layer.bias is not None else a_sq.mul_(b_sq)
    # sequence inputs: per-example weight gradient sum_t b_t a_t^T
    sq = torch.einsum("b...o,b...i->boi", b, a).flatten(1).pow(2).sum(1)
    bias_sq = b.flatten(1, -2).sum(1).pow(2).sum(1)
    return sq + (bias_sq if layer.bias is not None else 0)


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


def _size_class(shape: torch.Size) -> tuple[int, ...]:
    """The shape with its leading (row) dimension rounded up to a power of two, so that batches
    of varying size share a timing."""
    return (1 << max(shape[0] - 1, 0).bit_length(), *shape[1:])


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
                       _size_class(a.shape), b.shape[1], a.is_contiguous(), a.dtype, a.device,
                       with_sums)


def conv_rule_choices() -> dict[ConvRuleKey, str]:
    """The convolution rules chosen so far in this process, by what the choice depended on."""
    return dict(_CONV_RULE_CHOICE)


def _timed(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int = 3,
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
            times = _timed(fns, a.device)
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


@norm_rule(nn.Conv2d)
def _conv2d_sq_norm(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _check_conv_supported(layer)
    sq = CONV_WEIGHT_RULES[conv2d_weight_rule(layer, a, b)](layer, a, b)
    return sq + (b.flatten(2).sum(2).pow(2).sum(1) if layer.bias is not None else 0)


def _check_conv_supported(layer: nn.Conv2d) -> None:
    if layer.groups != 1 or isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        raise _Unsupported


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


@norm_rule(nn.GroupNorm)
def _groupnorm_sq_norm(layer: nn.GroupNorm, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if not layer.affine:
        return a.new_zeros(len(a))
    _, mean, rstd = _groupnorm(a, layer.num_groups, layer.eps)
    gw, gb = _groupnorm_example_grads(a, mean, rstd, b)
    return gw.pow(2).sum(1) + gb.pow(2).sum(1)


# ---------------------------------------------------------------- stacked layers

class _Tape(threading.local):
    """What the stacked layers of one model share during one forward pass (per thread): the
    number of stacked models S, their parameters ({name: [S, *shape]}) and what each layer
    recorded. The rules read only their record: when they run in backward hooks (layer outputs
    of ``STREAM_MIN_ELEMENTS`` or more in all), CUDA's autograd runs them on its own device
    thread, which sees a fresh tape."""

    def __init__(self):
        self.models = 1
        self.params: Params = {}
        self.records: list[_Record] = []


@dataclass
class _Record:
    layer: "_StackedLayer"
    models: int            # S, the number of stacked models (the rules may run on another thread)
    a: torch.Tensor        # the layer's input (its rows as in ``example_major``)
    out: torch.Tensor      # the layer's output, whose gradient b the backward pass returns
    version: int           # out._version when recorded: later in-place changes are refused
    example_major: bool    # rows of a and out ordered (example, model) rather than (model, example)
    saved: tuple           # more forward results the layer's rules read (GroupNorm: mean, 1/std)


class _StackedLayer(nn.Module):
    """One parameterised layer of S stacked models. Its input and output rows are ordered
    (model, example): row s B + i belongs to example i of model s.

    Subclasses give ``forward`` (calling ``record``), ``example_sq_norms(rec, b, for_sums) ->
    ([S, B], kept)`` with b the gradient of the summed loss with respect to the recorded output
    (``kept``: what ``summed`` needs when ``for_sums``, else None) and ``summed(rec, coef, kept)
    -> {name: [S, *shape]}``, the latter being ``sum_i coef[s, i] g_si`` restricted to the
    layer's parameters."""

    def __init__(self, spec: nn.Module, prefix: str, tape: _Tape):
        super().__init__()
        self.spec = spec
        self.tape = tape
        self.weight_name = prefix + "weight"
        self.bias_name = prefix + "bias" if getattr(spec, "bias", None) is not None else None

    def weight(self) -> torch.Tensor:
        return self.tape.params[self.weight_name]

    def bias(self) -> torch.Tensor | None:
        return None if self.bias_name is None else self.tape.params[self.bias_name]

    def record(self, a: torch.Tensor, out: torch.Tensor, example_major: bool = False,
               saved: tuple = ()) -> None:
        if not out.requires_grad:  # the first layer: no backward pass into the input
            out.requires_grad_()
        self.tape.records.append(_Record(self, self.tape.models, a.detach(), out, out._version,
                                         example_major, saved))

    def named(self, weight: torch.Tensor, bias: torch.Tensor | None) -> Params:
        out = {self.weight_name: weight}
        if self.bias_name is not None:
            out[self.bias_name] = bias
        return out


class _StackedLinear(_StackedLayer):
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
        sq = _linear_sq_norm(self.spec, rec.a, b).view(rec.models, -1)
        return sq, ((rec.a, b) if for_sums else None)

    def summed(self, rec, coef, kept):
        """``sum_i coef_i b_i^T a_i`` and ``sum_i coef_i b_i`` per model (bmm over models)."""
        (a, b), models = kept, rec.models
        bc = b.reshape(models, coef.shape[1], -1) * coef.unsqueeze(2)
        bc = bc.view(models, -1, b.shape[-1])
        a3 = a.reshape(models, -1, a.shape[-1])
        return self.named(torch.bmm(bc.transpose(1, 2), a3), bc.sum(1))


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
           bias is not None, _size_class(a.shape), a.requires_grad, a.dtype, a.device)
    if key not in _CONV_LAYOUT_CHOICE:
        probe = a.detach().requires_grad_(a.requires_grad)

        def run(layout):
            out = CONV_STACK_LAYOUTS[layout](layer, probe, weight, bias, models)[1]
            if probe.requires_grad:
                torch.autograd.grad(out, probe, out.detach())

        with torch.enable_grad():
            times = _timed({layout: functools.partial(run, layout)
                            for layout in CONV_STACK_LAYOUTS}, a.device)
        _CONV_LAYOUT_CHOICE[key] = min(times, key=times.get)
    return _CONV_LAYOUT_CHOICE[key]


class _StackedConv2d(_StackedLayer):
    """S convolutions, grouped or one per model (``conv2d_stack_layout``); with the grouped
    layout the recorded rows are ordered (example, model)."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight(), self.bias()
        layout = conv2d_stack_layout(self.spec, a, weight, bias)
        recorded, out = CONV_STACK_LAYOUTS[layout](self.spec, a, weight, bias, len(weight))
        self.record(recorded, out, example_major=layout == "grouped")
        return _channels_into_models(out, len(weight)) if layout == "grouped" else out

    def _rows(self, rec: _Record, t: torch.Tensor) -> torch.Tensor:
        """One row per (model, example) or (example, model): [N, C, H, W]."""
        if not rec.example_major:
            return t
        return t.reshape(-1, t.shape[1] // rec.models, *t.shape[2:])

    def _by_model(self, rec: _Record, rows: torch.Tensor) -> torch.Tensor:
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

    def _by_model_inverse(self, rec: _Record, coef: torch.Tensor) -> torch.Tensor:
        """[S, B] -> [N, 1] in the rows' order."""
        return (coef.t() if rec.example_major else coef).reshape(-1, 1)

    def _weighted(self, rec: _Record, grads: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """``sum_i coef[s, i] grads[row(s, i)]`` for every model: [S, D]."""
        return torch.einsum("sid,si->sd", self._by_model(rec, grads), coef)


class _StackedGroupNorm(_StackedLayer):
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


def _stacked_conv2d(spec: nn.Conv2d, prefix: str, tape: _Tape) -> _StackedLayer:
    _check_conv_supported(spec)
    return _StackedConv2d(spec, prefix, tape)


STACKED_LAYERS: dict[type, Callable[[nn.Module, str, _Tape], _StackedLayer]] = {
    nn.Linear: _StackedLinear,
    nn.Conv2d: _stacked_conv2d,
    nn.GroupNorm: _StackedGroupNorm,
}


@dataclass
class _Twin:
    """A copy of a model whose parameterised layers are stacked layers sharing one tape."""

    module: nn.Module
    layers: list[_StackedLayer]
    tape: _Tape
    stacking: dict[tuple, bool] = field(default_factory=dict)  # see _stacking_pays


_TWINS: "weakref.WeakKeyDictionary[nn.Module, _Twin | None]" = weakref.WeakKeyDictionary()


def _owners(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


def _build_twin(model: nn.Module) -> _Twin | None:
    """The stacked copy of ``model``, or None when a parameterised layer has no stacked version
    or the model has buffers (which a copy would not follow)."""
    owners = _owners(model)
    if (not owners or any(True for _ in model.buffers())
            or any(type(m) not in STACKED_LAYERS or type(m) not in NORM_RULES for _, m in owners)):
        return None
    try:
        module, tape, layers = copy.deepcopy(model), _Tape(), []
    except (TypeError, RuntimeError):  # a model that cannot be copied keeps the vmap path
        return None
    try:
        for name, _ in owners:
            spec = module.get_submodule(name)
            layer = STACKED_LAYERS[type(spec)](spec, name + "." if name else "", tape)
            if name:
                module.set_submodule(name, layer)
            else:
                module = layer
            layers.append(layer)
    except _Unsupported:
        return None
    return _Twin(module, layers, tape)


def _twin(model: nn.Module) -> _Twin | None:
    if model not in _TWINS:
        _TWINS[model] = _build_twin(model)
    return _TWINS[model]


def supports_layer_norms(model: nn.Module) -> bool:
    """True when every module that owns parameters has a registered norm rule and stacked
    version (so norms and clipped sums take the one-pass layer path)."""
    return _twin(model) is not None


def _layer_pass(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                for_sums: bool) -> tuple[list[tuple[_Record, torch.Tensor, object]], torch.Tensor]:
    """One forward pass of S stacked models (params [S, ...], x [S, B, ...], y [S, B]) and one
    backward pass of ``sum_{s,i} l_si`` to every layer output.

    Each layer's ``example_sq_norms`` runs as soon as the backward pass reaches its output (a
    gradient hook), so that its input and output gradient are freed as in an ordinary backward
    pass. Returns ([(record, ||g_si[layer]||^2 [S, B], kept)], logits [S, B, classes])."""
    twin = _twin(model)
    if twin is None:
        raise _Unsupported
    models, batch = y.shape
    if twin.module.training != model.training:
        twin.module.train(model.training)
    tape = twin.tape
    tape.models, tape.records = models, []
    tape.params = {k: v.detach() for k, v in params.items()}
    try:
        with torch.enable_grad():
            logits = twin.module(x.detach().reshape(models * batch, *x.shape[2:]))
            total = F.cross_entropy(logits, y.reshape(-1), reduction="sum")
        records = tape.records
        _check_records(records, twin.layers)
        results = _backward_with_rules(total, records, for_sums)
    finally:
        tape.params, tape.records = {}, []
    return [(r, *results[id(r)]) for r in records], logits.detach().view(models, batch, -1)


STREAM_MIN_ELEMENTS = 1 << 20  # layer outputs at least this large (in all): rules run in hooks


def _backward_with_rules(total: torch.Tensor, records: list[_Record], for_sums: bool) -> dict:
    """{id(record): example_sq_norms(record, b, for_sums)} from one backward pass of ``total``.

    Small outputs: their gradients all at once, then the rules. Large ones (``STREAM_MIN_
    ELEMENTS``): the first layers' outputs are autograd leaves (no input or parameter requires a
    gradient); the backward pass runs to them, and hooks on every other output apply the rules
    on the way, which frees each b (and a) as an ordinary backward pass would."""
    if sum(r.out.numel() for r in records) < STREAM_MIN_ELEMENTS:
        grads = torch.autograd.grad(total, [r.out for r in records])
        with torch.no_grad():
            return {id(r): r.layer.example_sq_norms(r, b, for_sums)
                    for r, b in zip(records, grads)}
    results: dict[int, tuple] = {}

    @torch.no_grad()
    def rules(rec: _Record, b: torch.Tensor) -> None:
        results[id(rec)] = rec.layer.example_sq_norms(rec, b, for_sums)
        rec.a, rec.saved = None, ()

    leaves = [r for r in records if r.out.is_leaf]
    handles = [r.out.register_hook(functools.partial(rules, r))
               for r in records if not r.out.is_leaf]
    try:
        grads = torch.autograd.grad(total, [r.out for r in leaves], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    for r, b in zip(leaves, grads):
        if b is not None:
            rules(r, b)
    if len(results) != len(records):  # a layer output the loss does not depend on
        raise _Unsupported
    return results


def _check_records(records: list[_Record], layers: list[_StackedLayer]) -> None:
    """Each layer ran once and no output was changed in place afterwards; otherwise the
    per-layer identities do not hold."""
    if (len(records) != len(layers) or len({id(r.layer) for r in records}) != len(layers)
            or any(r.out._version != r.version for r in records)):
        raise _Unsupported


def _layer_norms(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor):
    """(||g_i||, logits) of one model on one chunk by the per-layer identities."""
    parts, logits = _layer_pass(model, {k: v.unsqueeze(0) for k, v in params.items()},
                                x.unsqueeze(0), y.unsqueeze(0), False)
    with torch.no_grad():
        sq = _total(sq for _, sq, _ in parts)
        return sq.reshape(-1).clamp_min_(0).sqrt_(), logits[0]


def _total(tensors: Iterator[torch.Tensor]) -> torch.Tensor:
    """The sum of the tensors, accumulated in place into the first (a fresh result)."""
    total = next(tensors)
    for t in tensors:
        total += t
    return total


# ---------------------------------------------------------------- clipped gradient sums

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
    parts, _ = _layer_pass(model, params, x, y, True)
    with torch.no_grad():
        norms = _total(sq for _, sq, _ in parts).clamp_min_(0).sqrt_()
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


def _stacking_pays(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                   weights: torch.Tensor, clip: float | None) -> bool:
    """Whether one pass of S stacked models beats one pass per model.

    Conv-free models: always (the layers are batched products over the models). Models with
    convolutions: never on the CPU, where S passes over working sets S times smaller win
    (16 small CNNs or ResNets on 64 images each: about 1.5x to 2.5x faster one by one);
    elsewhere the faster of the two, timed once per (S, input shape with the batch rounded up to
    a power of two, dtype, device) and cached."""
    twin, args = _twin(model), (params, x, y, weights, clip)
    if len(x) == 1 or not any(isinstance(m, _StackedConv2d) for m in twin.layers):
        return True
    return x.device.type != "cpu" and _stacking_measured_faster(model, twin, *args)


class StackingFallbackWarning(RuntimeWarning):
    """The stacked per-example pass raised on this device; the model runs one pass per model
    (same results, slower). A test run can turn it into an error
    (``-W error::punl.pergrad.StackingFallbackWarning``)."""


def _stacking_measured_faster(model: nn.Module, twin: _Twin, *args) -> bool:
    """One stacked pass against one pass per model, timed once per key and cached."""
    x = args[1]
    key = (len(x), _size_class(x.shape[1:]), x.dtype, x.device)
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
        times = _timed({"stacked": functools.partial(_clipped_sums_stacked, model, *args),
                        "per_model": functools.partial(_clipped_sums_per_model, model, *args)},
                       x.device, rounds=1, warm_up=False)
        twin.stacking[key] = times["stacked"] < times["per_model"]
    return twin.stacking[key]


def _clipped_sums_by_layers(model, params, x, y, weights, clip) -> ClippedSums:
    args = (params, x, y, weights, clip)
    stacked = _stacking_pays(model, *args)
    return (_clipped_sums_stacked if stacked else _clipped_sums_per_model)(model, *args)


def _clipped_sums_by_vmap(model, params, x, y, weights, clip) -> ClippedSums:
    """The same sums from per-example gradients: vmap over models of vmap(grad) over examples."""
    with torch.no_grad():
        grads, _ = vmap(_per_example_grad_fn(model))(params, x, y)         # {p: [S, B, *shape]}
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
        except _Unsupported:
            pass
    return _clipped_sums_by_vmap(model, params, x, y, weights, clip)


def weighted_loss_grad(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                       weights: torch.Tensor) -> Params:
    """``sum_i w_i g_i`` in one backward pass: the gradient of ``sum_i w_i l_i``.

    With ``w_i = min(1, C / ||g_i||)`` this is the sum of clipped per-example gradients."""
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def total(p):
        logits = functional_call(model, (p, buffers), (x,))
        return (F.cross_entropy(logits, y, reduction="none") * weights).sum()

    return grad(total)(params)
