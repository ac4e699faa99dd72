"""What a configuration will ask of the machine, estimated before any work, and the limits past
which a run is refused unless forced (``--force``, the runtime field ``force``).

The estimate counts model-steps: one step of one model on an expected batch of B examples. With
N training points, T = ceil(epochs N / B) training steps, K = ``unlearn_steps``, R = ``runs``,
M = ``retrain_seeds``, S = ``shadow_models``, J = ``point_models`` and G forget groups
(:func:`forget_group_count`), each unlearned by |methods| methods:

    training    (R + S) T
    groups      G [(M + R) T + |methods| 2 R K]      (retrained and coupled partners; the
                                                     unlearned models and their partners' replays)
    per point   J (2 T + K)                          (trained, retrained, unlearned)

A step costs about 6 P B floating-point operations for a model of P parameters (2 P per example
forward, 4 P backward), and the loss barriers cost 2 P N per point on the interpolation path, for
|methods| R pairs of each group. The membership attack and the claims cost elementary operations:
G |methods| C n_permutations (R + M) m for the null (C checkpoints, m points a group) and
n_bootstrap N for each bootstrap; claim 2's log-law test (with the group study) refits both
laws to 2 law_simulations simulated data sets of up to N points, about LAW_FIT_OPS N each. The
memory held at once is about 4 bytes x P x W x (3 + c): W models stacked (the largest of R, M + R and J), each with its parameters, gradient and noise
(3) and c = min(chunk_size, B) per-example gradient rows.

The limits are stated in :data:`LIMITS`; each is far above the repository's largest configuration
on this kind of machine; the time a configuration will take here is predicted by
:mod:`punl.stages.forecast` (``punl plan``), which probes the stages instead of counting. An
estimate past a limit raises :class:`~punl.core.config.ConfigError` naming the field that drives
it, before any folder is created.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..core.catalog import DATASET_SHAPES
from ..core.config import LAW_SIMULATIONS, STAGES, Config, ConfigError
from ..engine.recipe import total_steps

#: Past these, a run is refused unless forced: floating-point operations of all the model-steps
#: (1e16: about 2.5 days at 50 GFLOP/s, what two CPU cores sustain; a GPU does it in hours),
#: elementary operations of the attack's null and the bootstraps, bytes held at once (a share
#: of the machine's memory), artifact files, and CPU threads or worker processes (the cores).
LIMITS = {"flops": 1e16, "analysis_ops": 1e12, "memory_share": 0.8, "files": 20_000}
#: Layers an MLP may have: past this, building the model alone takes longer than a small run.
MAX_DEPTH = 1000


@dataclass(frozen=True)
class Estimate:
    """What a configuration asks of the machine (module docstring)."""

    parameters: int            # P, one model's
    model_steps: int           # every stage's model-steps together
    flops: float               # 6 P B model_steps + the loss barriers' forward passes
    analysis_ops: float        # the attack's null and the bootstraps
    memory_bytes: float        # held at once
    files: int                 # artifact files written
    groups: int                # G

    def describe(self) -> str:
        return (f"{self.model_steps:,} model-steps of {self.parameters:,} parameters "
                f"({self.flops:.2g} floating-point operations), {self.memory_bytes / 2**30:.3g} "
                f"GiB at once, {self.files:,} files")


def forget_group_count(config: Config) -> int:
    """G: the primary score's quantile groups, bottom, top and random groups; each baseline's top
    group and two disagreement groups (``baseline_groups``); three held-out requests of each
    kind per ``heldout_requests``."""
    baselines = len(config.baseline_scores) if config.baseline_groups else 0
    return config.n_groups + 3 + 3 * baselines + 3 * config.heldout_requests


def parameter_count(config: Config) -> int:
    """P of ``config``'s model, built on PyTorch's meta device (shapes only, no memory)."""
    if config.model == "mlp" and config.depth > MAX_DEPTH:
        raise ConfigError(f"depth: {config.depth} hidden layers exceed the {MAX_DEPTH} this "
                          "check builds; use fewer")
    import torch
    from ..engine.models import build_model
    shape, classes = DATASET_SHAPES[config.dataset]
    try:
        with torch.device("meta"):
            model = build_model(config.model, shape, classes, config.width, config.depth)
    except (TypeError, RuntimeError, OverflowError, ValueError):
        raise ConfigError(f"width: {config.width} is too large to build a {config.model} "
                          "of; use a smaller width") from None
    return sum(p.numel() for p in model.parameters())


def estimate(config: Config, n: int, through: str = "unlearn") -> Estimate:
    """The module docstring's estimate for ``config`` on N = ``n`` training points, counting the
    stages up to ``through`` (training and scoring; then the per-point study; then the groups)."""
    P, B, T, K = parameter_count(config), config.batch_size, total_steps(config, n), \
        config.unlearn_steps
    R, M, S, J = config.runs, config.retrain_seeds, config.shadow_models, config.point_models
    G, methods, m = forget_group_count(config), len(config.methods), config.group_size
    if STAGES.index(through) < STAGES.index("unlearn"):
        G = 0
    if STAGES.index(through) < STAGES.index("pointwise"):
        J = 0
    steps = (R + S) * T + G * ((M + R) * T + methods * 2 * R * K) + J * (2 * T + K)
    barriers = G * methods * R * config.barrier_points * 2 * P * n
    checkpoints = config.n_checkpoints
    analysis = (G * methods * checkpoints * config.n_permutations * (R + M) * m
                + (config.n_bootstrap * n * (G + 10) if G else 0)
                + (2 * config.law_simulations * LAW_FIT_OPS * n if through == "unlearn" else 0))
    stacked = max(R, M + R, J)
    rows = min(config.chunk_size or B, B)
    return Estimate(parameters=P, model_steps=steps, flops=6.0 * P * B * steps + barriers,
                    analysis_ops=float(analysis), memory_bytes=4.0 * P * stacked * (3 + rows),
                    files=G * (methods + 1) + 64, groups=G)


def machine_memory() -> float:
    """This machine's physical memory in bytes (inf where the system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def check_machine(config: Config) -> None:
    """Threads and worker processes within this machine's cores (more only contend)."""
    cores = os.cpu_count() or 1
    for field in ("num_threads", "workers"):
        value = getattr(config, field)
        if value > cores:
            raise ConfigError(f"{field}: {value} exceeds this machine's {cores} cores; use at "
                              f"most {cores}")


def check_resources(config: Config, n: int, through: str = "unlearn") -> Estimate:
    """Refuse a configuration whose :func:`estimate` (of the stages up to ``through``) passes a
    limit (:data:`LIMITS`), naming the field that drives it, unless ``config.force``; return the
    estimate."""
    check_machine(config)
    e = estimate(config, n, through)
    if config.force:
        return e
    memory = LIMITS["memory_share"] * machine_memory()
    problems = [
        (e.memory_bytes > memory, _largest(config, ("width", "runs", "retrain_seeds",
                                                   "point_models", "chunk_size")),
         f"needs about {e.memory_bytes / 2**30:.3g} GiB at once, more than "
         f"{LIMITS['memory_share']:.0%} of this machine's {machine_memory() / 2**30:.3g} GiB"),
        (e.flops > LIMITS["flops"], _largest(config, ("epochs", "unlearn_steps", "runs",
                                                     "retrain_seeds", "point_models",
                                                     "heldout_requests", "n_groups", "width",
                                                     "depth", "shadow_models", "barrier_points")),
         f"asks for {e.flops:.2g} floating-point operations ({e.model_steps:,} model-steps of "
         f"{e.parameters:,} parameters), past the limit of {LIMITS['flops']:.0e}"),
        (e.analysis_ops > LIMITS["analysis_ops"], _largest(config, ("n_permutations",
                                                                   "n_bootstrap",
                                                                   "law_simulations",
                                                                   "heldout_requests")),
         f"asks the attack, the bootstraps and the log-law test for {e.analysis_ops:.2g} "
         f"operations, past the limit of {LIMITS['analysis_ops']:.0e}"),
        (e.files > LIMITS["files"], "heldout_requests",
         f"would write about {e.files:,} files, past the limit of {LIMITS['files']:,}")]
    for past, field, what in problems:
        if past:
            raise ConfigError(f"{field}: this configuration {what}; lower {field}, or pass "
                              "--force to run it anyway")
    return e


#: Elementary operations per point of one refit of both laws in the log-law test: about a
#: hundred likelihood evaluations (value and gradient) from a few starting points per law.
LAW_FIT_OPS = 1000

#: Each field's value in digits-quick-like runs, against which "the largest" is judged.
TYPICAL = {"width": 64, "depth": 1, "runs": 2, "retrain_seeds": 8, "point_models": 64,
           "chunk_size": 512, "epochs": 10, "unlearn_steps": 200, "heldout_requests": 2,
           "n_groups": 8, "shadow_models": 8, "barrier_points": 11, "n_permutations": 300,
           "n_bootstrap": 200, "law_simulations": LAW_SIMULATIONS}


def _largest(config: Config, names: tuple[str, ...]) -> str:
    """The field among ``names`` furthest above its typical value (the one to lower)."""
    def ratio(name):
        value = getattr(config, name)
        return 0.0 if value is None else float(value) / TYPICAL[name]
    return max(names, key=ratio)
