"""Unlearning methods: a registry of update rules run on the retain set.

Each method maps a configuration to the :class:`~punl.train.NoisySGD` rule it applies to the
retain set R = D \\ F, starting from an original model. Adding a method is one decorated function.

- ``sgld``: the training update itself on R (same noise sigma, clipping C, batch size B);
- ``finetune``: plain SGD on R (sigma = 0, no clipping);
- ``l1_sparse``: ``finetune`` plus an L1 penalty lambda * ||theta||_1 (Jia et al. 2023).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .barriers import barrier_height, param_distance, path_losses
from .multimodel import many_accuracy, many_logits
from .groups import ForgetGroup, stream_seed
from .mia import gaussian_fit_accuracy, group_attack, lira_phi, steps_to_unlearn, welch_t
from .train import NoisySGD, init_model, rule_from_config, run_seeds, run_steps, total_steps

METHODS: dict[str, Callable] = {}


def register(name: str):
    """Decorator: register ``fn(config) -> NoisySGD`` as unlearning method ``name``."""
    def wrap(fn):
        METHODS[name] = fn
        return fn
    return wrap


def _base(config, **changes) -> NoisySGD:
    kw = dict(lr=config.effective_unlearn_lr, sigma=config.sigma, clip=config.clip,
              expected_batch=config.batch_size, clipping=config.clipping,
              weight_decay=config.weight_decay, chunk_size=config.chunk_size)
    kw.update(changes)
    return NoisySGD(**kw)


@register("sgld")
def sgld(config) -> NoisySGD:
    """theta <- theta - lr * ((sum clip_C(g_i) + sigma C xi) / B + wd * theta) on R."""
    return _base(config)


@register("finetune")
def finetune(config) -> NoisySGD:
    """theta <- theta - lr * (sum g_i / B + wd * theta) on R: sgld with sigma = 0, no clipping."""
    return _base(config, sigma=0.0, clipping=False)


@register("l1_sparse")
def l1_sparse(config) -> NoisySGD:
    """finetune with the L1 sub-gradient: theta <- theta - lr * (... + lambda * sign(theta))."""
    return _base(config, sigma=0.0, clipping=False, l1_penalty=config.l1_penalty)


# ----------------------------------------------------------------------------- running methods

POINT_TEST_LEVEL = 0.05  # a point stays distinguishable while Welch's test rejects at this level


def checkpoint_steps(budget: int, n: int) -> np.ndarray:
    """0 and about n - 1 log-spaced steps in [1, budget], deduplicated, ending at budget."""
    spaced = np.unique(np.round(np.geomspace(1, budget, max(n - 1, 1))).astype(int))
    return np.concatenate([[0], spaced])


def trajectory(model, start, x, y, rule, checkpoints: np.ndarray, seed: int) -> list:
    """Parameters after each checkpoint's number of steps of ``rule`` on (x, y), from ``start``."""
    gen = torch.Generator().manual_seed(seed)
    out, params, done = [], start, 0
    for k in checkpoints:
        params = run_steps(model, params, x, y, rule, int(k) - done, gen)
        done = int(k)
        out.append(params)
    return out


def retrain_from_scratch(config, data, model, retain, seeds: tuple[int, int]):
    """The training procedure of ``config`` on the retain set only, from init seed seeds[0]."""
    start = {k: v.detach() for k, v in init_model(config, data, seeds[0]).named_parameters()}
    gen = torch.Generator().manual_seed(seeds[1])
    return run_steps(model, start, data.x_train[retain], data.y_train[retain],
                     rule_from_config(config), total_steps(config, data.n_train), gen)


def retrain_seeds_for(config, group: ForgetGroup) -> dict[str, tuple[int, int]]:
    """Seeds of the retrained models: ``ret{m}`` for the MIA reference (coupled: run m's seeds),
    plus the barrier partners ``coupled`` (run 0's seeds) and ``independent``."""
    def independent(m):
        return (stream_seed(config.seed, "retrain-init", group.score, group.label, m),
                stream_seed(config.seed, "retrain-noise", group.score, group.label, m))
    seeds = {f"ret{m}": run_seeds(config, m) if config.coupled and m < config.runs
             else independent(m) for m in range(config.retrain_seeds)}
    seeds["coupled"], seeds["independent"] = run_seeds(config, 0), independent(0)
    return seeds


def unlearn_group(config, data, trained_final: list, group: ForgetGroup, methods=None,
                  progress: bool = False) -> dict[str, pd.DataFrame]:
    """Unlearn ``group`` with every method; MIA against age-matched retrained models; barriers."""
    model = init_model(config, data, 0)
    device = data.x_train.device
    trained_final = [{k: v.to(device) for k, v in p.items()} for p in trained_final]
    retain = torch.as_tensor(group.retain_indices(data.n_train), device=device)
    forget = torch.as_tensor(group.indices, device=device)
    x_r, y_r = data.x_train[retain], data.y_train[retain]
    seeds = retrain_seeds_for(config, group)
    retrained = {name: retrain_from_scratch(config, data, model, retain, s) for name, s in seeds.items()}
    checkpoints = checkpoint_steps(config.unlearn_steps, config.n_checkpoints)
    tables = {k: [] for k in ("unlearning", "steps", "steps_points", "barriers")}
    for method in methods or config.methods:
        rule = METHODS[method](config)

        def run(label, start, i):
            return trajectory(model, start, x_r, y_r, rule, checkpoints,
                              stream_seed(config.seed, group.score, group.label, method, label, i))

        unl = [run("unlearn", p, r) for r, p in enumerate(trained_final)]
        ret = [run("retrain", retrained[f"ret{m}"], m) for m in range(config.retrain_seeds)]
        partners = {k: run(k, retrained[k], 0) for k in ("coupled", "independent")}
        ctx = (config, data, model, group, method, checkpoints, retain, forget)
        _evaluate(ctx, unl, ret, tables)
        _barriers(ctx, unl[0], partners, tables)
    return {k: pd.DataFrame(v) for k, v in tables.items()}


def _evaluate(ctx, unl, ret, tables):
    config, data, model, group, method, checkpoints, retain, forget = ctx
    rng = np.random.default_rng(stream_seed(config.seed, group.score, group.label, method, "mia"))
    x_f, y_f = data.x_train[forget], data.y_train[forget]
    n_u = len(unl)
    attacks, point_distinct, fit_accuracy = [], [], []
    for c, k in enumerate(checkpoints):
        models = [t[c] for t in unl] + [t[c] for t in ret]
        phi = lira_phi(many_logits(model, models, x_f), y_f).double().cpu().numpy()
        attack = group_attack(phi[:n_u], phi[n_u:], config.n_bootstrap, rng)
        attacks.append(attack)
        point_distinct.append(welch_t(phi[:n_u], phi[n_u:])[1] < POINT_TEST_LEVEL)
        fit_accuracy.append(gaussian_fit_accuracy(phi[:n_u], phi[n_u:]))
        accs = {name: many_accuracy(model, models, x, y).cpu().numpy() for name, (x, y) in {
            "forget_acc": (x_f, y_f), "retain_acc": (data.x_train[retain], data.y_train[retain]),
            "test_acc": (data.x_test, data.y_test)}.items()}
        for i in range(len(unl) + len(ret)):
            kind, seed = ("unlearned", i) if i < n_u else ("retrained", i - n_u)
            tables["unlearning"].append({
                "score": group.score, "group": group.label, "method": method, "model": kind,
                "seed": seed, "step": int(k), **{a: float(v[i]) for a, v in accs.items()}, **attack})
    group_distinct = np.array([a["mia_acc"] > 0.5 + config.tau for a in attacks])
    steps, censored = steps_to_unlearn(checkpoints, group_distinct)
    tables["steps"].append({"score": group.score, "group": group.label, "method": method,
                            "group_score_median": group.score_median, "group_size": len(forget),
                            "steps_to_unlearn": int(steps), "censored": bool(censored),
                            "mia_acc_step0": attacks[0]["mia_acc"], "mia_null_step0": attacks[0]["mia_null"],
                            "mean_mia_acc": float(np.mean([a["mia_acc"] for a in attacks])),
                            "mean_mia_ci_halfwidth": float(np.mean(
                                [(a["mia_ci_high"] - a["mia_ci_low"]) / 2 for a in attacks]))})
    p_steps, p_cens = steps_to_unlearn(checkpoints, np.array(point_distinct))
    for i, idx in enumerate(group.indices):
        tables["steps_points"].append({"index": int(idx), "score": group.score, "group": group.label,
                                       "method": method, "steps_to_unlearn": int(p_steps[i]),
                                       "censored": bool(p_cens[i]),
                                       "distinguishability_step0": float(fit_accuracy[0][i]),
                                       "distinguishability_final": float(fit_accuracy[-1][i])})


def _barriers(ctx, unlearned, partners, tables):
    config, data, model, group, method, checkpoints, _, forget = ctx
    lambdas = np.linspace(0, 1, config.barrier_points)
    x_f, y_f = data.x_train[forget], data.y_train[forget]
    for partner, traj in partners.items():
        for c, k in enumerate(checkpoints):
            losses = path_losses(model, unlearned[c], traj[c], x_f, y_f, lambdas)
            common = {"score": group.score, "group": group.label, "method": method,
                      "pair": "original-retrained" if k == 0 else "unlearned-retrained",
                      "partner": partner, "step": int(k), "barrier": barrier_height(lambdas, losses),
                      "loss_gap": float(losses[0] - losses[-1]),
                      "distance": param_distance(unlearned[c], traj[c])}
            tables["barriers"] += [dict(common, **{"lambda": float(l), "loss": float(v)})
                                   for l, v in zip(lambdas, losses)]


def forget_groups(config, scores: pd.DataFrame) -> list[ForgetGroup]:
    """Every forget group of the configuration: quantile, bottom, top and random groups of the
    first score in ``group_scores`` and the top group of every other score."""
    from .groups import make_groups
    groups = []
    for i, score in enumerate(config.group_scores):
        kinds = ("quantile", "bottom", "top", "random") if i == 0 else ("top",)
        groups += make_groups(scores, score, config.n_groups, config.group_size, config.seed, kinds)
    return groups


def run_unlearning(config, data, trained_final: list, scores: pd.DataFrame,
                   progress: bool = True, cache=None) -> dict[str, pd.DataFrame]:
    """Unlearn every forget group and concatenate the tables, in group order.

    ``cache`` (optional) has ``load(group) -> tables | None`` and ``save(group, tables)``: groups
    it already holds are not recomputed, and each finished group is saved at once, so an
    interrupted run resumes from the groups it had finished."""
    groups = forget_groups(config, scores)
    done = {g.label + "/" + g.score: cache.load(g) for g in groups} if cache else {}
    todo = [g for g in groups if done.get(g.label + "/" + g.score) is None]
    for group, tables in zip(todo, _map_groups(config, data, trained_final, todo, progress)):
        if cache:
            cache.save(group, tables)
        done[group.label + "/" + group.score] = tables
    parts = [done[g.label + "/" + g.score] for g in groups]
    return {k: pd.concat([p[k] for p in parts], ignore_index=True) for k in parts[0]}


def _unlearn_group_job(args):
    config, data, trained_final, group = args
    torch.set_num_threads(config.num_threads)
    return unlearn_group(config, data, trained_final, group)


def _map_groups(config, data, trained_final, groups, progress):
    """Yield unlearn_group's tables for each group, in order, computed on ``config.workers``
    processes. Every group draws from its own random streams, so the tables do not depend on
    the number of workers."""
    jobs = [(config, data, trained_final, g) for g in groups]
    bar = dict(total=len(jobs), desc="unlearning groups", disable=not progress)
    if config.workers <= 1 or len(jobs) <= 1:
        yield from (_unlearn_group_job(j) for j in tqdm(jobs, **bar))
        return
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(config.workers, mp_context=ctx) as pool:
        yield from tqdm(pool.map(_unlearn_group_job, jobs), **bar)
