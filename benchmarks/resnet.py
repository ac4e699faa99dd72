"""Seconds per noisy-SGD step of the cifar10 configuration's GroupNorm ResNet (width 16, depth
1, batch 256, its R = 8 runs stacked), on synthetic 32x32x3 inputs: a step's cost depends on
the shapes, not on the pixel values, so no dataset is needed. Rows: the R runs one population
each (the baseline) and all R stacked in one population; the speed-up is against the first."""
from __future__ import annotations

import numpy as np
import torch

from punl.core.config import load_config
from punl.core.methods import training_rule
from punl.engine.models import build_model
from punl.engine.pergrad import detached_params
from punl.engine.sgd import Member, run_steps

from .timing import interleaved_best_times, print_rows


def bench_resnet(runs: int = 8, steps: int = 5, n_points: int = 50_000, batch: int = 256,
                 device: str = "cpu", rounds: int = 2) -> list[dict]:
    cfg = load_config("cifar10", [f"runs={runs}", f"batch_size={batch}"])
    shape = (3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n_points, *shape, generator=gen).to(device)
    y = torch.randint(0, 10, (n_points,), generator=gen).to(device)
    model = build_model(cfg.model, shape, 10, cfg.width, cfg.depth).to(device)
    members = []
    for r in range(runs):
        torch.manual_seed(r)
        start = detached_params(build_model(cfg.model, shape, 10, cfg.width, cfg.depth))
        members.append(Member(start, 100 + r, np.arange(n_points)))
    rule = training_rule(cfg)
    times = interleaved_best_times({
        "one population per run (baseline)":
            (lambda: [run_steps(model, [m], x, y, rule, steps) for m in members], 1),
        f"{runs} runs stacked": (lambda: run_steps(model, members, x, y, rule, steps), 1)},
        rounds)
    base = next(iter(times.values()))
    return [{"models": runs, "batch": batch, "method": k, "ms_per_step": 1e3 * t / steps,
             "speedup": base / t} for k, t in times.items()]


def main(tiny: bool = False, device: str = "cpu") -> None:
    print_rows(bench_resnet(runs=2, steps=1, n_points=64, batch=8, device=device, rounds=1)
               if tiny else bench_resnet(device=device))
