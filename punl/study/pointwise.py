"""The per-point study: hundreds of models, each forgetting its own random set, and a test per point.

**Design** (U-LiRA style; Hayes et al. 2024). M models j = 0..M-1. Model j draws its forget set
F_j: every training point independently with probability p_f (``forget_probability``). It
trains on D for T steps, then runs the unlearning method (the configuration's primary method)
on its retain set R_j = D \\ F_j, kept at the log-spaced checkpoints k of the group study. Its
reference is retrained from scratch on R_j for T steps and continued by the same method on R_j
for the same k steps (age-matched). For a point x, the models that forgot it,
S_x = {j : x in F_j} (about M p_f of them), give two samples of LiRA's statistic phi(x) at each
checkpoint: under the unlearned models ("trained on x, then unlearned") and under their
retrained references ("never saw x").

**Placebo.** Every test point x gets the same treatment: its own random set
S_x = {j : x in G_j}, G_j drawn like F_j over the test points. Neither side ever trained on x,
so a calibrated test finds nothing there beyond its level; the share of test points it flags is
its false-positive rate at the very design of the study (same models per side, same looks),
including whatever the unlearned and retrained models differ by that is not about x (the
unlearned ones trained on F_j before forgetting it, for instance).

**Test per point and checkpoint.** Welch's t-test of phi(x) under the unlearned against the
retrained models of S_x, the Gaussian likelihood-ratio test of LiRA reduced to its mean shift:

    t = (mean_u - mean_r) / sqrt(s_u^2 / n + s_r^2 / n),
    df = (s_u^2 / n + s_r^2 / n)^2 / ((s_u^2 / n)^2 / (n - 1) + (s_r^2 / n)^2 / (n - 1)),

two-sided p = 2 P(T_df > |t|); beside it the effect d = (mean_u - mean_r) / sqrt((s_u^2 + s_r^2) / 2)
and the Gaussian-fit KL divergence of :func:`punl.study.mia.gaussian_kl`. Welch's statistic needs only
each side's count, sum and sum of squares, which add up over models, so the models run in chunks
(:data:`MODELS_PER_JOB`, on ``workers`` processes) whose sums are cached as they finish: an
interrupted study resumes from its finished chunks. Every model draws from its own streams, so
the result depends neither on the chunking nor on the number of workers, up to float32 rounding
(populations of other sizes take batched products of other shapes: phi moves by ~1e-6).

The design ``half`` uses the models j < M / 2 only: the neighbouring analysis choice with half the
models per side. The steps, the adjustment over checkpoints and the claims are in
:mod:`punl.analysis.pointclaims`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..core.config import Config
from ..engine.data import Dataset
from .groups import stream_seed
from ..core.methods import METHODS
from .mia import gaussian_kl_of_moments, lira_phi
from ..engine.multimodel import many_logits
from ..engine.recipe import fit, from_scratch, init_model
from ..engine.sgd import Member, Population, unstack
from ..core.tables import POINT_TESTS, POINT_UTILITY
from .unlearn import checkpoint_steps

#: Models per job: a job trains its originals and references together, then unlearns.
MODELS_PER_JOB = 64
#: The sums each chunk adds up per design, checkpoint and point.
MOMENTS = ("n", "sum_u", "sumsq_u", "sum_r", "sumsq_r")


# ------------------------------------------------------------------------------------ design
@dataclass(frozen=True)
class PointDesign:
    """Who forgets what: ``forget`` [M, N] (F_j over the training points), ``placebo``
    [M, N_test] (G_j over the test points), and the checkpoints."""

    forget: np.ndarray
    placebo: np.ndarray
    checkpoints: np.ndarray

    @property
    def models(self) -> int:
        return len(self.forget)

    @property
    def membership(self) -> np.ndarray:
        """[M, N + N_test]: whether model j tests point x (training points, then test points)."""
        return np.concatenate([self.forget, self.placebo], axis=1)

    def retain(self, j: int) -> np.ndarray:
        """R_j = D \\ F_j as training indices."""
        return np.flatnonzero(~self.forget[j])

    def half(self) -> int:
        """The models of the ``half`` design: j < M // 2."""
        return self.models // 2


def point_design(config: Config, n_train: int, n_test: int) -> PointDesign:
    """The study's forget and placebo sets, each row from its own stream (model j's set does
    not depend on M)."""
    def draw(kind: str, j: int, n: int) -> np.ndarray:
        rng = np.random.default_rng(stream_seed(config.seed, "pointwise", kind, j))
        return rng.random(n) < config.forget_probability

    models = range(config.point_models)
    return PointDesign(np.array([draw("forget", j, n_train) for j in models], bool).reshape(-1, n_train),
                       np.array([draw("placebo", j, n_test) for j in models], bool).reshape(-1, n_test),
                       checkpoint_steps(config.unlearn_steps, config.n_checkpoints))


def model_seeds(config: Config, j: int, kind: str) -> tuple[int, int]:
    """(initialisation, batches-and-noise) seeds of model j of ``kind`` (``original`` or
    ``retrained``)."""
    return (stream_seed(config.seed, "pointwise", kind, "init", j),
            stream_seed(config.seed, "pointwise", kind, "stream", j))


def unlearning_seed(config: Config, j: int, kind: str) -> int:
    """The seed of model j's unlearning continuation (``unlearned`` or ``retrained``)."""
    return stream_seed(config.seed, "pointwise", config.primary_method, kind, j)


# ------------------------------------------------------------------------------------ chunks
@dataclass(frozen=True)
class ChunkResult:
    """One chunk of models: its moment sums [len(MOMENTS), designs, checkpoints, points] and
    the accuracy rows of its models (``point_utility``)."""

    moments: np.ndarray
    utility: pd.DataFrame


def _accuracies(logits: torch.Tensor, y: torch.Tensor, n_train: int,
                forget: np.ndarray) -> dict[str, np.ndarray]:
    """Forget, retain and test accuracy of each model from its logits on train + test points."""
    correct = (logits.argmax(-1) == y).cpu().numpy()
    train, test = correct[:, :n_train], correct[:, n_train:]
    return {"forget_acc": (train * forget).sum(1) / np.maximum(forget.sum(1), 1),
            "retain_acc": (train * ~forget).sum(1) / np.maximum((~forget).sum(1), 1),
            "test_acc": test.mean(1)}


def run_chunk(config: Config, data: Dataset, design: PointDesign, models: np.ndarray) -> ChunkResult:
    """Train, retrain and unlearn the models ``models`` together and add up their moments."""
    n, model = data.n_train, init_model(config, data, 0)
    frames = {j: design.retain(j) for j in models}
    starts = fit(config, data,
                 [from_scratch(config, data, model_seeds(config, j, "original"), np.arange(n))
                  for j in models]
                 + [from_scratch(config, data, model_seeds(config, j, "retrained"), frames[j])
                    for j in models])
    m = len(models)
    members = [Member(starts[offset + i], unlearning_seed(config, j, kind), frames[j])
               for offset, kind in ((0, "unlearned"), (m, "retrained"))
               for i, j in enumerate(models)]
    population = Population(model, members, data.x_train, data.y_train,
                            METHODS[config.primary_method](config))
    x_all = torch.cat([data.x_train, data.x_test])
    y_all = torch.cat([data.y_train, data.y_test])
    tested = design.membership[models]                                   # [m, P]
    halves = np.stack([models < design.half(), models >= design.half()])  # [2, m]
    moments = np.zeros((len(MOMENTS), 2, len(design.checkpoints), tested.shape[1]))
    rows = []
    for c, k in enumerate(design.checkpoints):
        population.advance(int(k) - population.t)
        logits = many_logits(model, unstack(population.params), x_all)
        phi = lira_phi(logits, y_all).double().cpu().numpy()             # [2m, P]
        for h, keep in enumerate(halves):
            moments[:, h, c] = _moments(phi[:m][keep], phi[m:][keep], tested[keep])
        accs = _accuracies(logits, y_all, n, design.forget[np.concatenate([models, models])])
        rows += [{"method": config.primary_method, "model": kind, "j": int(j), "step": int(k),
                  **{a: float(v[i]) for a, v in accs.items()}}
                 for i, (kind, j) in enumerate([("unlearned", j) for j in models]
                                               + [("retrained", j) for j in models])]
    return ChunkResult(moments, POINT_UTILITY.frame(rows))


def _moments(u: np.ndarray, r: np.ndarray, tested: np.ndarray) -> np.ndarray:
    """Count, sums and sums of squares of phi over the models that test each point:
    [len(MOMENTS), points] from u, r [models, points] and tested [models, points]."""
    w = tested.astype(float)
    return np.stack([w.sum(0), (w * u).sum(0), (w * u * u).sum(0), (w * r).sum(0),
                     (w * r * r).sum(0)])


def chunks(design: PointDesign) -> list[np.ndarray]:
    """The models in jobs of :data:`MODELS_PER_JOB` (none straddles the half-way model)."""
    out = []
    for lo, hi in ((0, design.half()), (design.half(), design.models)):
        out += [np.arange(a, min(a + MODELS_PER_JOB, hi)) for a in range(lo, hi, MODELS_PER_JOB)]
    return out


def _chunk_job(args) -> ChunkResult:
    config, data, design, models = args
    torch.set_num_threads(config.num_threads)
    return run_chunk(config, data, design, models)


def map_chunks(config: Config, data: Dataset, design: PointDesign, todo: list[np.ndarray],
               progress: bool) -> Iterator[ChunkResult]:
    """Yield each chunk's result in order, computed on ``config.workers`` processes."""
    from ..core.parallel import map_in_order
    yield from map_in_order(_chunk_job, [(config, data, design, models) for models in todo],
                            config.workers, "per-point study (chunks of models)", progress)


def run_pointwise(config: Config, data: Dataset, progress: bool = True,
                  cache=None) -> dict[str, pd.DataFrame]:
    """The per-point study's tables, ``point_tests`` and ``point_utility`` (empty with
    ``point_models: 0``).

    ``cache`` (optional) has ``load(name) -> ChunkResult | None`` and ``save(name, result)``:
    finished chunks are not recomputed."""
    design = point_design(config, data.n_train, len(data.y_test))
    todo_all = chunks(design)
    names = [f"models_{c[0]:05d}_{c[-1]:05d}" for c in todo_all]
    done = {n: cache.load(n) for n in names} if cache else {}
    todo = [(n, c) for n, c in zip(names, todo_all) if done.get(n) is None]
    for i, result in enumerate(map_chunks(config, data, design, [c for _, c in todo], progress)):
        name = todo[i][0]
        if cache:
            cache.save(name, result)
        done[name] = result
    results = [done[n] for n in names]
    if not results:
        return {"point_tests": POINT_TESTS.frame([]), "point_utility": POINT_UTILITY.frame([])}
    moments = sum(r.moments for r in results)
    return {"point_tests": tests_table(config, data, design, moments),
            "point_utility": pd.concat([r.utility for r in results], ignore_index=True)}


# ------------------------------------------------------------------------------------- tests
def welch_from_moments(n, sum_u, sumsq_u, sum_r, sumsq_r) -> dict[str, np.ndarray]:
    """Welch's test (module docstring) of equal means from each side's count (equal on both
    sides), sum and sum of squares; p = 1 where a side has fewer than 2 values or both have no
    spread (two identical samples)."""
    n = np.asarray(n, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_u, mean_r = sum_u / n, sum_r / n
        var_u = np.maximum(sumsq_u - n * mean_u ** 2, 0) / (n - 1)
        var_r = np.maximum(sumsq_r - n * mean_r ** 2, 0) / (n - 1)
        se2 = (var_u + var_r) / n
        t = (mean_u - mean_r) / np.sqrt(se2)
        df = se2 ** 2 / ((var_u / n) ** 2 / (n - 1) + (var_r / n) ** 2 / (n - 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = 2 * stats.t.sf(np.abs(t), df)
        effect = (mean_u - mean_r) / np.sqrt((var_u + var_r) / 2)
        kl = gaussian_kl_of_moments(mean_u, var_u, mean_r, var_r)
    valid = (n >= 2) & (se2 > 0)
    return {"mean_unlearned": mean_u, "mean_retrained": mean_r, "sd_unlearned": np.sqrt(var_u),
            "sd_retrained": np.sqrt(var_r), "t": np.where(valid, t, 0.0),
            "p_value": np.where(valid, np.nan_to_num(p, nan=1.0), 1.0),
            "effect": np.where(valid, effect, 0.0), "kl": np.where(valid, kl, 0.0)}


def tests_table(config: Config, data: Dataset, design: PointDesign,
                moments: np.ndarray) -> pd.DataFrame:
    """The ``point_tests`` table from the summed moments [MOMENTS, halves, checkpoints, points]:
    one row per point (training points, then the placebo's test points), design and checkpoint."""
    n_train, n_points = data.n_train, moments.shape[-1]
    kind = np.where(np.arange(n_points) < n_train, "train", "placebo")
    index = np.where(np.arange(n_points) < n_train, np.arange(n_points),
                     np.arange(n_points) - n_train)
    frames = []
    for design_name, halves in (("all", [0, 1]), ("half", [0])):
        summed = moments[:, halves].sum(1)                               # [MOMENTS, C, P]
        test = welch_from_moments(*summed)
        for c, k in enumerate(design.checkpoints):
            frames.append(pd.DataFrame({
                "set": kind, "index": index, "method": config.primary_method,
                "design": design_name, "step": int(k), "models": summed[0, c].astype(int),
                **{name: test[name][c] for name in POINT_TESTS.columns[6:]}}))
    return POINT_TESTS.check(pd.concat(frames, ignore_index=True))
