"""Benchmark: evaluating S models of one shape stacked (vmap) against one by one."""
from __future__ import annotations

import torch

from .bench import _seconds
from .evaluate import looped_logits, stack_params, stacked_logits
from .models import build_model


def bench_stacked_eval(n_models: int = 16, n_points: int = 1437, reps: int = 5) -> list[dict]:
    """Seconds to evaluate ``n_models`` models on ``n_points`` inputs, stacked and one by one."""
    rows = []
    for name, shape, width in [("mlp", (1, 8, 8), 64), ("cnn", (1, 8, 8), 32)]:
        model = build_model(name, shape, 10, width)
        params = []
        for s in range(n_models):
            torch.manual_seed(s)
            params.append({k: v.detach() for k, v in build_model(name, shape, 10, width).named_parameters()})
        stacked, x = stack_params(params), torch.randn(n_points, *shape)
        times = {}
        for label, fn in [("one by one (baseline)", lambda: looped_logits(model, params, x)),
                          ("stacked with vmap", lambda: stacked_logits(model, stacked, x))]:
            times[label] = _seconds(fn, reps)
        base = times["one by one (baseline)"]
        rows += [{"model": f"{name} x {n_models} models, {n_points} points", "method": k,
                  "seconds": t, "speedup": base / t} for k, t in times.items()]
    return rows


def main() -> None:
    from .bench import _print_rows
    # a forget group at one checkpoint (R + M models, m points) and a retain set
    _print_rows(bench_stacked_eval(n_models=32, n_points=50, reps=50)
                + bench_stacked_eval(n_models=32, n_points=1437))


if __name__ == "__main__":
    main()
