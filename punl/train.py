"""Noisy SGD (DP-SGD form, Opacus conventions) and the gradient-norm ledger.

One step at parameters theta_t, with Poisson sampling at rate q = B / N (every point joins the
batch independently with probability q), per-example clipping to C and Gaussian noise:

    g_t         = ( sum_{i in batch_t} clip_C(grad l(theta_t; z_i)) + sigma * C * xi_t ) / B
    theta_{t+1} = theta_t - lr * (g_t + weight_decay * theta_t),     xi_t ~ N(0, I)

with clip_C(g) = g * min(1, C / ||g||); ``clipping=False`` leaves gradients unclipped (then C only
sets the noise scale), ``sigma=0`` is plain SGD.

The ledger: every ``record_every`` steps, at theta_t and for EVERY training point x (not only the
batch's), its clipped norm s_t(x) = min(||g_t(x)||, C) (the raw norm when clipping is off), its
unclipped norm ||g_t(x)||, its loss and its true-label probability. Ledger format (``ledger.npz``):

    clipped_norm, grad_norm, loss, prob : float32 [runs, records, N]
    el2n                                : float32 [runs, records, N], ||softmax - onehot(y)||
    steps                               : int64 [records], the step t of each record
    steps_per_record                    : int64 [records], steps each record stands for
                                          (diff of ``steps`` and the total T; sums to T)
    batch_sizes                         : int64 [runs, T], realised Poisson batch sizes
    train_acc, test_acc                 : float32 [runs, records]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .config import Config
from .data import Dataset
from .models import build_model
from .pergrad import Params, detached_params, per_example_grad_norms, per_example_stats, weighted_loss_grad


LEDGER_FIELDS = ("clipped_norm", "grad_norm", "loss", "prob", "el2n")


@dataclass(frozen=True)
class NoisySGD:
    """The update rule's hyper-parameters; ``expected_batch`` is B (q = B / N)."""

    lr: float
    sigma: float
    clip: float
    expected_batch: int
    clipping: bool = True
    weight_decay: float = 0.0
    l1_penalty: float = 0.0
    chunk_size: int | None = None

    def sample_rate(self, n: int) -> float:
        if self.expected_batch > n:
            raise ValueError(f"batch_size: expected batch {self.expected_batch} exceeds the "
                             f"{n} points it samples from")
        return self.expected_batch / n


def draw_noise(params: Params, gen: torch.Generator) -> Params:
    """xi ~ N(0, I) with the shape of every parameter, drawn from ``gen`` in a fixed order."""
    return {k: torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
            for k, p in params.items()}


def poisson_batch(n: int, q: float, gen: torch.Generator) -> torch.Tensor:
    """Indices of a Poisson-sampled batch: each of ``n`` points is kept with probability ``q``."""
    return (torch.rand(n, generator=gen) < q).nonzero().squeeze(1)


def noisy_sgd_update(model: nn.Module, params: Params, xb: torch.Tensor, yb: torch.Tensor,
                     noise: Params, rule: NoisySGD) -> tuple[Params, int]:
    """One update of the formula in the module docstring, given the batch and the noise draw.

    Returns the new parameters and how many batch examples were clipped. ``rule.l1_penalty``
    adds lr * lambda * sign(theta) (the L1 sub-gradient, for the ``l1_sparse`` method)."""
    n_clipped = 0
    if len(xb):
        weights = torch.ones(len(xb), device=xb.device)
        if rule.clipping:
            norms = per_example_grad_norms(model, xb, yb, rule.chunk_size, params)
            weights = (rule.clip / norms.clamp_min(1e-12)).clamp(max=1.0)
            n_clipped = int((norms > rule.clip).sum())
        summed = weighted_loss_grad(model, params, xb, yb, weights)
    else:
        summed = {k: torch.zeros_like(p) for k, p in params.items()}
    new = {}
    for k, p in params.items():
        g = (summed[k] + rule.sigma * rule.clip * noise[k]) / rule.expected_batch
        g = g + rule.weight_decay * p + rule.l1_penalty * torch.sign(p)
        new[k] = p - rule.lr * g
    return new, n_clipped


def run_steps(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, rule: NoisySGD,
              steps: int, gen: torch.Generator, on_step=None) -> Params:
    """``steps`` noisy-SGD updates on (x, y); ``on_step(t, params, batch_size)`` before each."""
    q = rule.sample_rate(len(x))
    for t in range(steps):
        idx = poisson_batch(len(x), q, gen).to(x.device)
        if on_step is not None:
            on_step(t, params, len(idx))
        params, _ = noisy_sgd_update(model, params, x[idx], y[idx], draw_noise(params, gen), rule)
    return params


def total_steps(config: Config, n: int) -> int:
    """T = ceil(epochs * N / B)."""
    return max(1, math.ceil(config.epochs * n / config.batch_size))


def rule_from_config(config: Config) -> NoisySGD:
    return NoisySGD(lr=config.lr, sigma=config.sigma, clip=config.clip,
                    expected_batch=config.batch_size, clipping=config.clipping,
                    weight_decay=config.weight_decay, chunk_size=config.chunk_size)


def run_seeds(config: Config, run: int) -> tuple[int, int]:
    """(initialisation seed, sampling-and-noise seed) of training run ``run``."""
    base = 1_000_003 * config.seed + 7919 * run
    return base + 1, base + 2


def init_model(config: Config, data: Dataset, init_seed: int) -> nn.Module:
    """The model of ``config`` with parameters drawn from ``init_seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = build_model(config.model, data.input_shape, data.num_classes, config.width,
                            config.depth)
    return model.to(data.x_train.device)


def accuracy(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> float:
    from torch.func import functional_call
    with torch.no_grad():
        return float((functional_call(model, params, (x,)).argmax(1) == y).float().mean())


@dataclass
class RunResult:
    """One training run: its initial and final parameters and its ledger rows."""

    init: Params
    final: Params
    records: dict[str, list] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)

    def to_state(self) -> dict:
        """Tensors only, for ``torch.save`` / ``torch.load(weights_only=True)``."""
        return {"init": self.init, "final": self.final,
                "records": {k: torch.stack(v) if v and torch.is_tensor(v[0]) else torch.tensor(v)
                            for k, v in self.records.items()},
                "batch_sizes": torch.tensor(self.batch_sizes)}

    @classmethod
    def from_state(cls, state: dict) -> "RunResult":
        records = {k: list(v) if v.dim() > 1 else v.tolist() for k, v in state["records"].items()}
        return cls(state["init"], state["final"], records, state["batch_sizes"].tolist())


def train_run(config: Config, data: Dataset, run: int, progress: bool = True) -> RunResult:
    """Train run ``run`` of ``config`` on ``data`` and record the ledger every record_every steps."""
    init_seed, noise_seed = run_seeds(config, run)
    model = init_model(config, data, init_seed)
    params = detached_params(model)
    rule = rule_from_config(config)
    steps = total_steps(config, data.n_train)
    result = RunResult(init={k: v.cpu().clone() for k, v in params.items()}, final={})
    names = LEDGER_FIELDS + ("train_acc", "test_acc")
    result.records = {k: [] for k in names}
    bar = tqdm(total=steps, desc=f"train run {run + 1}/{config.runs}", disable=not progress,
               leave=False)

    def on_step(t, p, batch_size):
        result.batch_sizes.append(batch_size)
        bar.update(1)
        if t % config.record_every == 0:
            _record(result.records, model, p, data, config)

    gen = torch.Generator().manual_seed(noise_seed)
    final = run_steps(model, params, data.x_train, data.y_train, rule, steps, gen, on_step)
    result.final = {k: v.cpu() for k, v in final.items()}
    bar.close()
    return result


def _record(records: dict, model: nn.Module, params: Params, data: Dataset, config: Config):
    stats = per_example_stats(model, data.x_train, data.y_train, config.chunk_size, params)
    clipped = stats.grad_norm.clamp(max=config.clip) if config.clipping else stats.grad_norm
    records["clipped_norm"].append(clipped.cpu())
    records["grad_norm"].append(stats.grad_norm.cpu())
    records["loss"].append(stats.loss.cpu())
    records["prob"].append(stats.prob.cpu())
    records["el2n"].append(stats.el2n.cpu())
    records["train_acc"].append(accuracy(model, params, data.x_train, data.y_train))
    records["test_acc"].append(accuracy(model, params, data.x_test, data.y_test))


def record_steps(total: int, record_every: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps of the records (0, r, 2r, ... < T) and the steps each one stands for."""
    steps = np.arange(0, total, record_every, dtype=np.int64)
    return steps, np.diff(np.append(steps, total))


def train(config: Config, data: Dataset, progress: bool = True,
          cache=None) -> tuple[list[RunResult], dict]:
    """All R runs; returns the runs and the stacked ledger (format in the module docstring).

    ``cache`` (optional) has ``load(run) -> RunResult | None`` and ``save(run, result)``: runs it
    holds are not retrained and each finished run is saved at once, so an interrupted training
    stage resumes from the runs it had finished."""
    runs = []
    for r in tqdm(range(config.runs), desc="training runs", disable=not progress):
        result = cache.load(r) if cache else None
        if result is None:
            result = train_run(config, data, r, progress)
            if cache:
                cache.save(r, result)
        runs.append(result)
    steps, per_record = record_steps(total_steps(config, data.n_train), config.record_every)
    ledger = {k: np.stack([torch.stack(r.records[k]).numpy() for r in runs]).astype(np.float32)
              for k in LEDGER_FIELDS}
    ledger.update(
        steps=steps, steps_per_record=per_record,
        batch_sizes=np.array([r.batch_sizes for r in runs], dtype=np.int64),
        train_acc=np.array([r.records["train_acc"] for r in runs], dtype=np.float32),
        test_acc=np.array([r.records["test_acc"] for r in runs], dtype=np.float32))
    return runs, ledger


def clipped_fraction(ledger: dict, clip: float) -> float:
    """Fraction of (run, record, point) entries whose unclipped norm exceeded C."""
    return float((ledger["grad_norm"] > clip).mean())
