"""Unlearning forget groups: run each method on the retain set, attack, measure barriers.

For a forget group F (retain set R = D \\ F), every method of :mod:`punl.methods` runs from each
original model on R, with parameters kept at log-spaced checkpoints k. The reference is
age-matched: retrained models (trained from scratch on R with the training recipe) continued for
the same k steps of the same method. At each checkpoint the group attack of :mod:`punl.mia`
tells the unlearned models from the retrained ones, the example-level test does so per point, and
loss barriers (:mod:`punl.barriers`) are measured between unlearned and retrained partners.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .barriers import barrier_height, param_distance, path_losses
from .config import Config
from .data import Dataset
from .groups import ForgetGroup, make_groups, stream_seed
from .methods import METHODS
from .mia import gaussian_fit_accuracy, group_attack, lira_phi, steps_to_unlearn, welch_t
from .multimodel import many_accuracy, many_logits
from .pergrad import Params
from .recipe import fit_from_scratch, init_model, run_seeds
from .sgd import Member, run_members
from .tables import BARRIERS, STEPS, STEPS_POINTS, UNLEARNING, UnlearnTables

POINT_TEST_LEVEL = 0.05  # a point stays distinguishable while Welch's test rejects at this level
PARTNERS = ("coupled", "independent")


def checkpoint_steps(budget: int, n: int) -> np.ndarray:
    """0 and about n - 1 log-spaced steps in [1, budget], deduplicated, ending at budget."""
    spaced = np.unique(np.round(np.geomspace(1, budget, max(n - 1, 1))).astype(int))
    return np.concatenate([[0], spaced])


def retrain_seeds_for(config: Config, group: ForgetGroup) -> dict[str, tuple[int, int]]:
    """Seeds of the retrained models: ``ret{m}`` for the MIA reference (coupled: run m's seeds),
    plus the barrier partners ``coupled`` (run 0's seeds) and ``independent``."""
    def independent(m):
        return (stream_seed(config.seed, "retrain-init", group.score, group.label, m),
                stream_seed(config.seed, "retrain-noise", group.score, group.label, m))
    seeds = {f"ret{m}": run_seeds(config, m) if config.coupled and m < config.runs
             else independent(m) for m in range(config.retrain_seeds)}
    seeds["coupled"], seeds["independent"] = run_seeds(config, 0), independent(0)
    return seeds


@dataclass(frozen=True)
class GroupSplit:
    """A forget group on the data's device: the forget points, the retain set, the model."""

    config: Config
    data: Dataset
    group: ForgetGroup
    model: nn.Module
    retain: torch.Tensor
    forget: torch.Tensor
    checkpoints: np.ndarray

    @classmethod
    def of(cls, config: Config, data: Dataset, group: ForgetGroup) -> "GroupSplit":
        device = data.x_train.device
        return cls(config, data, group, init_model(config, data, 0),
                   torch.as_tensor(group.retain_indices(data.n_train), device=device),
                   torch.as_tensor(group.indices, device=device),
                   checkpoint_steps(config.unlearn_steps, config.n_checkpoints))

    @property
    def forget_xy(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.x_train[self.forget], self.data.y_train[self.forget]

    @property
    def retain_xy(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.x_train[self.retain], self.data.y_train[self.retain]

    def labels(self, method: str) -> dict:
        return {"score": self.group.score, "group": self.group.label, "method": method}


@dataclass(frozen=True)
class MethodTrajectories:
    """One method's parameters at every checkpoint: ``unlearned[r][c]`` from original run r,
    ``retrained[m][c]`` from retrained model m, ``partners[name][c]`` for the barrier partners."""

    method: str
    unlearned: list[list[Params]]
    retrained: list[list[Params]]
    partners: dict[str, list[Params]]


def run_method(split: GroupSplit, method: str, originals: list[Params],
               retrained: dict[str, Params]) -> MethodTrajectories:
    """Run ``method`` on the retain set from every original and every retrained model, all
    together (one population; each trajectory has its own stream)."""
    config, group = split.config, split.group
    retain = split.retain.cpu().numpy()

    def member(label, start, i):
        return Member(start, stream_seed(config.seed, group.score, group.label, method, label, i),
                      retain)

    members = ([member("unlearn", p, r) for r, p in enumerate(originals)]
               + [member("retrain", retrained[f"ret{m}"], m) for m in range(config.retrain_seeds)]
               + [member(k, retrained[k], 0) for k in PARTNERS])
    paths = run_members(split.model, members, split.data.x_train, split.data.y_train,
                        METHODS[method](config), split.checkpoints)
    n_u, n_r = len(originals), config.retrain_seeds
    return MethodTrajectories(method, unlearned=paths[:n_u], retrained=paths[n_u:n_u + n_r],
                              partners=dict(zip(PARTNERS, paths[n_u + n_r:])))


def retrain(config: Config, data: Dataset, group: ForgetGroup) -> dict[str, Params]:
    """The retrained models of ``group`` by name (see :func:`retrain_seeds_for`), each distinct
    pair of seeds trained once."""
    seeds = retrain_seeds_for(config, group)
    unique = list(dict.fromkeys(seeds.values()))
    fitted = dict(zip(unique, fit_from_scratch(config, data, group.retain_indices(data.n_train),
                                               unique)))
    return {name: fitted[s] for name, s in seeds.items()}


def unlearn_group(config: Config, data: Dataset, originals: list[Params], group: ForgetGroup,
                  methods=None) -> UnlearnTables:
    """Unlearn ``group`` with every method; MIA against age-matched retrained models; barriers."""
    split = GroupSplit.of(config, data, group)
    originals = [{k: v.to(data.x_train.device) for k, v in p.items()} for p in originals]
    retrained = retrain(config, data, group)
    parts = []
    for method in methods or config.methods:
        trajectories = run_method(split, method, originals, retrained)
        unlearning, steps, points = evaluate_method(split, trajectories)
        parts.append(UnlearnTables(unlearning, steps, points,
                                   barrier_rows(split, trajectories)))
    return UnlearnTables.concat(parts)


# ------------------------------------------------------------------------------- membership
def _accuracies(split: GroupSplit, models: list[Params]) -> dict[str, np.ndarray]:
    sets = {"forget_acc": split.forget_xy, "retain_acc": split.retain_xy,
            "test_acc": (split.data.x_test, split.data.y_test)}
    return {name: many_accuracy(split.model, models, x, y).cpu().numpy()
            for name, (x, y) in sets.items()}


def evaluate_method(split: GroupSplit, traj: MethodTrajectories):
    """The ``unlearning``, ``steps`` and ``steps_points`` tables of one method on one group."""
    config, group = split.config, split.group
    rng = np.random.default_rng(stream_seed(config.seed, group.score, group.label, traj.method,
                                            "mia"))
    x_f, y_f = split.forget_xy
    n_u = len(traj.unlearned)
    labels = split.labels(traj.method)
    attacks, point_distinct, fit_accuracy, rows = [], [], [], []
    for c, k in enumerate(split.checkpoints):
        models = [t[c] for t in traj.unlearned] + [t[c] for t in traj.retrained]
        phi = lira_phi(many_logits(split.model, models, x_f), y_f).double().cpu().numpy()
        attack = group_attack(phi[:n_u], phi[n_u:], config.n_bootstrap, rng)
        attacks.append(attack)
        point_distinct.append(welch_t(phi[:n_u], phi[n_u:])[1] < POINT_TEST_LEVEL)
        fit_accuracy.append(gaussian_fit_accuracy(phi[:n_u], phi[n_u:]))
        accs = _accuracies(split, models)
        for i in range(len(models)):
            kind, seed = ("unlearned", i) if i < n_u else ("retrained", i - n_u)
            rows.append({**labels, "model": kind, "seed": seed, "step": int(k),
                         **{a: float(v[i]) for a, v in accs.items()}, **attack})
    return (UNLEARNING.frame(rows), STEPS.frame([_steps_row(split, labels, attacks)]),
            STEPS_POINTS.frame(_point_rows(split, labels, point_distinct, fit_accuracy)))


def _steps_row(split: GroupSplit, labels: dict, attacks: list[dict]) -> dict:
    group_distinct = np.array([a["mia_acc"] > 0.5 + split.config.tau for a in attacks])
    steps, censored = steps_to_unlearn(split.checkpoints, group_distinct)
    return {**labels, "group_score_median": split.group.score_median,
            "group_size": len(split.forget), "steps_to_unlearn": int(steps),
            "censored": bool(censored), "mia_acc_step0": attacks[0]["mia_acc"],
            "mia_null_step0": attacks[0]["mia_null"],
            "mean_mia_acc": float(np.mean([a["mia_acc"] for a in attacks])),
            "mean_mia_ci_halfwidth": float(np.mean(
                [(a["mia_ci_high"] - a["mia_ci_low"]) / 2 for a in attacks]))}


def _point_rows(split: GroupSplit, labels: dict, point_distinct: list, fit_accuracy: list):
    steps, censored = steps_to_unlearn(split.checkpoints, np.array(point_distinct))
    return [{"index": int(idx), **labels, "steps_to_unlearn": int(steps[i]),
             "censored": bool(censored[i]),
             "distinguishability_step0": float(fit_accuracy[0][i]),
             "distinguishability_final": float(fit_accuracy[-1][i])}
            for i, idx in enumerate(split.group.indices)]


# ---------------------------------------------------------------------------------- barriers
def barrier_rows(split: GroupSplit, traj: MethodTrajectories):
    """The ``barriers`` table: loss along the path from the first unlearned trajectory to each
    partner, at every checkpoint (step 0: original to retrained)."""
    lambdas = np.linspace(0, 1, split.config.barrier_points)
    x_f, y_f = split.forget_xy
    unlearned, rows = traj.unlearned[0], []
    for partner, path in traj.partners.items():
        for c, k in enumerate(split.checkpoints):
            losses = path_losses(split.model, unlearned[c], path[c], x_f, y_f, lambdas)
            common = {**split.labels(traj.method),
                      "pair": "original-retrained" if k == 0 else "unlearned-retrained",
                      "partner": partner, "step": int(k), "barrier": barrier_height(lambdas, losses),
                      "loss_gap": float(losses[0] - losses[-1]),
                      "distance": param_distance(unlearned[c], path[c])}
            rows += [dict(common, **{"lambda": float(lam), "loss": float(v)})
                     for lam, v in zip(lambdas, losses)]
    return BARRIERS.frame(rows)


# ------------------------------------------------------------------------------ all groups
def forget_groups(config: Config, scores) -> list[ForgetGroup]:
    """Every forget group of the configuration: quantile, bottom, top and random groups of the
    primary score and the top group of every baseline score."""
    groups = make_groups(scores, config.primary_score, config.n_groups, config.group_size,
                         config.seed, ("quantile", "bottom", "top", "random"))
    for score in config.baseline_scores:
        groups += make_groups(scores, score, config.n_groups, config.group_size, config.seed,
                              ("top",))
    return groups


def run_unlearning(config: Config, data: Dataset, originals: list[Params], scores,
                   progress: bool = True, cache=None) -> UnlearnTables:
    """Unlearn every forget group and concatenate the tables, in group order.

    ``cache`` (optional) has ``load(group) -> UnlearnTables | None`` and ``save(group, tables)``:
    groups it already holds are not recomputed, and each finished group is saved at once, so an
    interrupted run resumes from the groups it had finished."""
    groups = forget_groups(config, scores)
    done = {g.key: cache.load(g) for g in groups} if cache else {}
    todo = [g for g in groups if done.get(g.key) is None]
    for group, tables in zip(todo, map_groups(config, data, originals, todo, progress)):
        if cache:
            cache.save(group, tables)
        done[group.key] = tables
    return UnlearnTables.concat([done[g.key] for g in groups])


def _unlearn_group_job(args) -> UnlearnTables:
    config, data, originals, group = args
    torch.set_num_threads(config.num_threads)
    return unlearn_group(config, data, originals, group)


def map_groups(config: Config, data: Dataset, originals: list[Params], groups: list[ForgetGroup],
               progress: bool) -> Iterator[UnlearnTables]:
    """Yield unlearn_group's tables for each group, in order, computed on ``config.workers``
    processes (spawned; one process inside a daemonic process, such as a dask worker). Every group
    draws from its own random streams, so the tables do not depend on the number of workers."""
    from .parallel import can_start_workers, process_pool
    jobs = [(config, data, originals, g) for g in groups]
    bar = dict(total=len(jobs), desc="unlearning groups", disable=not progress)
    if config.workers <= 1 or len(jobs) <= 1 or not can_start_workers():
        yield from (_unlearn_group_job(j) for j in tqdm(jobs, **bar))
        return
    with process_pool(config.workers) as pool:
        yield from tqdm(pool.map(_unlearn_group_job, jobs), **bar)
