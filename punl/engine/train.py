"""Training: the R noisy-SGD runs of a configuration, recording the ledger as they go.

Each run follows the configuration's recipe (:mod:`punl.engine.recipe`) with the engine of
:mod:`punl.engine.sgd`; every ``config.record_interval(N)`` steps the ledger (:mod:`punl.engine.ledger`) records every
training point's gradient norm, loss and confidence at the current parameters.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..core.config import Config
from .data import Dataset
from .ledger import PER_POINT, Ledger, record_steps
from ..core.methods import training_rule
from .pergrad import Params, per_example_stats
from .recipe import from_scratch, init_model, run_seeds, total_steps
from .sgd import Population


def accuracy(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> float:
    from torch.func import functional_call
    with torch.no_grad():
        return float((functional_call(model, params, (x,)).argmax(1) == y).float().mean())


@dataclass(frozen=True)
class RunResult:
    """One training run: its initial and final parameters (on the CPU)."""

    init: Params
    final: Params


SNAPSHOT_SECONDS = 30.0  # a training population saves its state at most this often


class _LedgerRows:
    """The ledger's rows, one per record, as they are taken."""

    def __init__(self, state: dict | None = None):
        self.rows: dict[str, list] = state["rows"] if state else \
            {k: [] for k in (*PER_POINT, "train_acc", "test_acc")}
        self.batch_sizes: list = state["batch_sizes"] if state else []

    def state(self) -> dict:
        return {"rows": self.rows, "batch_sizes": [b.cpu() for b in self.batch_sizes]}

    def record(self, model: nn.Module, stacked: Params, data: Dataset, config: Config) -> None:
        """Every run's per-point stats and accuracies at the current parameters."""
        per_run = [_record(model, {k: v[s] for k, v in stacked.items()}, data, config)
                   for s in range(len(next(iter(stacked.values()))))]
        for k in self.rows:
            self.rows[k].append(torch.stack([torch.as_tensor(r[k]) for r in per_run]))


def _record(model: nn.Module, params: Params, data: Dataset, config: Config) -> dict:
    stats = per_example_stats(model, data.x_train, data.y_train, config.chunk_size, params)
    clipped = stats.grad_norm.clamp(max=config.clip) if config.per_example_clipping \
        else stats.grad_norm
    return {"clipped_norm": clipped.cpu(), "grad_norm": stats.grad_norm.cpu(),
            "loss": stats.loss.cpu(), "prob": stats.prob.cpu(), "el2n": stats.el2n.cpu(),
            "train_acc": accuracy(model, params, data.x_train, data.y_train),
            "test_acc": accuracy(model, params, data.x_test, data.y_test)}


def train(config: Config, data: Dataset, progress: bool = True,
          snapshots=None) -> tuple[list[RunResult], Ledger]:
    """All R runs, trained together as one population; returns the runs and their ledger.

    ``snapshots`` (optional) has ``load() -> dict | None`` and ``save(state)``: the population
    saves its state (and the ledger so far) every ``SNAPSHOT_SECONDS`` between blocks, and an
    interrupted training stage resumes from the last one, with the same result."""
    seeds = [run_seeds(config, r) for r in range(config.runs)]
    members = [from_scratch(config, data, s, np.arange(data.n_train)) for s in seeds]
    model = init_model(config, data, seeds[0][0])
    population = Population(model, members, data.x_train, data.y_train, training_rule(config))
    state = snapshots.load() if snapshots else None
    rows = _LedgerRows(state["ledger"] if state else None)
    if state:
        population.restore(state["population"])
    steps = total_steps(config, data.n_train)

    interval = config.record_interval(data.n_train)

    def on_step(t, params, batch_sizes):
        rows.batch_sizes.append(batch_sizes)          # stays on the device until the end
        if t % interval == 0:
            rows.record(model, params, data, config)

    _advance(population, steps, on_step, snapshots, rows, progress)
    runs = [RunResult({k: v.cpu().clone() for k, v in m.start.items()},
                      {k: v.cpu().clone() for k, v in population.member(s).items()})
            for s, m in enumerate(members)]
    return runs, _ledger(rows, interval, steps)


def _advance(population: Population, steps: int, on_step, snapshots, rows: _LedgerRows,
             progress: bool) -> None:
    """Advance to ``steps``, saving a snapshot between blocks at most every SNAPSHOT_SECONDS."""
    segment = math.lcm(*population.streams.lengths)
    last = time.monotonic()
    with tqdm(total=steps, initial=population.t, desc="training steps (all runs together)",
              disable=not progress) as bar:
        while population.t < steps:
            done = population.t
            population.advance(min(segment, steps - done), on_step)
            bar.update(population.t - done)
            if snapshots and population.t < steps and time.monotonic() - last > SNAPSHOT_SECONDS:
                snapshots.save({"population": population.state(), "ledger": rows.state()})
                last = time.monotonic()


def _ledger(rows: _LedgerRows, interval: int, steps: int) -> Ledger:
    record_at, per_record = record_steps(steps, interval)
    stacked = {k: torch.stack(v, dim=1).numpy() for k, v in rows.rows.items()}  # [R, records, ...]
    return Ledger(**{k: stacked[k].astype(np.float32) for k in PER_POINT},
                  record_steps=record_at, steps_per_record=per_record,
                  batch_sizes=torch.stack([b.cpu() for b in rows.batch_sizes],
                                          dim=1).numpy().astype(np.int64),
                  train_acc=stacked["train_acc"].astype(np.float32),
                  test_acc=stacked["test_acc"].astype(np.float32))


def mean_training_loss(config: Config, data: Dataset, params: list[Params]) -> float:
    """The cross-entropy on the training set at each parameter vector, averaged over points
    and vectors: one forward pass per vector, in chunks (no gradients)."""
    from torch.func import functional_call
    model = init_model(config, data, run_seeds(config, 0)[0])
    total, chunk = 0.0, config.chunk_size or len(data.x_train)
    with torch.no_grad():
        for p in params:
            for start in range(0, len(data.x_train), chunk):
                x, y = (t[start:start + chunk] for t in (data.x_train, data.y_train))
                logits = functional_call(model, p, (x,))
                total += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
    return total / (len(params) * len(data.x_train))
