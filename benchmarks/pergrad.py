"""Per-example gradient norms against a plain minibatch gradient, measured in one process.

Rows give examples per second and the ratio to the plain minibatch gradient of the same model
(forward + backward of the mean loss): 1.0x would be norms at the cost of one ordinary step.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from punl.models import build_model
from punl.pergrad import per_example_grad_norms

from .timing import best_time, print_rows

CASES = [("mlp", (1, 8, 8), 64, "MLP on digits (8x8)"),
         ("cnn", (3, 32, 32), 32, "small CNN on 32x32x3")]


def _candidates(model_name: str, shape, width: int, batch: int, reps: int):
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    model = build_model(model_name, shape, 10, width)

    def plain_minibatch_gradient():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()

    def per_example_loop():
        for i in range(batch):
            model.zero_grad()
            F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()

    out = {"plain minibatch gradient (baseline)": (plain_minibatch_gradient, reps),
           "punl per_example_grad_norms": (lambda: per_example_grad_norms(model, x, y), reps),
           "punl norms, vmap path": (lambda: per_example_grad_norms(model, x, y, method="vmap"),
                                     reps),
           "per-example loop": (per_example_loop, max(1, reps // 5))}
    try:
        from opacus import GradSampleModule
    except ImportError:
        return out
    gsm = GradSampleModule(build_model(model_name, shape, 10, width))

    def opacus_norms():
        gsm.zero_grad()
        F.cross_entropy(gsm(x), y).backward()
        return torch.stack([p.grad_sample.flatten(1).pow(2).sum(1)
                            for p in gsm.parameters()]).sum(0).sqrt()

    out["Opacus GradSampleModule norms"] = (opacus_norms, reps)
    return out


def bench_pergrad(batch: int = 256, reps: int = 10, rounds: int = 3) -> list[dict]:
    """Examples/s of each way to get per-example gradient norms, and the ratio to the baseline."""
    rows = []
    for name, shape, width, label in CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidates = _candidates(name, shape, width, batch, reps)
            times = {k: best_time(fn, n, rounds) for k, (fn, n) in candidates.items()}
        base = times["plain minibatch gradient (baseline)"]
        rows += [{"model": label, "method": k, "examples_per_s": batch / t, "ratio": base / t}
                 for k, t in times.items()]
    return rows


def main(tiny: bool = False) -> None:
    print_rows(bench_pergrad(batch=16, reps=1, rounds=1) if tiny else bench_pergrad())
