"""Synthetic unlearning tables with a chosen truth, for testing the verdict rules."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from punl.analysis import group_steps
from punl.claims import Study
from punl.tables import (ATTACK, BARRIERS, GROUPS, PATHS, POINT_NULL, POINTS, UNLEARNING,
                         UnlearnTables)

P = "privacy_loss_a8"
CHECKPOINTS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256])
BUDGET, TRAINING_STEPS, POINTS_PER_GROUP, PAIRS = 256, 300, 6, 6


@dataclass
class Truth:
    """What each group does. ``steps[g]``: the checkpoint from which group g stops being
    distinguishable (0: never distinguishable; > BUDGET: censored); ``amplitude[g]`` and
    ``rate[g]``: its excess divergence A exp(-c k); ``barrier[g]``: its controlled barrier;
    ``medians``: its median P. ``disagree``: step-0 accuracy of (P-favoured, baseline-favoured)
    per baseline."""

    medians: list = field(default_factory=lambda: list(np.geomspace(0.1, 1000, 10)))
    steps: list = field(default_factory=lambda: [0, 0, 1, 2, 4, 8, 16, 32, 64, 128])
    amplitude: list = field(default_factory=lambda: list(0.05 * np.geomspace(0.1, 1000, 10) ** 0.4))
    rate: list = field(default_factory=lambda: [0.05] * 10)
    barrier: list = field(default_factory=lambda: list(np.linspace(0.0, 0.5, 10)))
    barrier_noise: float = 0.01
    top_steps: int = 1000
    disagree: dict = field(default_factory=lambda: {"avg_grad_norm": (0.70, 0.55),
                                                     "el2n": (0.68, 0.56)})
    methods: tuple = ("sgld",)
    method_amplitude: dict = field(default_factory=dict)   # method -> amplitudes
    # The divergence carries N(0, 0.002^2) noise; with one true rate, the shared-rate F-test
    # rejects in about 5% of draws (its calibration is tested in test_fits), so the seed is
    # fixed and the tests are deterministic.
    seed: int = 1


def _attack_rows(score, group, method, steps_from, amplitude, rate, acc0, rng):
    rows = []
    for design in ("all", "half"):
        for k in CHECKPOINTS:
            distinguishable = steps_from > 0 and k < steps_from
            null_mean = 0.15
            rows.append({"score": score, "group": group, "method": method, "design": design,
                         "step": int(k), "n_unlearned": 8, "n_reference": 8,
                         "mia_acc": acc0 if k == 0 else (0.6 if distinguishable else 0.5),
                         "mia_ci_low": (acc0 if k == 0 else 0.55) - 0.03,
                         "mia_ci_high": (acc0 if k == 0 else 0.55) + 0.03,
                         "null_mean": 0.5, "null_q95": 0.53,
                         "p_value": 0.004 if distinguishable else 0.6,
                         "adjusted_p": 0.004 if distinguishable else 0.6,
                         "divergence": null_mean + amplitude * np.exp(-rate * k)
                         + rng.normal(0, 0.002),
                         "divergence_null_mean": null_mean,
                         "divergence_null_q95": null_mean + 0.05})
    return rows


def make_study(truth: Truth | None = None) -> Study:
    t = truth or Truth()
    rng = np.random.default_rng(t.seed)
    n_groups = len(t.medians)
    groups, attack, points, point_null, barriers = [], [], [], [], []
    scores_rows, next_index = [], 0

    def add_group(label, kind, median, score=P):
        nonlocal next_index
        idx = list(range(next_index, next_index + POINTS_PER_GROUP))
        next_index += POINTS_PER_GROUP
        groups.append({"score": score, "group": label, "kind": kind,
                       "group_size": POINTS_PER_GROUP, "group_score_median": median,
                       "flipped": 0, "classes": 3, "largest_class_share": 0.4})
        for i in idx:
            scores_rows.append({"index": i, P: median * (1 + 0.01 * (i % 3 - 1)),
                                "privacy_loss_a4": median / 2, "privacy_loss_a16": median * 2,
                                "avg_grad_norm": np.log1p(median) + rng.normal(0, 0.1),
                                "el2n": rng.uniform()})
        return idx

    for g in range(n_groups):
        label = f"q{g}"
        idx = add_group(label, "quantile", t.medians[g])
        for method in t.methods:
            amps = t.method_amplitude.get(method, t.amplitude)
            acc0 = 0.6 if t.steps[g] > 0 else 0.5
            attack += _attack_rows(P, label, method, t.steps[g], amps[g], t.rate[g], acc0, rng)
            points += [{"index": i, "score": P, "group": label, "method": method,
                        "step": int(k), "flipped": False,
                        "welch_p": 0.01 if k < t.steps[g] else 0.5,
                        "kl": amps[g] * np.exp(-t.rate[g] * k) + 0.1}
                       for k in CHECKPOINTS for i in idx]
            point_null += [{"score": P, "group": label, "method": method, "level": lv,
                            "step0_fraction": 0.7, "censored_fraction": 0.05}
                           for lv in (0.01, 0.05, 0.1)]
            for partner in ("independent", "coupled"):
                for pair in range(PAIRS):
                    for side, value in (("forget", t.barrier[g] + rng.normal(0, t.barrier_noise)),
                                        ("control", 0.0)):
                        barriers.append({"score": P, "group": label, "method": method,
                                         "partner": partner, "pair": pair, "step": 0,
                                         "subset": f"{side}-clean", "barrier": value,
                                         "loss_gap": 0.1, "distance": 1.0})
    idx = add_group("top", "top", t.medians[-1] * 2)
    for method in t.methods:
        attack += _attack_rows(P, "top", method, t.top_steps, 1.0, 0.05, 0.75, rng)
        points += [{"index": i, "score": P, "group": "top", "method": method, "step": int(k),
                    "flipped": False, "welch_p": 0.01, "kl": 1.0} for k in CHECKPOINTS for i in idx]
        point_null += [{"score": P, "group": "top", "method": method, "level": lv,
                        "step0_fraction": 0.7, "censored_fraction": 0.05} for lv in (0.01, 0.05, 0.1)]
    for baseline, (acc_p, acc_b) in t.disagree.items():
        for label, acc in ((f"p_over_{baseline}", acc_p), (f"{baseline}_over_p", acc_b)):
            idx = add_group(label, "disagreement", 1.0)
            for method in t.methods:
                attack += _attack_rows(P, label, method, 8, 0.2, 0.05, acc, rng)
                points += [{"index": i, "score": P, "group": label, "method": method,
                            "step": int(k), "flipped": False, "welch_p": 0.5, "kl": 0.1}
                           for k in CHECKPOINTS for i in idx]
                point_null += [{"score": P, "group": label, "method": method, "level": lv,
                                "step0_fraction": 0.7, "censored_fraction": 0.05}
                               for lv in (0.01, 0.05, 0.1)]
    tables = UnlearnTables(GROUPS.frame(groups), UNLEARNING.frame([]), ATTACK.frame(attack),
                           POINTS.frame(points), POINT_NULL.frame(point_null),
                           BARRIERS.frame(barriers), PATHS.frame([]))
    scores = pd.DataFrame(scores_rows)
    return Study(tables, group_steps(tables), scores, P, t.methods[0], tuple(t.methods),
                 tuple(t.disagree), BUDGET, TRAINING_STEPS, 0.05, t.seed)
