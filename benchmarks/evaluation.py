"""Evaluating S models of one shape stacked (vmap) against one by one, in one process."""
from __future__ import annotations

import torch

from punl.engine.models import build_model
from punl.engine.multimodel import CONV_EVAL_CHUNK, looped_logits, stack_params, stacked_logits

from .timing import best_time, print_rows


def bench_stacked_eval(n_models: int = 16, n_points: int = 1437, reps: int = 5,
                       rounds: int = 3) -> list[dict]:
    """Seconds to evaluate ``n_models`` models on ``n_points`` inputs, stacked and one by one."""
    rows = []
    for name, shape, width in [("mlp", (1, 8, 8), 64), ("cnn", (1, 8, 8), 32)]:
        model = build_model(name, shape, 10, width)
        params = []
        for s in range(n_models):
            torch.manual_seed(s)
            params.append({k: v.detach()
                           for k, v in build_model(name, shape, 10, width).named_parameters()})
        stacked, x = stack_params(params), torch.randn(n_points, *shape)
        times = {label: best_time(fn, reps, rounds) for label, fn in [
            ("one by one (baseline)", lambda: looped_logits(model, params, x)),
            ("one by one, inputs in chunks of 256",
             lambda: looped_logits(model, params, x, CONV_EVAL_CHUNK)),
            ("stacked with vmap", lambda: stacked_logits(model, stacked, x))]}
        base = times["one by one (baseline)"]
        rows += [{"model": f"{name} x {n_models} models, {n_points} points", "method": k,
                  "seconds": t, "speedup": base / t} for k, t in times.items()]
    return rows


def main(tiny: bool = False, device: str = "cpu") -> None:
    if tiny:
        print_rows(bench_stacked_eval(n_models=2, n_points=8, reps=1, rounds=1))
        return
    # a forget group at one checkpoint (R + M models, m points) and a retain set
    print_rows(bench_stacked_eval(n_models=32, n_points=50, reps=50)
               + bench_stacked_eval(n_models=32, n_points=1437))
