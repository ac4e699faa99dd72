"""The noisy-SGD update rule and the registry of unlearning methods (no torch needed).

An :class:`UpdateRule` is the frozen set of hyper-parameters of one noisy-SGD update
(``book/methods.md``, "Training with noisy SGD"); :mod:`punl.engine.sgd` applies it. With Poisson sampling at rate q = B / N,
per-example clipping to C and Gaussian noise,

    g_t         = ( sum_{i in batch_t} clip_C(grad l(theta_t; z_i)) + sigma * C * xi_t ) / B
    theta_{t+1} = theta_t - lr * (g_t + weight_decay * theta_t + l1_penalty * sign(theta_t))

An unlearning method maps a configuration to the rule it applies to the retain set
R = D \\ F; adding one is one decorated function:

- ``sgld``: the training update itself on R (same noise sigma, clipping C, batch size B);
- ``finetune``: plain SGD on R (sigma = 0, no clipping);
- ``l1_sparse``: ``finetune`` plus an L1 penalty lambda * ||theta||_1 (Jia et al. 2023).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class UpdateRule:
    """Hyper-parameters of the noisy-SGD update in the module docstring; ``expected_batch`` is
    B (q = B / N); ``clip_per_example=False`` sums unclipped gradients (C then only sets the noise
    scale)."""

    lr: float
    sigma: float
    clip: float
    expected_batch: int
    clip_per_example: bool = True
    weight_decay: float = 0.0
    l1_penalty: float = 0.0

    def sample_rate(self, n: int) -> float:
        """q = B / n for Poisson sampling from ``n`` points."""
        if self.expected_batch > n:
            raise ValueError(f"batch_size: expected batch {self.expected_batch} exceeds the "
                             f"{n} points it samples from")
        return self.expected_batch / n

    def replace(self, **changes) -> "UpdateRule":
        return dataclasses.replace(self, **changes)


def training_rule(config) -> UpdateRule:
    """The update rule a configuration trains with (also used by shadow and retrained models)."""
    return UpdateRule(lr=config.lr, sigma=config.sigma, clip=config.clip,
                      expected_batch=config.batch_size,
                      clip_per_example=config.per_example_clipping,
                      weight_decay=config.weight_decay)


METHODS: dict[str, Callable[[object], UpdateRule]] = {}


def register(name: str):
    """Decorator: register ``fn(config) -> UpdateRule`` as unlearning method ``name``."""
    def wrap(fn):
        METHODS[name] = fn
        return fn
    return wrap


def _unlearning_base(config) -> UpdateRule:
    return training_rule(config).replace(lr=config.effective_unlearn_lr)


@register("sgld")
def sgld(config) -> UpdateRule:
    """theta <- theta - lr * ((sum clip_C(g_i) + sigma C xi) / B + wd * theta) on R."""
    return _unlearning_base(config)


@register("finetune")
def finetune(config) -> UpdateRule:
    """theta <- theta - lr * (sum g_i / B + wd * theta) on R: sgld with sigma = 0, no clipping."""
    return _unlearning_base(config).replace(sigma=0.0, clip_per_example=False)


@register("l1_sparse")
def l1_sparse(config) -> UpdateRule:
    """finetune with the L1 sub-gradient: theta <- theta - lr * (... + lambda * sign(theta))."""
    return finetune(config).replace(l1_penalty=config.l1_penalty)
