"""Benchmarks, run side by side in one process: ``python -m punl.bench pergrad|privacy|unlearn``.

Each prints examples per second (or seconds) and the ratio to a baseline measured in the same run.
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

from .models import build_model
from .pergrad import per_example_grad_norms


def _seconds(fn, reps: int, rounds: int = 3) -> float:
    """Best of ``rounds`` mean times over ``reps`` calls (the minimum resists background load)."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def _pergrad_candidates(model_name: str, shape, width: int, batch: int):
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    model = build_model(model_name, shape, 10, width)

    def plain_minibatch_gradient():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()

    def per_example_loop():
        for i in range(batch):
            model.zero_grad()
            F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()

    out = {"plain minibatch gradient (baseline)": (plain_minibatch_gradient, 10),
           "punl per_example_grad_norms": (lambda: per_example_grad_norms(model, x, y), 10),
           "punl norms, vmap path": (lambda: per_example_grad_norms(model, x, y, method="vmap"), 10),
           "per-example loop": (per_example_loop, 2)}
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

    out["Opacus GradSampleModule norms"] = (opacus_norms, 10)
    return out


def bench_pergrad(batch: int = 256) -> list[dict]:
    """Examples/s of each way to get per-example gradient norms, and the ratio to the baseline."""
    rows = []
    cases = [("mlp", (1, 8, 8), 64, "MLP on digits (8x8)"), ("cnn", (3, 32, 32), 32,
                                                             "small CNN on 32x32x3")]
    for name, shape, width, label in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidates = _pergrad_candidates(name, shape, width, batch)
            times = {k: _seconds(fn, reps) for k, (fn, reps) in candidates.items()}
        base = times["plain minibatch gradient (baseline)"]
        rows += [{"model": label, "method": k, "examples_per_s": batch / t, "ratio": base / t}
                 for k, t in times.items()]
    return rows


def _print_rows(rows: list[dict]) -> None:
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(_fmt(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(_fmt(r[k]).ljust(widths[k]) for k in keys))


def _fmt(v) -> str:
    return f"{v:,.3f}" if isinstance(v, float) else str(v)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m punl.bench", description=__doc__)
    parser.add_argument("which", choices=["pergrad", "privacy", "unlearn"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (the pipeline's default is 1)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    if args.which == "pergrad":
        _print_rows(bench_pergrad())
    elif args.which == "privacy":
        from .bench_privacy import main as privacy_main
        privacy_main()
    else:
        from .bench_unlearn import main as unlearn_main
        unlearn_main()


if __name__ == "__main__":
    main()
