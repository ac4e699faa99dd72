"""Running S models of one architecture at once, and the one backward pass the per-layer rules
read.

A twin of a model is a copy whose parameterised layers are stacked layers (one per registered
layer type, :mod:`punl.engine.pergrad.registry`) sharing one tape: they take parameters stacked along a
leading dimension [S, *shape] and rows ordered (model, example), so one forward pass serves the
S * B (model, example) rows. Each layer records its input a and output; one backward pass of the
summed loss gives each output's gradient b, whose row i is d l_i / d out_i because no layer mixes
examples (no BatchNorm). Each layer's ``example_sq_norms`` turns (a, b) into its share of
``||g_si||^2``, and ``summed`` into ``sum_i coef_si g_si``.
"""
from __future__ import annotations

import copy
import functools
import threading
import weakref
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .registry import LAYER_TYPES, Params, Unsupported


class Tape(threading.local):
    """What the stacked layers of one model share during one forward pass (per thread): the
    number of stacked models S, their parameters ({name: [S, *shape]}) and what each layer
    recorded. The rules read only their record: when they run in backward hooks (layer outputs
    of ``STREAM_MIN_ELEMENTS`` or more in all), CUDA's autograd runs them on its own device
    thread, which sees a fresh tape."""

    def __init__(self):
        self.models = 1
        self.params: Params = {}
        self.records: list[Record] = []


@dataclass
class Record:
    layer: "StackedLayer"
    models: int            # S, the number of stacked models (the rules may run on another thread)
    a: torch.Tensor        # the layer's input (its rows as in ``example_major``)
    out: torch.Tensor      # the layer's output, whose gradient b the backward pass returns
    version: int           # out._version when recorded: later in-place changes are refused
    example_major: bool    # rows of a and out ordered (example, model) rather than (model, example)
    saved: tuple           # more forward results the layer's rules read (GroupNorm: mean, 1/std)


class StackedLayer(nn.Module):
    """One parameterised layer of S stacked models. Its input and output rows are ordered
    (model, example): row s B + i belongs to example i of model s.

    Subclasses give ``forward`` (calling ``record``), ``example_sq_norms(rec, b, for_sums) ->
    ([S, B], kept)`` with b the gradient of the summed loss with respect to the recorded output
    (``kept``: what ``summed`` needs when ``for_sums``, else None) and ``summed(rec, coef, kept)
    -> {name: [S, *shape]}``, the latter being ``sum_i coef[s, i] g_si`` restricted to the
    layer's parameters."""

    #: One pass of S stacked models is batched products over the models, so stacking always
    #: pays (see :func:`punl.engine.pergrad.clipped.stacking_pays`); False: time it per device.
    batched_over_models = True

    def __init__(self, spec: nn.Module, prefix: str, tape: Tape):
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
        self.tape.records.append(Record(self, self.tape.models, a.detach(), out, out._version,
                                         example_major, saved))

    def named(self, weight: torch.Tensor, bias: torch.Tensor | None) -> Params:
        out = {self.weight_name: weight}
        if self.bias_name is not None:
            out[self.bias_name] = bias
        return out


@dataclass
class Twin:
    """A copy of a model whose parameterised layers are stacked layers sharing one tape."""

    module: nn.Module
    layers: list[StackedLayer]
    tape: Tape
    stacking: dict[tuple, bool] = field(default_factory=dict)  # see _stacking_pays


TWINS: "weakref.WeakKeyDictionary[nn.Module, Twin | None]" = weakref.WeakKeyDictionary()


def parameter_owners(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) of every module that owns parameters itself."""
    return [(name, m) for name, m in model.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


def build_twin(model: nn.Module) -> Twin | None:
    """The stacked copy of ``model``, or None when a parameterised layer has no stacked version
    or the model has buffers (which a copy would not follow)."""
    owners = parameter_owners(model)
    if (not owners or any(True for _ in model.buffers())
            or any(type(m) not in LAYER_TYPES for _, m in owners)):
        return None
    try:
        module, tape, layers = copy.deepcopy(model), Tape(), []
    except (TypeError, RuntimeError):  # a model that cannot be copied keeps the vmap path
        return None
    try:
        for name, _ in owners:
            spec = module.get_submodule(name)
            layer = LAYER_TYPES[type(spec)].twin(spec, name + "." if name else "", tape)
            if name:
                module.set_submodule(name, layer)
            else:
                module = layer
            layers.append(layer)
    except Unsupported:
        return None
    return Twin(module, layers, tape)


def twin_of(model: nn.Module) -> Twin | None:
    """The model's twin (:func:`build_twin`), built once per model."""
    if model not in TWINS:
        TWINS[model] = build_twin(model)
    return TWINS[model]


def supports_layer_norms(model: nn.Module) -> bool:
    """True when every module that owns parameters has a registered layer type
    (:mod:`punl.engine.pergrad.registry`) whose check accepts it, so norms and clipped sums take the
    one-pass layer path."""
    return twin_of(model) is not None


def layer_pass(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
               for_sums: bool) -> tuple[list[tuple[Record, torch.Tensor, object]], torch.Tensor]:
    """One forward pass of S stacked models (params [S, ...], x [S, B, ...], y [S, B]) and one
    backward pass of ``sum_{s,i} l_si`` to every layer output.

    Each layer's ``example_sq_norms`` runs as soon as the backward pass reaches its output (a
    gradient hook), so that its input and output gradient are freed as in an ordinary backward
    pass. Returns ([(record, ||g_si[layer]||^2 [S, B], kept)], logits [S, B, classes])."""
    twin = twin_of(model)
    if twin is None:
        raise Unsupported
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
        check_records(records, twin.layers)
        results = backward_with_rules(total, records, for_sums)
    finally:
        tape.params, tape.records = {}, []
    return [(r, *results[id(r)]) for r in records], logits.detach().view(models, batch, -1)


STREAM_MIN_ELEMENTS = 1 << 20  # layer outputs at least this large (in all): rules run in hooks


def backward_with_rules(total: torch.Tensor, records: list[Record], for_sums: bool) -> dict:
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
    def rules(rec: Record, b: torch.Tensor) -> None:
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
        raise Unsupported
    return results


def check_records(records: list[Record], layers: list[StackedLayer]) -> None:
    """Each layer ran once and no output was changed in place afterwards; otherwise the
    per-layer identities do not hold."""
    if (len(records) != len(layers) or len({id(r.layer) for r in records}) != len(layers)
            or any(r.out._version != r.version for r in records)):
        raise Unsupported


def layer_norms(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor):
    """(||g_i||, logits) of one model on one chunk by the per-layer identities."""
    parts, logits = layer_pass(model, {k: v.unsqueeze(0) for k, v in params.items()},
                                x.unsqueeze(0), y.unsqueeze(0), False)
    with torch.no_grad():
        sq = sum_into_first(sq for _, sq, _ in parts)
        return sq.reshape(-1).clamp_min_(0).sqrt_(), logits[0]


def sum_into_first(tensors: Iterator[torch.Tensor]) -> torch.Tensor:
    """The sum of the tensors, accumulated in place into the first (a fresh result)."""
    total = next(tensors)
    for t in tensors:
        total += t
    return total
