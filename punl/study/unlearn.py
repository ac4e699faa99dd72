"""Unlearning forget groups: run each method on the retain set, attack, measure barriers.

For a forget group F (retain set R = D \\ F) and every method of :mod:`punl.core.methods`, one
population of models runs K steps of the method on R (:mod:`punl.engine.sgd`), kept at log-spaced
checkpoints k:

- the R *unlearned* models, from each original run's final parameters;
- the R *coupled* partners, from each original run replayed without F (same initialisation,
  the same Poisson draws over the N indices with F's entries dropped, the same noise); the
  continuation of coupled partner r shares its batches and noise with unlearned model r;
- the M *independent* retrained models, trained from scratch on R with their own seeds.

The reference of the membership attack is age-matched: at checkpoint k the unlearned models
(original + k steps) are compared with retrained models continued for the same k steps of the
same method (the independent ones; with ``coupled: true`` the coupled ones, as a paired design).
The attack, its permutation null and the divergence response are in :mod:`punl.study.mia`; loss
barriers between each unlearned model and its partners, on F and on class-matched control
points, in :mod:`punl.study.barriers`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from .barriers import barrier_height, pair_point_losses, param_distance
from ..core.config import LEVELS, Config
from ..engine.data import Dataset
from .groups import (ForgetGroup, class_composition, disagreement_groups, group_kind,
                     heldout_groups, make_groups, stream_seed)
from ..core.methods import METHODS
from .mia import (attack_track, gaussian_kl, looks_adjusted, lira_phi, relabellings,
                  steps_to_unlearn, welch_p_values)
from ..engine.multimodel import many_accuracy, many_logits
from ..engine.pergrad import Params
from ..engine.recipe import fit, from_scratch, init_model, run_seeds
from ..engine.sgd import Member, run_members
from ..core.tables import (ATTACK, BARRIER_POINTS, BARRIERS, GROUPS, PATHS, POINT_NULL, POINTS,
                           UNLEARNING, UnlearnTables)

#: Pairs of each partner kind whose barriers are measured (the first this many runs).
MAX_BARRIER_PAIRS = 16


def checkpoint_steps(budget: int, n: int) -> np.ndarray:
    """0 and about n - 1 log-spaced steps in [1, budget], deduplicated, ending at budget (with
    n = 2: 0 and the budget)."""
    if n <= 2:
        return np.array([0, budget])
    spaced = np.unique(np.round(np.geomspace(1, budget, n - 1)).astype(int))
    return np.concatenate([[0], spaced])


@dataclass(frozen=True)
class GroupSplit:
    """A forget group on the data's device: the forget points, the retain set, the model."""

    config: Config
    data: Dataset
    group: ForgetGroup
    model: nn.Module
    retain: np.ndarray
    checkpoints: np.ndarray

    @classmethod
    def of(cls, config: Config, data: Dataset, group: ForgetGroup,
           checkpoints: np.ndarray | None = None) -> "GroupSplit":
        """The split of ``group``, checked at ``checkpoints`` (default: the configuration's)."""
        if checkpoints is None:
            checkpoints = checkpoint_steps(config.unlearn_steps, config.n_checkpoints)
        return cls(config, data, group, init_model(config, data, 0),
                   group.retain_indices(data.n_train), np.asarray(checkpoints))

    def xy(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(indices), device=self.data.x_train.device)
        return self.data.x_train[idx], self.data.y_train[idx]

    def seed(self, *labels) -> int:
        return stream_seed(self.config.seed, self.group.score, self.group.label, *labels)

    def labels(self, method: str) -> dict:
        return {"score": self.group.score, "group": self.group.label, "method": method}


# ------------------------------------------------------------------------------- retraining
def independent_seeds(split: GroupSplit) -> list[tuple[int, int]]:
    """(init, noise) seeds of the M independent retrained models."""
    return [(split.seed("retrain-init", m), split.seed("retrain-noise", m))
            for m in range(split.config.retrain_seeds)]


def coupled_replay(config: Config, data: Dataset, run: int, forget: np.ndarray) -> Member:
    """Training run ``run`` replayed without ``forget``: its initialisation, its seed, its
    frame of all N points and its rate B / N, with F's entries dropped from every batch."""
    return from_scratch(config, data, run_seeds(config, run), np.arange(data.n_train),
                        excluded=forget, rate=config.batch_size / data.n_train)


def on_device(models: list[Params], data: Dataset) -> list[Params]:
    """The models' parameters on the device of the data."""
    return [{k: v.to(data.x_train.device) for k, v in p.items()} for p in models]


def retrain(split: GroupSplit, kinds: tuple[str, ...] = ("independent", "coupled")
            ) -> dict[str, list[Params]]:
    """The group's retrained models from scratch, trained together: ``independent`` (M) and
    ``coupled`` (one replay per original run); a kind not in ``kinds`` is left empty."""
    config, data = split.config, split.data
    independent = ([from_scratch(config, data, s, split.retain) for s in independent_seeds(split)]
                   if "independent" in kinds else [])
    coupled = ([coupled_replay(config, data, r, split.group.indices) for r in range(config.runs)]
               if "coupled" in kinds else [])
    fitted = fit(config, data, independent + coupled)
    return {"independent": fitted[: len(independent)], "coupled": fitted[len(independent):]}


@dataclass(frozen=True)
class MethodTrajectories:
    """One method's parameters at every checkpoint, ``[model][checkpoint]`` per kind."""

    method: str
    unlearned: list[list[Params]]
    coupled: list[list[Params]]
    independent: list[list[Params]]
    paired: bool = False          # the attack's reference: coupled (paired) or independent

    @property
    def reference(self) -> list[list[Params]]:
        return self.coupled if self.paired else self.independent


def method_members(split: GroupSplit, method: str, originals: list[Params],
                   retrained: dict[str, list[Params]]) -> list[Member]:
    """The population that runs ``method`` on the retain set: the R originals, then the R
    coupled partners, then the M independent retrained models; unlearned model r and coupled
    partner r share one stream (batches and noise)."""
    def member(start, *labels):
        return Member(start, split.seed(method, *labels), split.retain)

    return ([member(p, "pair", r) for r, p in enumerate(originals)]
            + [member(p, "pair", r) for r, p in enumerate(retrained["coupled"])]
            + [member(p, "retrain", m) for m, p in enumerate(retrained["independent"])])


def run_method(split: GroupSplit, method: str, originals: list[Params],
               retrained: dict[str, list[Params]]) -> MethodTrajectories:
    """Run ``method`` on the retain set from every original and retrained model, together
    (:func:`method_members`), keeping every checkpoint."""
    members = method_members(split, method, originals, retrained)
    paths = run_members(split.model, members, split.data.x_train, split.data.y_train,
                        METHODS[method](split.config), split.checkpoints)
    r = len(originals)
    return MethodTrajectories(method, paths[:r], paths[r:2 * r], paths[2 * r:],
                              paired=split.config.coupled)


def unlearn_group(config: Config, data: Dataset, originals: list[Params], group: ForgetGroup,
                  methods=None) -> UnlearnTables:
    """Unlearn ``group`` with every method: attack against age-matched retrained models,
    per-point tests, utility and barriers."""
    split = GroupSplit.of(config, data, group)
    originals = on_device(originals, data)
    retrained = retrain(split)
    parts = [method_tables(split, run_method(split, m, originals, retrained))
             for m in methods or config.methods]
    tables = UnlearnTables.concat(parts)
    return UnlearnTables(**{**dict(tables.items()), "groups": group_rows(split)})


def method_tables(split: GroupSplit, traj: MethodTrajectories) -> UnlearnTables:
    phi = forget_phi(split, traj)
    attack, points, point_null = attack_tables(split, traj, phi)
    barriers, paths, barrier_points = barrier_tables(split, traj)
    return UnlearnTables(GROUPS.frame([]), utility_table(split, traj), attack, points,
                         point_null, barriers, paths, barrier_points)


def group_rows(split: GroupSplit):
    """The ``groups`` table's row of this group."""
    group, data = split.group, split.data
    counts = class_composition(group, data.y_train.cpu().numpy()).values()
    return GROUPS.frame([{
        "score": group.score, "group": group.label, "kind": group_kind(group.label),
        "group_size": len(group.indices), "group_score_median": group.score_median,
        "flipped": int(data.flipped.cpu().numpy()[group.indices].sum()),
        "classes": len(counts), "largest_class_share": max(counts) / len(group.indices)}])


# ------------------------------------------------------------------------------ evaluation
def forget_phi(split: GroupSplit, traj: MethodTrajectories) -> np.ndarray:
    """LiRA's phi of every forget point under the unlearned and then the reference models at
    every checkpoint: [checkpoints, models, points]."""
    x_f, y_f = split.xy(split.group.indices)
    models = traj.unlearned + traj.reference
    return np.stack([lira_phi(many_logits(split.model, [m[c] for m in models], x_f),
                              y_f).double().cpu().numpy()
                     for c in range(len(split.checkpoints))])


def _half(n: int) -> int:
    return max(2, n // 2)


def attack_tables(split: GroupSplit, traj: MethodTrajectories, phi: np.ndarray):
    """The ``attack`` (all models and half of each kind), ``points`` and ``point_null`` tables."""
    config, labels = split.config, split.labels(traj.method)
    n_u, n_r = len(traj.unlearned), phi.shape[1] - len(traj.unlearned)
    rng = np.random.default_rng(split.seed(traj.method, "attack"))
    rows = []
    designs = {"all": (n_u, n_r), "half": (_half(n_u), _half(n_r))}
    for design, (u, r) in designs.items():
        if design == "half" and (u, r) == (n_u, n_r):
            continue
        keep = np.r_[np.arange(u), n_u + np.arange(r)]
        track = attack_track(phi[:, keep], u, rng, config.n_permutations, config.n_bootstrap,
                             paired=traj.paired)
        for c, k in enumerate(split.checkpoints):
            rows.append({**labels, "design": design, "step": int(k), "n_unlearned": u,
                         "n_reference": r, "mia_acc": track.accuracy[c],
                         "mia_ci_low": track.ci_low[c], "mia_ci_high": track.ci_high[c],
                         "null_mean": track.null_mean[c], "null_q95": track.null_q95[c],
                         "p_value": track.p_value[c], "adjusted_p": track.adjusted_p[c],
                         "divergence": track.divergence[c],
                         "divergence_null_mean": track.divergence_null_mean[c],
                         "divergence_null_q95": track.divergence_null_q95[c]})
    return ATTACK.frame(rows), point_table(split, labels, phi, n_u), \
        point_null_table(split, labels, phi, n_u, rng, traj.paired)


def point_table(split: GroupSplit, labels: dict, phi: np.ndarray, n_u: int):
    """Per point and checkpoint: Welch's p-value and the Gaussian-fit KL divergence."""
    truth = (np.arange(phi.shape[1]) < n_u)[None]
    p = welch_p_values(phi, truth)[0]                                      # [C, points]
    kl = gaussian_kl(phi[:, :n_u], phi[:, n_u:])                          # [C, points]
    flipped = split.data.flipped.cpu().numpy()
    return POINTS.frame([{"index": int(i), **labels, "step": int(k), "flipped": bool(flipped[i]),
                          "welch_p": float(p[c, j]), "kl": float(kl[c, j])}
                         for c, k in enumerate(split.checkpoints)
                         for j, i in enumerate(split.group.indices)])


def point_null_table(split: GroupSplit, labels: dict, phi: np.ndarray, n_u: int,
                     rng: np.random.Generator, paired: bool):
    """The per-point criterion (Welch's p, Bonferroni-adjusted over the checkpoints, at most the
    level; indistinguishable from then to the end) under
    relabelled models: the mean share of points at step 0 and censored, per level."""
    n = min(split.config.n_permutations, 200)
    relabelled = relabellings(n_u, phi.shape[1] - n_u, n, rng, paired)
    p = welch_p_values(phi, relabelled)                                   # [n, C, points]
    rows = []
    for level in LEVELS:    # the levels a configuration may choose, its own among them
        steps, censored = steps_to_unlearn(split.checkpoints,
                                           np.moveaxis(looks_adjusted(p, 1) <= level, 0, 1))
        rows.append({**labels, "level": level, "step0_fraction": float((steps == 0).mean()),
                     "censored_fraction": float(censored.mean())})
    return POINT_NULL.frame(rows)


def utility_table(split: GroupSplit, traj: MethodTrajectories):
    """Forget, retain and test accuracy of every model at every checkpoint."""
    config, data = split.config, split.data
    rng = np.random.default_rng(split.seed("utility"))
    retain, test = split.retain, np.arange(len(data.y_test))
    if config.utility_points is not None:
        retain = np.sort(rng.choice(retain, min(len(retain), config.utility_points), False))
        test = np.sort(rng.choice(test, min(len(test), config.utility_points), False))
    sets = {"forget_acc": split.xy(split.group.indices), "retain_acc": split.xy(retain),
            "test_acc": (data.x_test[torch.as_tensor(test, device=data.x_test.device)],
                         data.y_test[torch.as_tensor(test, device=data.y_test.device)])}
    kinds = {"unlearned": traj.unlearned, "coupled": traj.coupled,
             "independent": traj.independent}
    rows = []
    for c, k in enumerate(split.checkpoints):
        models = [(kind, s, path[c]) for kind, paths in kinds.items()
                  for s, path in enumerate(paths)]
        accs = {name: many_accuracy(split.model, [m for _, _, m in models], x, y).cpu().numpy()
                for name, (x, y) in sets.items()}
        rows += [{**split.labels(traj.method), "model": kind, "seed": s, "step": int(k),
                  **{a: float(v[i]) for a, v in accs.items()}}
                 for i, (kind, s, _) in enumerate(models)]
    return UNLEARNING.frame(rows)


# ---------------------------------------------------------------------------------- barriers
def control_points(split: GroupSplit) -> np.ndarray:
    """For every forget point, a retained point with the same training label and the same
    flipped status (the same label alone when none is left), drawn without replacement."""
    rng = np.random.default_rng(split.seed("control"))
    y = split.data.y_train.cpu().numpy()
    flipped = split.data.flipped.cpu().numpy()
    pool = set(split.retain.tolist())
    out = []
    for i in split.group.indices:
        same = [j for j in pool if y[j] == y[i] and flipped[j] == flipped[i]]
        same = same or [j for j in pool if y[j] == y[i]] or list(pool)
        pick = int(rng.choice(same))
        pool.discard(pick)
        out.append(pick)
    return np.array(out)


def barrier_subsets(split: GroupSplit) -> dict[str, np.ndarray]:
    """Forget and control points, each split into clean and flipped ones (empty ones left out)."""
    flipped = split.data.flipped.cpu().numpy()
    forget, control = split.group.indices, control_points(split)
    out = {}
    for name, idx in (("forget", forget), ("control", control)):
        for kind, keep in (("clean", ~flipped[forget]), ("flipped", flipped[forget])):
            if keep.any():
                out[f"{name}-{kind}"] = idx[keep]
    return out


def barrier_tables(split: GroupSplit, traj: MethodTrajectories):
    """Barriers between unlearned model r and its coupled partner r, and between unlearned
    model r and independent model r, on every subset at every checkpoint; and the mean loss
    along the paths at the first and last checkpoint."""
    lambdas = np.linspace(0, 1, split.config.barrier_points)
    subsets = {name: split.xy(idx) for name, idx in barrier_subsets(split).items()}
    partners = {"coupled": traj.coupled, "independent": traj.independent}
    labels = split.labels(traj.method)
    rows, curves, points = [], [], []
    last = len(split.checkpoints) - 1
    for partner, paths in partners.items():
        pairs = min(len(paths), len(traj.unlearned), MAX_BARRIER_PAIRS)
        for c, k in enumerate(split.checkpoints):
            for subset, (x, y) in subsets.items():
                each = pair_point_losses(split.model, [t[c] for t in traj.unlearned[:pairs]],
                                         [t[c] for t in paths[:pairs]], x, y, lambdas)
                losses = each.mean(-1)
                if c == 0 and traj.method == split.config.primary_method:
                    points.append(point_curves(labels, partner, subset, lambdas, each))
                for r in range(pairs):
                    rows.append({**labels, "partner": partner, "pair": r, "step": int(k),
                                 "subset": subset, "barrier": barrier_height(lambdas, losses[r]),
                                 "loss_gap": float(losses[r, 0] - losses[r, -1]),
                                 "distance": param_distance(traj.unlearned[r][c], paths[r][c])})
                if c in (0, last):
                    curves += [{**labels, "partner": partner, "step": int(k), "subset": subset,
                                "lambda": float(lam), "loss": float(v)}
                               for lam, v in zip(lambdas, losses.mean(0))]
    return BARRIERS.frame(rows), PATHS.frame(curves), (
        pd.concat(points, ignore_index=True) if points else BARRIER_POINTS.frame([]))


def point_curves(labels: dict, partner: str, subset: str, lambdas: np.ndarray,
                 losses: np.ndarray) -> pd.DataFrame:
    """The ``barrier_points`` rows of one subset: every pair's loss of every point (by its slot
    in the subset: forget point j and its control share slot j) at every lambda. Losses are
    rounded to float32, the models' precision, and kept as float64, the type the stored tables
    have always had."""
    pairs, grid, slots = losses.shape
    r, lam, slot = np.meshgrid(np.arange(pairs), np.arange(grid), np.arange(slots), indexing="ij")
    return BARRIER_POINTS.check(pd.DataFrame({
        **labels, "partner": partner, "pair": r.ravel(), "subset": subset, "slot": slot.ravel(),
        "lambda": lambdas[lam.ravel()],
        "loss": losses.ravel().astype(np.float32).astype(np.float64)}))


# ------------------------------------------------------------------------------ all groups
def forget_groups(config: Config, scores) -> list[ForgetGroup]:
    """Every forget group of the configuration: quantile, bottom, top and random groups of the
    primary score, with ``baseline_groups`` the top group of every baseline score and the two
    disagreement groups of the primary score with every baseline score; then ``heldout_requests`` held-out requests of
    each kind (:func:`punl.study.groups.heldout_groups`)."""
    groups = make_groups(scores, config.primary_score, config.n_groups, config.group_size,
                         config.seed, ("quantile", "bottom", "top", "random"))
    baselines = config.baseline_scores if config.baseline_groups else ()
    for score in baselines:
        groups += make_groups(scores, score, config.n_groups, config.group_size, config.seed,
                              ("top",))
    for score in baselines:
        groups += disagreement_groups(scores, config.primary_score, score, config.group_size)
    return groups + heldout_groups(scores, config.primary_score, config.heldout_requests,
                                   config.group_size, config.seed)


def run_unlearning(config: Config, data: Dataset, originals: list[Params], scores,
                   progress: bool = True, cache=None) -> UnlearnTables:
    """Unlearn every forget group and concatenate the tables, in group order.

    ``cache`` (optional) has ``load(group) -> UnlearnTables | None`` and ``save(group, tables)``:
    groups it already holds are not recomputed, and each finished group is saved at once, so an
    interrupted run resumes from the groups it had finished."""
    groups = forget_groups(config, scores)
    done = {g.key: cache.load(g) for g in groups} if cache else {}
    todo = [g for g in groups if done.get(g.key) is None]
    for i, tables in enumerate(map_groups(config, data, originals, todo, progress)):
        group = todo[i]    # the generator runs to its end, so its progress bar reaches n of n
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
    processes (:func:`punl.core.parallel.process_pool`; one process inside a daemonic process,
    such as a dask worker). Every group draws from its own random streams, so the tables do
    not depend on the number of workers."""
    from ..core.parallel import map_in_order
    yield from map_in_order(_unlearn_group_job, [(config, data, originals, g) for g in groups],
                            config.workers, "unlearning groups", progress)
