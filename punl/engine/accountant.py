"""Per-instance privacy of your own model and training loop.

:class:`PrivacyAccountant` gives any ``nn.Module`` and loss the accounting of the study: while
you train with DP-SGD (Poisson sampling at rate q, per-example clipping at C, Gaussian noise of
standard deviation sigma * C on the clipped sum), :meth:`~PrivacyAccountant.record` measures the
clipped per-example gradient norm s_t(x) = min(||g_t(x)||, C) of every training point at the
current parameters, and :meth:`~PrivacyAccountant.rdp` turns the records into each point's
Rényi-DP at each order (:func:`punl.engine.privacy.per_instance_rdp`):

    P(x; alpha) = sum_k T_k RDP_SGM(alpha; q, sigma C / s_k(x)),

where record k stands for the T_k steps it was given. :meth:`~PrivacyAccountant.epsilon`
converts to (eps, delta) per point. :meth:`~PrivacyAccountant.noisy_step` is one DP-SGD step of
one model, for a loop that has none of its own:

    theta <- theta - lr * (sum_{i in B} min(1, C / ||g_i||) g_i + N(0, sigma^2 C^2 I)) / (q N).

Per-example gradients come from ``torch.func`` (``vmap`` of ``grad``) with the user's loss on
a batch of one example, so any differentiable loss works: its value on that batch of one (summed
where it is not a scalar) is the example's loss, so a mean over several outputs per example
(``MSELoss`` on [1, k] targets) is that example's mean. Dropout draws its own mask for every
example. BatchNorm mixes the examples of a batch, so a
per-example gradient does not exist for it: such models are refused with one error; use
GroupNorm or LayerNorm.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .privacy import per_instance_epsilon, per_instance_rdp

#: The orders at which the accountant evaluates RDP unless told otherwise.
DEFAULT_ORDERS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def _check_model(model: nn.Module) -> None:
    norms = [name for name, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        raise ValueError(f"model: BatchNorm ({', '.join(norms)}) mixes the examples of a batch, "
                         "so it has no per-example gradient; use GroupNorm or LayerNorm")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model: has no trainable parameter")


def _positive(name: str, value: float, upper: float | None = None) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0 or (upper is not None and value > upper):
        bound = f" and at most {upper:g}" if upper is not None else ""
        raise ValueError(f"{name}: must be a finite number above 0{bound}, got {value!r}")
    return value


class PrivacyAccountant:
    """Per-point privacy of DP-SGD training of ``model`` with ``loss_fn`` on ``n`` points.

    ``loss_fn(outputs, targets)`` is called on one example at a time (a batch of one);
    ``sample_rate`` is q, ``noise_multiplier`` sigma and ``clip`` C; ``orders`` are the RDP
    orders alpha. Raises ValueError, naming the parameter, for any of them out of range."""

    def __init__(self, model: nn.Module, loss_fn: Callable, *, n: int, sample_rate: float,
                 noise_multiplier: float, clip: float,
                 orders: Sequence[float] = DEFAULT_ORDERS, chunk_size: int = 256):
        _check_model(model)
        if not callable(loss_fn):
            raise ValueError(f"loss_fn: must be callable, got {type(loss_fn).__name__}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: must be a positive integer, got {n!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: must be a positive integer, got {chunk_size!r}")
        self.model, self.loss_fn, self.n, self.chunk_size = model, loss_fn, int(n), chunk_size
        self.sample_rate = _positive("sample_rate", sample_rate, upper=1.0)
        self.noise_multiplier = _positive("noise_multiplier", noise_multiplier)
        self.clip = _positive("clip", clip)
        self.orders = tuple(float(a) for a in orders)
        if not self.orders or any(not np.isfinite(a) or a <= 1 for a in self.orders):
            raise ValueError(f"orders: must be finite numbers above 1, got {list(orders)}")
        self._records: list[np.ndarray] = []
        self._steps: list[float] = []

    # ---------------------------------------------------------------- per-example gradients
    def _example_grads(self, params: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
        buffers = {k: v.detach() for k, v in self.model.named_buffers()}

        def loss(p, xi, yi):
            out = functional_call(self.model, (p, buffers), (xi.unsqueeze(0),))
            return self.loss_fn(out, yi.unsqueeze(0)).sum()

        return vmap(grad(loss), in_dims=(None, 0, 0), randomness="different")(params, x, y)

    @staticmethod
    def _norms_of(grads: dict) -> torch.Tensor:
        """``||g_i||`` over every parameter, from per-example gradients ``{p: [B, *shape]}``."""
        return torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in grads.values()))

    def _params(self) -> dict:
        return {k: v.detach() for k, v in self.model.named_parameters() if v.requires_grad}

    def norms(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``||g(x_i)||`` of every example at the model's current parameters, unclipped."""
        if len(x) != len(y):
            raise ValueError(f"x, y: {len(x)} inputs but {len(y)} targets")
        params, parts = self._params(), []
        for start in range(0, len(x), self.chunk_size):
            g = self._example_grads(params, x[start:start + self.chunk_size],
                                    y[start:start + self.chunk_size])
            parts.append(self._norms_of(g))
        return torch.cat(parts) if parts else x.new_zeros(0)

    # -------------------------------------------------------------------------- recording
    def record(self, x: torch.Tensor, y: torch.Tensor, steps: float = 1) -> np.ndarray:
        """Record the clipped norms of all ``n`` training points ``(x, y)`` at the current
        parameters, standing for the next ``steps`` training steps; returns them."""
        if len(x) != self.n:
            raise ValueError(f"x: the accountant covers n = {self.n} points, got {len(x)}")
        steps = _positive("steps", steps)
        clipped = np.minimum(self.norms(x, y).double().cpu().numpy(), self.clip)
        if not np.isfinite(clipped).all():
            raise ValueError("x, y: a per-example gradient norm is not finite (NaN or inf)")
        self._records.append(clipped)
        self._steps.append(steps)
        return clipped

    @property
    def steps_recorded(self) -> float:
        """The training steps the records stand for, in all."""
        return float(sum(self._steps))

    def rdp(self) -> np.ndarray:
        """Each point's RDP at each order, shape [n, len(orders)] (module docstring)."""
        if not self._records:
            raise ValueError("record: nothing recorded yet; call record() during training")
        return per_instance_rdp(np.stack(self._records)[None], q=self.sample_rate,
                                noise_multiplier=self.noise_multiplier, clip=self.clip,
                                orders=self.orders, steps_per_record=self._steps)

    def epsilon(self, delta: float) -> np.ndarray:
        """Each point's epsilon at ``delta``, the best over the orders, shape [n]."""
        return per_instance_epsilon(self.rdp(), self.orders, delta)

    # --------------------------------------------------------------------- one noisy step
    def noisy_step(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   generator: torch.Generator | None = None) -> None:
        """One DP-SGD step on the Poisson-sampled batch ``(x, y)`` (module docstring): sets
        every trainable parameter's ``.grad`` to the noisy clipped sum over q N and steps
        ``optimizer``."""
        if len(x) != len(y):
            raise ValueError(f"x, y: {len(x)} inputs but {len(y)} targets")
        params = self._params()
        total = {k: torch.zeros_like(v) for k, v in params.items()}
        for start in range(0, len(x), self.chunk_size):
            g = self._example_grads(params, x[start:start + self.chunk_size],
                                    y[start:start + self.chunk_size])
            norm = self._norms_of(g)
            scale = torch.clamp(self.clip / (norm + 1e-12), max=1.0)
            for k, v in g.items():
                total[k] += torch.einsum("b,b...->...", scale, v)
        named = dict(self.model.named_parameters())
        for k, v in total.items():
            noise = torch.randn(v.shape, generator=generator, dtype=v.dtype, device=v.device)
            named[k].grad = (v + self.noise_multiplier * self.clip * noise) / (
                self.sample_rate * self.n)
        optimizer.step()
