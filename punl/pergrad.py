"""Per-example gradients and their norms with torch.func.

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
- Conv2d: ``G_i = b_i U_i^T`` with U_i the unfolded input patches [C_in k k, L]; for stride 1,
  one product per kernel offset on shifted views of the channels-last input (no patch copy);
  otherwise formed per example in one batched product, or
  ``sum_{l,l'} (U_i^T U_i)_{ll'} (b_i^T b_i)_{ll'}`` when the spatial size L is the smaller side;
  bias ``||sum_l b_i[:, l]||^2``;
- GroupNorm: ``sum_l b_i x_hat_i`` (weight) and ``sum_l b_i`` (bias) per channel, with x_hat the
  normalised input.

Models with any other parameterised layer fall back to ``vmap(grad)``.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Iterator

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
                norm, _, logits = _layer_stats(model, params, x[s], y[s])
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
    return torch.cat([norm for _, norm, _ in _chunked_norms(model, x, y, chunk_size, params, method)])


NORM_RULES: dict[type, object] = {}


def norm_rule(layer_type: type):
    """Register ``fn(layer, a, b) -> [B]`` giving the layer's share of ``||g_i||^2``."""
    def wrap(fn):
        NORM_RULES[layer_type] = fn
        return fn
    return wrap


@norm_rule(nn.Linear)
def _linear_sq_norm(layer: nn.Linear, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dim() == 2:
        sq = a.pow(2).sum(1) * b.pow(2).sum(1)
        bias_sq = b.pow(2).sum(1)
    else:  # sequence inputs: per-example weight gradient sum_t b_t a_t^T
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


@norm_rule(nn.Conv2d)
def _conv2d_sq_norm(layer: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if layer.groups != 1 or isinstance(layer.padding, str):
        raise _Unsupported
    if layer.stride == (1, 1) and layer.dilation == (1, 1) and a.is_contiguous():
        sq = _conv2d_weight_sq_norm_shifted(layer, a, b)
        return sq + (b.flatten(2).sum(2).pow(2).sum(1) if layer.bias is not None else 0)
    u = _patches(a, layer)                                                          # [B, L, K]
    b = b.flatten(2)                                                                # [B, O, L]
    length, k, out = u.shape[1], u.shape[2], b.shape[1]
    if length * length < k * out:
        sq = (torch.bmm(u, u.transpose(1, 2)) * torch.bmm(b.transpose(1, 2), b)).sum((1, 2))
    else:
        sq = torch.bmm(b, u).flatten(1).pow(2).sum(1)
    if layer.bias is not None:
        sq = sq + b.sum(2).pow(2).sum(1)
    return sq


@norm_rule(nn.GroupNorm)
def _groupnorm_sq_norm(layer: nn.GroupNorm, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if not layer.affine:
        return a.new_zeros(len(a))
    x_hat = F.group_norm(a, layer.num_groups, eps=layer.eps)
    gw = (b * x_hat).flatten(2).sum(2)
    gb = b.flatten(2).sum(2)
    return gw.pow(2).sum(1) + gb.pow(2).sum(1)


class _Unsupported(Exception):
    pass


def supports_layer_norms(model: nn.Module) -> bool:
    """True when every module that owns parameters has a registered norm rule."""
    return _layer_plan(model)[0]


_PLANS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _layer_plan(model: nn.Module) -> tuple[bool, list[nn.Module]]:
    """(every parameterised layer has a rule, the layers with rules), cached per model."""
    if model not in _PLANS:
        owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
        _PLANS[model] = (all(type(m) in NORM_RULES for m in owners),
                         [m for m in model.modules() if type(m) in NORM_RULES])
    return _PLANS[model]


def _layer_stats(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor):
    """(grad norm, loss, logits) for one chunk by the per-layer identities."""
    captured: dict[nn.Module, list] = {}

    def hook(module, inputs, output):
        captured.setdefault(module, []).append((inputs[0].detach(), output))

    layers = _layer_plan(model)[1]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.enable_grad():
            live = {k: v.detach().requires_grad_() for k, v in params.items()}
            buffers = {k: v.detach() for k, v in model.named_buffers()}
            logits = functional_call(model, (live, buffers), (x,))
            losses = F.cross_entropy(logits, y, reduction="none")
            if any(len(v) != 1 for v in captured.values()):
                raise _Unsupported  # a layer used twice: its share is not separable this way
            outs = [captured[m][0][1] for m in layers]
            douts = torch.autograd.grad(losses.sum(), outs)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        sq = sum(NORM_RULES[type(m)](m, captured[m][0][0], d) for m, d in zip(layers, douts))
    return sq.clamp_min(0).sqrt(), losses.detach(), logits.detach()


def weighted_loss_grad(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                       weights: torch.Tensor) -> Params:
    """``sum_i w_i g_i`` in one backward pass: the gradient of ``sum_i w_i l_i``.

    With ``w_i = min(1, C / ||g_i||)`` this is the sum of clipped per-example gradients."""
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def total(p):
        logits = functional_call(model, (p, buffers), (x,))
        return (F.cross_entropy(logits, y, reduction="none") * weights).sum()

    return grad(total)(params)
