"""Adaptive unlearning: run a method on a request for the predicted steps plus a margin, check it
with the attack, and continue until it passes or the budget ends.

**Looks.** k_1 = ceil((1 + margin) x predicted steps) (0 is allowed: a request may be
indistinguishable before any step), then k_{j+1} = max(ceil(growth k_j), k_j + 1), capped at the
budget K; the last look is at K (:func:`look_schedule`).

**One population.** The method runs on the retain set R = D \\ F from the R original models,
together with the reference models retrained from scratch on R (the M independent ones, or the
coupled replays with ``coupled: true``), continued for the same steps so that the reference is
age-matched. Members, seeds and streams are those of :func:`punl.study.unlearn.run_method` for a group
with the same score and label, so a request that is a recorded group reproduces its recorded
trajectories at the looks (tested); the population advances from one look to the next without
restarting its streams.

**The check.** At look j the group attack runs on phi at looks 1..j (:func:`punl.study.mia.attack_track`:
one set of relabellings for every look, p-values min-p adjusted over them, the same rule as the
run's criterion restricted to the looks made so far). The request passes at the first look whose
adjusted p-value exceeds the level; the steps used are that look's k. Checking needs the
reference models, which cost M trainings from scratch; the steps count only the unlearning.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.config import Config
from ..engine.data import Dataset
from ..study.groups import ForgetGroup
from ..core.methods import METHODS
from ..study.mia import attack_track, lira_phi
from ..engine.multimodel import many_logits
from ..engine.pergrad import Params
from .heldout import look_steps
from .predict import RequestError, check_request
from ..engine.sgd import Population
from ..study.unlearn import GroupSplit, method_members, on_device, retrain


def look_schedule(first: int, budget: int, growth: float = 2.0) -> list[int]:
    """The looks of the module docstring: ``first`` (within [0, K]), then growing by ``growth``
    (at least one step), ending at the budget."""
    if not growth > 1:
        raise RequestError(f"--growth: must be > 1 (got {growth})")
    return look_steps(first, budget, growth)    # every step a possible look


def request_group(config: Config, indices: np.ndarray, label: str | None = None) -> ForgetGroup:
    """A request as a forget group of the primary score, labelled ``request-<8 hex>`` from its
    indices unless ``label`` is given (a recorded group's label reproduces its streams)."""
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    digest = hashlib.sha256(indices.tobytes()).hexdigest()[:8]
    return ForgetGroup(config.primary_score, label or f"request-{digest}", indices, float("nan"))


def reference_models(split: GroupSplit) -> dict[str, list[Params]]:
    """The attack's reference retrained from scratch on the retain set: the coupled replays
    (``coupled: true``) or the M independent models; the other kind is left empty."""
    return retrain(split, ("coupled",) if split.config.coupled else ("independent",))


@dataclass(frozen=True)
class AdaptiveRun:
    """What the adaptive rule did: one row per look, where it stopped, and phi at every look
    ([looks, models, points], the unlearned models first)."""

    method: str
    looks: pd.DataFrame
    steps_used: int
    passed: bool
    budget: int
    phi: np.ndarray

    def summary(self) -> str:
        verdict = (f"passed at step {self.steps_used}" if self.passed else
                   f"still distinguishable at the budget K = {self.budget}")
        return (f"{self.method}: {len(self.looks)} look(s) at steps "
                f"{', '.join(map(str, self.looks.step))}; {verdict}")


def adaptive_unlearn(config: Config, data: Dataset, originals: list[Params], indices,
                     method: str | None = None, first_look: int = 0, budget: int | None = None,
                     growth: float = 2.0, label: str | None = None,
                     level: float | None = None) -> AdaptiveRun:
    """Unlearn ``indices`` with ``method`` (default the primary method) from ``originals``,
    looking at :func:`look_schedule` (``first_look``, ``growth``, ``budget`` default K) until
    the attack passes at ``level`` (default the run's; module docstring)."""
    method = method or config.primary_method
    level = config.level if level is None else float(level)
    if method not in METHODS:
        raise RequestError(f"--method: {method!r} is unknown; choose from {sorted(METHODS)}")
    idx = check_request(indices, data.n_train)
    if config.batch_size >= data.n_train - len(idx):
        raise RequestError(f"--indices: {len(idx)} points leave a retain set of "
                           f"{data.n_train - len(idx)}, not above batch_size {config.batch_size}")
    budget = config.unlearn_steps if budget is None else int(budget)
    if budget < 0:
        raise RequestError(f"--budget: must be >= 0 (got {budget})")
    looks = look_schedule(first_look, budget, growth)
    group = request_group(config, idx, label)
    split = GroupSplit.of(config, data, group, np.array(looks))
    originals = on_device(originals, data)
    retrained = reference_models(split)
    members = method_members(split, method, originals, retrained)
    population = Population(split.model, members, data.x_train, data.y_train,
                            METHODS[method](config))
    n_u = len(originals)            # members: the unlearned models, then the reference
    x_f, y_f = split.xy(group.indices)     # the group's order, as every recorded group
    phis, rows = [], []
    for k in looks:
        population.advance(k - population.t)
        logits = many_logits(split.model, [population.member(s) for s in range(len(members))], x_f)
        phis.append(lira_phi(logits, y_f).double().cpu().numpy())
        rng = np.random.default_rng(split.seed(method, "adaptive"))
        track = attack_track(np.stack(phis), n_u, rng, config.n_permutations,
                             config.n_bootstrap, paired=config.coupled)
        distinguishable = bool(track.adjusted_p[-1] <= level)
        rows.append({"look": len(rows) + 1, "step": k, "mia_acc": track.accuracy[-1],
                     "null_q95": track.null_q95[-1], "p_value": track.p_value[-1],
                     "adjusted_p": track.adjusted_p[-1], "distinguishable": distinguishable})
        if not distinguishable:
            break
    table = pd.DataFrame(rows)
    return AdaptiveRun(method, table, int(table.step.iloc[-1]),
                       not bool(table.distinguishable.iloc[-1]), budget, np.stack(phis))
