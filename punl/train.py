"""Training: the R noisy-SGD runs of a configuration, recording the ledger as they go.

Each run follows the configuration's recipe (:mod:`punl.recipe`) with the engine of
:mod:`punl.sgd`; every ``record_every`` steps the ledger (:mod:`punl.ledger`) records every
training point's gradient norm, loss and confidence at the current parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .config import Config
from .data import Dataset
from .ledger import PER_POINT, Ledger, record_steps
from .methods import training_rule
from .pergrad import Params, detached_params, per_example_stats
from .recipe import init_model, run_seeds, total_steps
from .sgd import run_steps


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
    steps = total_steps(config, data.n_train)
    result = RunResult(init={k: v.cpu().clone() for k, v in params.items()}, final={})
    result.records = {k: [] for k in (*PER_POINT, "train_acc", "test_acc")}
    bar = tqdm(total=steps, desc=f"train run {run + 1}/{config.runs}", disable=not progress,
               leave=False)

    def on_step(t, p, batch_size):
        result.batch_sizes.append(batch_size)
        bar.update(1)
        if t % config.record_every == 0:
            _record(result.records, model, p, data, config)

    gen = torch.Generator().manual_seed(noise_seed)
    final = run_steps(model, params, data.x_train, data.y_train, training_rule(config), steps,
                      gen, on_step, config.chunk_size)
    result.final = {k: v.cpu() for k, v in final.items()}
    bar.close()
    return result


def _record(records: dict, model: nn.Module, params: Params, data: Dataset, config: Config):
    stats = per_example_stats(model, data.x_train, data.y_train, config.chunk_size, params)
    clipped = stats.grad_norm.clamp(max=config.clip) if config.per_example_clipping \
        else stats.grad_norm
    records["clipped_norm"].append(clipped.cpu())
    records["grad_norm"].append(stats.grad_norm.cpu())
    records["loss"].append(stats.loss.cpu())
    records["prob"].append(stats.prob.cpu())
    records["el2n"].append(stats.el2n.cpu())
    records["train_acc"].append(accuracy(model, params, data.x_train, data.y_train))
    records["test_acc"].append(accuracy(model, params, data.x_test, data.y_test))


def train(config: Config, data: Dataset, progress: bool = True,
          cache=None) -> tuple[list[RunResult], Ledger]:
    """All R runs; returns the runs and their ledger.

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
    per_point = {k: np.stack([torch.stack(r.records[k]).numpy() for r in runs]).astype(np.float32)
                 for k in PER_POINT}
    return runs, Ledger(
        **per_point, record_steps=steps, steps_per_record=per_record,
        batch_sizes=np.array([r.batch_sizes for r in runs], dtype=np.int64),
        train_acc=np.array([r.records["train_acc"] for r in runs], dtype=np.float32),
        test_acc=np.array([r.records["test_acc"] for r in runs], dtype=np.float32))
