"""One forget group of digits-quick: retraining and every method's trajectories, all models of
the group together (the engine) against one model at a time (the previous loop).

The group's models are those of :func:`punl.study.unlearn.unlearn_group`: M independent and R coupled
retrained models from scratch (T steps), then per method R unlearned + R coupled + M independent
trajectories of K steps. Evaluation and the attack are not timed here."""
from __future__ import annotations

import numpy as np

from punl.core.config import load_config
from punl.core.methods import METHODS, training_rule
from punl.study.groups import ForgetGroup
from punl.stages.pipeline import load_data
from punl.engine.recipe import from_scratch, init_model, initial_params, run_seeds, total_steps
from punl.engine.sgd import Member, run_steps
from punl.study.unlearn import GroupSplit, coupled_replay, independent_seeds

from .legacy import legacy_run
from .timing import best_time, print_rows


def group_populations(cfg, data):
    """(rule, steps, members) of every population one group runs: the M independent and the R
    coupled retrained models from scratch, then per method R unlearned + R coupled + M
    independent trajectories."""
    rng = np.random.default_rng(0)
    forget = np.sort(rng.choice(data.n_train, cfg.group_size, replace=False))
    split = GroupSplit.of(cfg, data, ForgetGroup(cfg.primary_score, "q0", forget, 0.0))
    retrained = ([from_scratch(cfg, data, s, split.retain) for s in independent_seeds(split)]
                 + [coupled_replay(cfg, data, r, forget) for r in range(cfg.runs)])
    populations = [(training_rule(cfg), total_steps(cfg, data.n_train), retrained)]
    starts = [initial_params(cfg, data, run_seeds(cfg, r)[0]) for r in range(cfg.runs)]
    starts += [m.start for m in retrained]
    for method in cfg.methods:
        populations.append((METHODS[method](cfg), cfg.unlearn_steps,
                            [Member(p, 1000 + i, split.retain) for i, p in enumerate(starts)]))
    return populations


def bench_unlearn(overrides=(), rounds: int = 1, device: str = "cpu") -> list[dict]:
    cfg = load_config("digits-quick", [*overrides, f"device={device}"])
    data = load_data(cfg)
    model, x, y = init_model(cfg, data, 0), data.x_train, data.y_train
    populations = group_populations(cfg, data)
    n_models = sum(len(m) for _, _, m in populations)

    def together():
        for rule, steps, members in populations:
            run_steps(model, members, x, y, rule, steps)

    def one_by_one():
        for rule, steps, members in populations:
            legacy_run(model, members, x, y, rule, steps)

    def engine_one_by_one():
        for rule, steps, members in populations:
            for m in members:
                run_steps(model, [m], x, y, rule, steps)

    times = {} if device != "cpu" else {
        "previous loop, one model at a time (baseline)": best_time(one_by_one, 1, rounds)}
    if device != "cpu":
        times["engine, one model at a time"] = best_time(engine_one_by_one, 1, rounds)
    times["engine, each population's models together"] = best_time(together, 1, rounds)
    base = next(iter(times.values()))
    return [{"group": f"{n_models} model runs", "method": k, "seconds": t, "speedup": base / t}
            for k, t in times.items()]


def main(tiny: bool = False, device: str = "cpu") -> None:
    tiny_overrides = ["runs=2", "retrain_seeds=2", "unlearn_steps=3", "n_checkpoints=4",
                      "epochs=0.1", "el2n_epochs=0.1", "group_size=5"]
    print_rows(bench_unlearn(tiny_overrides, device=device) if tiny
               else bench_unlearn(device=device))
