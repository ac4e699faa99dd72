"""Per-example gradient norms against a plain minibatch gradient, and the one-pass noisy-SGD
step against the two-pass one, measured in one process.

First table: examples per second and the ratio to the plain minibatch gradient of the same model
(forward + backward of the mean loss): 1.0x would be norms at the cost of one ordinary step.

Second table: seconds per clipped-gradient step and the speed-up over the two-pass step
(``per_example_grad_norms`` then ``weighted_loss_grad`` with ``w_i = min(1, C / ||g_i||)``),
for one model and for S models stacked against S two-pass steps one by one.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from punl.engine.models import build_model
from punl.engine.pergrad import (clipped_gradient_sums, conv_rule_choices, detached_params,
                          per_example_grad_norms, weighted_loss_grad)

from .timing import interleaved_best_times, print_rows

# (model, input shape, width, label, repetitions per round relative to ``reps``): the MLP's
# sub-millisecond calls get more repetitions so that a round is not one scheduler slice
CASES = [("mlp", (1, 8, 8), 64, "MLP on digits (8x8)", 10),
         ("cnn", (3, 32, 32), 32, "small CNN on 32x32x3", 1)]
CLIP = 1.0


def _candidates(model_name: str, shape, width: int, batch: int, reps: int, device: str = "cpu"):
    x, y = torch.randn(batch, *shape, device=device), torch.randint(0, 10, (batch,), device=device)
    model = build_model(model_name, shape, 10, width).to(device)

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
           "per-example loop": (per_example_loop, max(1, reps // 50))}
    try:
        from opacus import GradSampleModule
    except ImportError:
        return out
    gsm = GradSampleModule(build_model(model_name, shape, 10, width).to(device))

    def opacus_norms():
        gsm.zero_grad()
        F.cross_entropy(gsm(x), y).backward()
        return torch.stack([p.grad_sample.flatten(1).pow(2).sum(1)
                            for p in gsm.parameters()]).sum(0).sqrt()

    out["Opacus GradSampleModule norms"] = (opacus_norms, reps)
    return out


def bench_pergrad(batch: int = 256, reps: int = 10, rounds: int = 3,
                  device: str = "cpu") -> list[dict]:
    """Examples/s of each way to get per-example gradient norms, and the ratio to the baseline."""
    rows = []
    for name, shape, width, label, scale in CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidates = _candidates(name, shape, width, batch, reps * scale, device)
            times = interleaved_best_times(candidates, rounds)
        base = times["plain minibatch gradient (baseline)"]
        rows += [{"model": label, "method": k, "examples_per_s": batch / t, "ratio": base / t}
                 for k, t in times.items()]
    return rows


def chosen_conv_rules() -> list[str]:
    """The convolution rules timed and chosen in this process, one line per layer shape."""
    lines = []
    for key, rule in conv_rule_choices().items():
        rows, c_in, h, w = key.input_size_class
        lines.append(f"conv {key.kernel_size[0]}x{key.kernel_size[1]}, {c_in} -> "
                     f"{key.out_channels} channels at {h}x{w}, {rows} rows, {key.device}"
                     f"{', with sums' if key.with_sums else ''}: {rule}")
    return lines


def two_pass_step(model, params, x, y, clip: float):
    """``sum_i min(1, C / ||g_i||) g_i`` as a norms pass followed by a weighted-loss pass."""
    norms = per_example_grad_norms(model, x, y, params=params)
    return weighted_loss_grad(model, params, x, y, (clip / norms.clamp_min(1e-12)).clamp(max=1.0))


def _step_rows(name: str, shape, width: int, n_models: int, batch: int, reps: int,
               rounds: int, device: str = "cpu") -> list[dict]:
    """Seconds of S two-pass steps one by one and of one clipped_gradient_sums call."""
    model = build_model(name, shape, 10, width).to(device)
    params = []
    for s in range(n_models):
        torch.manual_seed(s)
        params.append(detached_params(build_model(name, shape, 10, width).to(device)))
    stacked = {k: torch.stack([p[k] for p in params]) for k in params[0]}
    x = torch.randn(n_models, batch, *shape, device=device)
    y = torch.randint(0, 10, (n_models, batch), device=device)
    weights = torch.ones(n_models, batch, device=device)
    times = interleaved_best_times({
        "two-pass step, one model at a time (baseline)": (
            lambda: [two_pass_step(model, params[s], x[s], y[s], CLIP) for s in range(n_models)],
            max(1, reps // n_models)),
        "one-pass clipped_gradient_sums": (
            lambda: clipped_gradient_sums(model, stacked, x, y, weights, CLIP), reps)}, rounds)
    base = times["two-pass step, one model at a time (baseline)"]
    label = f"{name}, {n_models} model{'s' if n_models > 1 else ''}, batch {batch}"
    return [{"case": label, "method": k, "ms_per_step": 1e3 * t, "speedup": base / t}
            for k, t in times.items()]


def bench_steps(batch: int = 256, stacked_batch: int = 64, n_models: int = 16,
                reps: int = 10, rounds: int = 3, device: str = "cpu") -> list[dict]:
    """The one-pass step against the two-pass step: MLP and CNN alone, and S stacked MLPs."""
    return (_step_rows("mlp", (1, 8, 8), 64, 1, batch, 10 * reps, rounds, device)
            + _step_rows("cnn", (3, 32, 32), 32, 1, batch, max(1, reps // 3), rounds, device)
            + _step_rows("mlp", (1, 8, 8), 64, n_models, stacked_batch, 5 * reps, rounds,
                         device))


def main(tiny: bool = False, device: str = "cpu") -> None:
    if tiny:
        print_rows(bench_pergrad(batch=16, reps=1, rounds=1, device=device))
        print()
        print_rows(bench_steps(batch=16, stacked_batch=8, n_models=2, reps=1, rounds=1,
                               device=device))
    else:
        print_rows(bench_pergrad(device=device))
        print()
        print_rows(bench_steps(device=device))
    print("\nconvolution rules chosen by timing in this run:")
    print("\n".join(chosen_conv_rules()))
