"""What a configuration will cost on this machine, known before it runs (``punl plan``).

**Cost model.** Each stage is a number n of equal jobs: training (one job: the R runs trained
together, recording the ledger), scoring (one job), the per-point study (its chunks of models,
:func:`punl.study.pointwise.chunks`) and the group study (its forget groups, G of
:func:`punl.stages.resources.forget_group_count`). The two studies run their jobs ``workers``
at a time, so a stage of n jobs of t seconds takes

    stage time = ceil(n / w) t + s + c,

with w = ``workers``, s the start of the worker processes and c what a fresh worker pays once
on its first job (lazy imports, first calls, the convolution rules' timing); w = 1 and
s = c = 0 for training and scoring, which run in the calling process after its imports. One job's time is linear in the number of steps it takes: for the configuration with
every step count scaled by f (``epochs``, ``el2n_epochs``, ``unlearn_steps``),

    t(f) = a + b f,

a being what does not scale with the steps (evaluating the models at the checkpoints, the
membership attack, the loss barriers, the accountant's fixed costs) and b the steps.

**Probe.** Each stage's own code runs on the configuration scaled by two fractions f1 < f2, the
smallest that keep every checkpoint distinct and a ledger record after step 0 (a few per cent
of the steps), after a first run at f1 whose excess over the second is c, and

    t(1) = t(f2) + (1 - f2) (t(f2) - t(f1)) / (f2 - f1).

The studies' probes run w jobs at once in a pool like the stage's, so the workers' contention
for the cores and memory bandwidth is measured, not assumed. Memory is each process's peak
resident set (Linux's VmHWM, reset before each probe) at f2, plus the ledger's records still to
come (20 bytes per run, record and point, in the training process); on a GPU, torch's peak
allocated memory. What a stage holds does not otherwise grow with the steps.

Not predicted: loading the data, the claims and the chapters' notebooks (about a minute for
digits-quick on two cores, nearly independent of the configuration's size).
"""
from __future__ import annotations

import json
import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core.config import STAGES, Config, ConfigError
from ..engine.recipe import total_steps

#: Fractions of the steps probed: f2 = GROWTH f1, f1 the smallest valid fraction (at least
#: MIN_FRACTION), so the slope b is measured over a span of steps (GROWTH - 1) f1.
MIN_FRACTION, GROWTH = 0.03, 4.0
#: Bytes the ledger keeps per run, record and point (five float32 statistics).
LEDGER_BYTES = 20


@dataclass(frozen=True)
class StageForecast:
    """One stage's prediction: ``jobs`` jobs of ``job_seconds`` (t(1)), ``workers`` at a time,
    after ``start_seconds`` of starting them, the first job of each process longer by
    ``first_call_seconds``; the probe's two job times; each process's peak memory and the
    memory held at once (all workers together)."""

    stage: str
    jobs: int
    workers: int
    job_seconds: float
    start_seconds: float
    first_call_seconds: float
    probe_fractions: tuple[float, float]
    probe_seconds: tuple[float, float]
    process_bytes: float
    device_bytes: float = 0.0

    @property
    def rounds(self) -> int:
        """ceil(n / w): the jobs' rounds on the workers."""
        return math.ceil(self.jobs / self.workers) if self.jobs else 0

    @property
    def seconds(self) -> float:
        """The stage time of the module docstring."""
        return (self.rounds * self.job_seconds
                + (self.start_seconds + self.first_call_seconds if self.jobs else 0.0))

    @property
    def memory_bytes(self) -> float:
        """Memory held at once: one process's peak times the workers that run together."""
        return self.process_bytes * min(self.workers, max(self.jobs, 1))


@dataclass(frozen=True)
class Forecast:
    """A configuration's predicted cost, stage by stage (training, scoring, the per-point study,
    the group study), on ``device`` of this machine, and how long the probe took."""

    config_name: str
    device: str
    machine: str
    cores: int
    stages: tuple[StageForecast, ...]
    probe_wall_seconds: float
    reused: tuple[str, ...] = field(default=())

    @property
    def seconds(self) -> float:
        """The computed stages' predicted time together (reused stages cost nothing)."""
        return sum(s.seconds for s in self.stages if s.stage not in self.reused)

    @property
    def memory_bytes(self) -> float:
        """The largest memory any computed stage holds at once."""
        return max((s.memory_bytes for s in self.stages if s.stage not in self.reused),
                   default=0.0)

    def stage(self, name: str) -> StageForecast:
        return next(s for s in self.stages if s.stage == name)

    def as_dict(self) -> dict:
        """JSON-ready: every field, and each stage's predicted seconds and memory."""
        out = asdict(self)
        out["stages"] = {s.stage: {**asdict(s), "seconds": round(s.seconds, 2),
                                   "memory_bytes": s.memory_bytes, "rounds": s.rounds}
                         for s in self.stages}
        out["seconds"] = round(self.seconds, 2)
        return json.loads(json.dumps(out))       # lists, as run.json reads back

    def table(self) -> str:
        """The forecast as the aligned text table ``punl plan`` prints."""
        rows = [("stage", "jobs", "per job", "rounds", "time", "memory at once")]
        for s in self.stages:
            reused = s.stage in self.reused
            rows.append((s.stage, str(s.jobs), duration_text(s.job_seconds),
                         f"{s.rounds} x {s.workers}" if s.jobs else "-",
                         "reused" if reused else duration_text(s.seconds),
                         memory_text(s.memory_bytes) + (
                             f" + {memory_text(s.device_bytes * s.workers)} on the device"
                             if s.device_bytes else "")))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines + [
            f"total: {duration_text(self.seconds)} of stages, at most "
            f"{memory_text(self.memory_bytes)} at once, on {self.device} of {self.machine} "
            f"({self.cores} cores); the claims and the chapters come on top. The probe took "
            f"{duration_text(self.probe_wall_seconds)}."])


def duration_text(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def memory_text(n_bytes: float) -> str:
    """``850 MiB`` or ``3.2 GiB``."""
    return f"{n_bytes / 2**20:.0f} MiB" if n_bytes < 2**30 else f"{n_bytes / 2**30:.1f} GiB"


# ------------------------------------------------------------------------- the linear model
def extrapolate(fractions: tuple[float, float], values: tuple[float, float]) -> float:
    """t(1) from t(f1), t(f2) on the line t(f) = a + b f (module docstring); the slope is
    taken as at least 0, since more steps never take less time (t(f2) when f1 = f2 = 1)."""
    (f1, f2), (t1, t2) = fractions, values
    if f2 <= f1:
        return t2
    slope = max(t2 - t1, 0.0) / (f2 - f1)
    return t2 + (1.0 - f2) * slope


def scaled(config: Config, fraction: float) -> Config:
    """``config`` with its step counts scaled by ``fraction``: epochs and el2n_epochs times f,
    unlearn_steps rounded (at least 1); :func:`probe_fractions` keeps the result valid."""
    return config.replace(epochs=config.epochs * fraction,
                          el2n_epochs=config.el2n_epochs * fraction,
                          unlearn_steps=max(1, round(config.unlearn_steps * fraction)))


def _keeps_design(config: Config, fraction: float, n: int) -> bool:
    """Whether the scaled configuration checks the same number of checkpoints and records the
    ledger after step 0, as the full one does."""
    from ..study.unlearn import checkpoint_steps
    try:
        small = scaled(config, fraction)
    except ConfigError:
        return False
    full = len(checkpoint_steps(config.unlearn_steps, config.n_checkpoints))
    return (len(checkpoint_steps(small.unlearn_steps, config.n_checkpoints)) == full
            and total_steps(small, n) > config.record_interval(n))


def probe_fractions(config: Config, n: int) -> tuple[float, float]:
    """(f1, f2): f1 the smallest fraction >= MIN_FRACTION on a grid of 1% steps that keeps the
    design (:func:`_keeps_design`), f2 = min(1, GROWTH f1); (1, 1) when only the full
    configuration keeps it (a configuration of a few steps: the probe then runs it whole)."""
    for f1 in np.arange(MIN_FRACTION, 1.0, 0.01):
        if _keeps_design(config, float(f1), n):
            return float(f1), min(1.0, GROWTH * float(f1))
    return 1.0, 1.0


# ------------------------------------------------------------------------------- measuring
def reset_peak_memory() -> None:
    """Start a new peak of this process's resident set (Linux: ``5`` into ``clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory() -> float:
    """This process's peak resident set in bytes since :func:`reset_peak_memory` (VmHWM), or
    over its life where the system does not say."""
    from ..core.parallel import resident_peak_bytes
    return (resident_peak_bytes(os.getpid())
            or float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024)


_DATA: dict = {}


def _data(config: Config):
    """The configuration's data, loaded once per process (until :func:`forecast` ends)."""
    from .pipeline import load_data
    key = (config.dataset, config.data_seed, config.test_fraction, config.label_noise,
           config.data_root, config.n_train, config.synthetic_outliers, config.device)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = load_data(config)
    return _DATA[key]


def _timed(work, device: str = "cpu") -> tuple[float, float, float]:
    """(seconds, peak resident bytes, peak device bytes on a cuda ``device``) of ``work()``."""
    import torch
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset_peak_memory()
    start = time.perf_counter()
    work()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start, peak_memory(),
            float(torch.cuda.max_memory_allocated()) if cuda else 0.0)


def probe_training(config: Config) -> dict[str, tuple[float, float, float]]:
    """Training, then scoring its runs, of ``config`` (already scaled): each one's
    :func:`_timed` measurement."""
    import torch
    from ..engine.train import train
    from ..study.scores import score_table
    torch.set_num_threads(config.num_threads)
    data = _data(config)
    out: dict = {}

    def training():
        out["runs"], out["ledger"] = train(config, data, progress=False)
    device = str(data.x_train.device)
    timing = {"train": _timed(training, device)}
    timing["score"] = _timed(lambda: score_table(config, data, out["ledger"],
                                                 [r.final for r in out["runs"]]), device)
    return timing


def probe_chunk(config: Config) -> tuple[float, float, float]:
    """One chunk of the per-point study of ``config`` (already scaled), its first."""
    import torch
    from ..study.pointwise import chunks, point_design, run_chunk
    torch.set_num_threads(config.num_threads)
    data = _data(config)
    design = point_design(config, data.n_train, len(data.y_test))
    return _timed(lambda: run_chunk(config, data, design, chunks(design)[0]),
                  str(data.x_train.device))


def probe_group(config: Config) -> tuple[float, float, float]:
    """One forget group of ``config`` (already scaled): ``group_size`` points drawn at random,
    unlearned from the R runs' initial parameters by every method, attacked and measured."""
    import torch
    from ..engine.recipe import initial_params, run_seeds
    from ..study.groups import ForgetGroup
    from ..study.unlearn import unlearn_group
    torch.set_num_threads(config.num_threads)
    data = _data(config)
    rng = np.random.default_rng(config.seed)
    group = ForgetGroup("probe", "probe", np.sort(rng.choice(data.n_train, config.group_size,
                                                             replace=False)), 0.0)
    originals = [initial_params(config, data, run_seeds(config, r)[0])
                 for r in range(config.runs)]
    return _timed(lambda: unlearn_group(config, data, originals, group),
                  str(data.x_train.device))


def _warm(_) -> float:
    """A worker's first job: import what the study jobs import."""
    import punl.study.pointwise  # noqa: F401
    import punl.study.unlearn  # noqa: F401
    return 0.0


def _probe_job(args):
    kind, config = args
    return {"chunk": probe_chunk, "group": probe_group}[kind](config)


class _Workers:
    """A pool of ``workers`` processes (the calling process with one), running a job on every
    worker at once; ``start_seconds`` is how long the processes took to start."""

    def __init__(self, workers: int):
        from ..core.parallel import can_start_workers, process_pool
        self.workers = workers if can_start_workers() else 1
        self.pool, self.start_seconds = None, 0.0
        if self.workers > 1:
            start = time.perf_counter()
            self.pool = process_pool(self.workers, (__name__,))
            try:
                list(self.pool.map(_warm, range(self.workers)))
            except BaseException:
                self.close()
                raise
            self.start_seconds = time.perf_counter() - start

    def each(self, job) -> tuple[float, float, float]:
        """The slowest worker's time and the largest peaks of ``job`` run on every worker."""
        if self.pool is None:
            return _probe_job(job)
        results = list(self.pool.map(_probe_job, [job] * self.workers))
        return tuple(max(r[i] for r in results) for i in range(3))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


# ------------------------------------------------------------------------------ the forecast
def _study(kind: str, stage: str, jobs: int, workers: int, configs, fractions,
           bar) -> StageForecast:
    """A study's forecast from its probes on a fresh pool of ``workers`` processes (a stage
    starts its own), or an empty stage without jobs."""
    if not jobs:
        return StageForecast(stage, 0, 1, 0.0, 0.0, 0.0, fractions, (0.0, 0.0), 0.0)
    pool = _Workers(workers)
    try:
        probes = []
        for c in (configs[0], *configs):
            probes.append(pool.each((kind, c)))
            bar.update()
    finally:
        pool.close()
    return _stage(stage, jobs, pool.workers, pool.start_seconds, fractions, probes)


def _stage(stage: str, jobs: int, workers: int, start: float, fractions, probes,
           extra_bytes: float = 0.0) -> StageForecast:
    """A stage's forecast from its three probes (first run at f1, then f1 and f2; each
    (seconds, resident bytes, device bytes)); c counts only where there are worker processes
    (``start`` > 0)."""
    first, *timed = probes
    times = (timed[0][0], timed[1][0])
    first_call = max(first[0] - times[0], 0.0) if start > 0 else 0.0
    return StageForecast(stage, jobs, workers, extrapolate(fractions, times), start,
                         first_call, tuple(fractions),
                         tuple(round(t, 4) for t in times), timed[1][1] + extra_bytes,
                         timed[1][2])


def forecast(config: Config, reused: tuple[str, ...] = (), progress: bool = True) -> Forecast:
    """Probe ``config`` on this machine and predict each stage (module docstring). Stages in
    ``reused`` are probed all the same (the table shows what they would cost) but count 0."""
    import platform

    from tqdm import tqdm

    from ..study.pointwise import chunks, point_design
    from .resources import forget_group_count
    wall = time.perf_counter()
    data = _data(config)
    n = data.n_train
    fractions = probe_fractions(config, n)
    configs = [scaled(config, f) for f in fractions]
    n_chunks = len(chunks(point_design(config, n, len(data.y_test)))) if config.point_models else 0
    n_groups = forget_group_count(config)
    bar = tqdm(total=3 + 3 * bool(n_chunks) + 3, desc=f"{config.name}: probing the stages",
               unit="probe", disable=not progress)
    try:
        training = []
        for c in (configs[0], *configs):           # the first run at f1 measures c
            training.append(probe_training(c))
            bar.update()
        records = math.ceil(total_steps(config, n) / config.record_interval(n))
        ledger = LEDGER_BYTES * config.runs * records * n * (1 - fractions[1])
        stages = [_stage("train", 1, 1, 0.0, fractions, [t["train"] for t in training], ledger),
                  _stage("score", 1, 1, 0.0, fractions, [t["score"] for t in training])]
        for kind, stage, jobs in (("chunk", "pointwise", n_chunks), ("group", "unlearn", n_groups)):
            stages.append(_study(kind, stage, jobs, min(config.workers, max(jobs, 1)), configs,
                                 fractions, bar))
    finally:
        bar.close()
        _DATA.clear()
    return Forecast(config.name, config.device, platform.node(), os.cpu_count() or 1,
                    tuple(sorted(stages, key=lambda s: STAGES.index(s.stage))),
                    time.perf_counter() - wall, tuple(reused))
