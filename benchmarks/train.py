"""Training R = 16 noisy-SGD models on digits: together (the engine) against one by one.

Rows: the previous one-model-at-a-time loop (two passes per step; the baseline, on the CPU
only); the engine with one member per population; the engine with all runs stacked in one
population. Speed-ups are against the first row. Same configuration
(digits-quick's MLP, its batch size, noise and clipping), same number of steps, one process."""
from __future__ import annotations

import numpy as np

from punl.core.config import load_config
from punl.core.methods import training_rule
from punl.stages.pipeline import load_data
from punl.engine.recipe import from_scratch, init_model, run_seeds
from punl.engine.sgd import run_steps

from .legacy import legacy_run
from .timing import best_time, print_rows


def bench_train(runs: int = 16, steps: int = 100, rounds: int = 2,
                device: str = "cpu") -> list[dict]:
    cfg = load_config("digits-quick", [f"runs={runs}", f"device={device}"])
    data = load_data(cfg)
    model, rule = init_model(cfg, data, 0), training_rule(cfg)
    members = [from_scratch(cfg, data, run_seeds(cfg, r), np.arange(data.n_train))
               for r in range(runs)]
    x, y = data.x_train, data.y_train
    times = {} if device != "cpu" else {
        "previous loop, one model at a time (baseline)":
            best_time(lambda: legacy_run(model, members, x, y, rule, steps), 1, rounds)}
    times |= {
        "engine, one member per population":
            best_time(lambda: [run_steps(model, [m], x, y, rule, steps) for m in members], 1,
                      rounds),
        f"engine, {runs} members together":
            best_time(lambda: run_steps(model, members, x, y, rule, steps), 1, rounds),
    }
    base = next(iter(times.values()))
    return [{"models": runs, "steps": steps, "method": k, "seconds": t, "speedup": base / t}
            for k, t in times.items()]


def main(tiny: bool = False, device: str = "cpu") -> None:
    print_rows(bench_train(runs=2, steps=3, rounds=1, device=device) if tiny
               else bench_train(device=device))
