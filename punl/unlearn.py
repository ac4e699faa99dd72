"""Unlearning methods: a registry of update rules run on the retain set.

Each method maps a configuration to the :class:`~punl.train.NoisySGD` rule it applies to the
retain set R = D \\ F, starting from an original model. Adding a method is one decorated function.

- ``sgld``: the training update itself on R (same noise sigma, clipping C, batch size B);
- ``finetune``: plain SGD on R (sigma = 0, no clipping);
- ``l1_sparse``: ``finetune`` plus an L1 penalty lambda * ||theta||_1 (Jia et al. 2023).
"""
from __future__ import annotations

from typing import Callable

from .train import NoisySGD

METHODS: dict[str, Callable] = {}


def register(name: str):
    """Decorator: register ``fn(config) -> NoisySGD`` as unlearning method ``name``."""
    def wrap(fn):
        METHODS[name] = fn
        return fn
    return wrap


def _base(config, **changes) -> NoisySGD:
    kw = dict(lr=config.effective_unlearn_lr, sigma=config.sigma, clip=config.clip,
              expected_batch=config.batch_size, clipping=config.clipping,
              weight_decay=config.weight_decay, chunk_size=config.chunk_size)
    kw.update(changes)
    return NoisySGD(**kw)


@register("sgld")
def sgld(config) -> NoisySGD:
    """theta <- theta - lr * ((sum clip_C(g_i) + sigma C xi) / B + wd * theta) on R."""
    return _base(config)


@register("finetune")
def finetune(config) -> NoisySGD:
    """theta <- theta - lr * (sum g_i / B + wd * theta) on R: sgld with sigma = 0, no clipping."""
    return _base(config, sigma=0.0, clipping=False)


@register("l1_sparse")
def l1_sparse(config) -> NoisySGD:
    """finetune with the L1 sub-gradient: theta <- theta - lr * (... + lambda * sign(theta))."""
    return _base(config, sigma=0.0, clipping=False, l1_penalty=config.l1_penalty)
