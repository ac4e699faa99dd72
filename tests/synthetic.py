"""Synthetic unlearning tables with a chosen truth, for testing the verdict rules."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from punl.analysis.measures import group_steps
from punl.analysis.fits import log_model
from punl.analysis.claims import Study
from punl.core.tables import (ATTACK, BARRIER_POINTS, BARRIERS, GROUPS, PATHS, POINT_NULL, POINTS,
                         UNLEARNING, UnlearnTables)

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


BARRIER_SLOTS, LAMBDAS = 12, np.linspace(0, 1, 5)


def _barrier_points(t: Truth, method: str, rng) -> pd.DataFrame:
    """Per quantile group, partner and pair: loss curves of BARRIER_SLOTS forget points with a
    bump of height ``barrier[g]`` (plus noise) in the middle of the path and of their controls
    without one; both fall by 0.1 from start to end (the loss gap)."""
    frames = []
    bump = 4 * LAMBDAS * (1 - LAMBDAS)
    for g, height in enumerate(t.barrier):
        for partner in ("independent", "coupled"):
            heights = height + rng.normal(0, t.barrier_noise, (PAIRS, BARRIER_SLOTS))
            for subset, h in (("forget-clean", heights), ("control-clean", 0 * heights)):
                loss = 1.0 - 0.1 * LAMBDAS[None, :, None] + h[:, None, :] * bump[None, :, None]
                r, lam, slot = np.meshgrid(np.arange(PAIRS), np.arange(len(LAMBDAS)),
                                           np.arange(BARRIER_SLOTS), indexing="ij")
                frames.append(pd.DataFrame({
                    "score": P, "group": f"q{g}", "method": method, "partner": partner,
                    "pair": r.ravel(), "subset": subset, "slot": slot.ravel(),
                    "lambda": LAMBDAS[lam.ravel()], "loss": loss.ravel()}))
    return BARRIER_POINTS.check(pd.concat(frames, ignore_index=True))


def _null_rows(label: str, method: str) -> list[dict]:
    """The placebo's rows of one group: 70% pass at step 0, 5% censored, at each level."""
    return [{"score": P, "group": label, "method": method, "level": lv,
             "step0_fraction": 0.7, "censored_fraction": 0.05} for lv in (0.01, 0.05, 0.1)]


def _barrier_rows(label: str, method: str, barrier: float, noise: float,
                  rng: np.random.Generator) -> list[dict]:
    """Barrier rows of one group: the forget subset at ``barrier`` plus noise, the control at 0."""
    rows = []
    for partner in ("independent", "coupled"):
        for pair in range(PAIRS):
            for side, value in (("forget", barrier + rng.normal(0, noise)), ("control", 0.0)):
                rows.append({"score": P, "group": label, "method": method, "partner": partner,
                             "pair": pair, "step": 0, "subset": f"{side}-clean", "barrier": value,
                             "loss_gap": 0.1, "distance": 1.0})
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
            point_null += _null_rows(label, method)
            barriers += _barrier_rows(label, method, t.barrier[g], t.barrier_noise, rng)
    idx = add_group("top", "top", t.medians[-1] * 2)
    for method in t.methods:
        attack += _attack_rows(P, "top", method, t.top_steps, 1.0, 0.05, 0.75, rng)
        points += [{"index": i, "score": P, "group": "top", "method": method, "step": int(k),
                    "flipped": False, "welch_p": 0.01, "kl": 1.0} for k in CHECKPOINTS for i in idx]
        point_null += _null_rows("top", method)
    for baseline, (acc_p, acc_b) in t.disagree.items():
        for label, acc in ((f"p_over_{baseline}", acc_p), (f"{baseline}_over_p", acc_b)):
            idx = add_group(label, "disagreement", 1.0)
            for method in t.methods:
                attack += _attack_rows(P, label, method, 8, 0.2, 0.05, acc, rng)
                points += [{"index": i, "score": P, "group": label, "method": method,
                            "step": int(k), "flipped": False, "welch_p": 0.5, "kl": 0.1}
                           for k in CHECKPOINTS for i in idx]
                point_null += _null_rows(label, method)
    tables = UnlearnTables(GROUPS.frame(groups), UNLEARNING.frame([]), ATTACK.frame(attack),
                           POINTS.frame(points), POINT_NULL.frame(point_null),
                           BARRIERS.frame(barriers), PATHS.frame([]),
                           _barrier_points(t, t.methods[0], rng))
    scores = pd.DataFrame(scores_rows)
    return Study(tables, group_steps(tables), scores, P, t.methods[0], tuple(t.methods),
                 tuple(t.disagree), BUDGET, TRAINING_STEPS, 0.05, t.seed,
                 law_simulations=GROUP_LAW_SIMULATIONS)


#: Simulations per side of claim 2's law test on the synthetic groups: p-values then move in
#: steps of 1/41, fine enough for the rules' 0.05 (the test's own level and power are checked
#: with the full count in test_fits.py).
GROUP_LAW_SIMULATIONS = 40


# ---------------------------------------------------------------------------- the per-point study
@dataclass
class PointTruth:
    """A per-point study with a known truth. Each training point's latent steps follow
    ``law`` of the score ``driver`` ("log": a log(b x), "line": 8 x - 10, "none": 0)
    plus N(0, ``noise``^2), recorded at CHECKPOINTS as the criterion does: the point's p-value
    is 1e-4 at every checkpoint before its recorded step and uniform on (0, 1) from it on, so
    an unlearned point is flagged by chance at later looks like any null point. The placebo's
    p-values are uniform everywhere. Scores: P (``privacy_loss_a8``, log-normal) and two
    baselines, each P times log-normal noise of sd ``baseline_noise`` (``driver`` "el2n" makes
    the steps follow el2n instead, P then being the noisier one)."""

    law: str = "log"
    a: float = 40.0
    b: float = 0.3
    driver: str = P
    noise: float = 15.0
    points: int = 800
    placebo: int = 600
    baseline_noise: float = 0.8
    shift: float = 0.0
    tail: float = 0.0        # this share of the points with the highest driver never unlearns
    seed: int = 0


def _point_tests(kind, index, recorded, rng):
    rows = []
    for c, k in enumerate(CHECKPOINTS):
        p = np.where(k < recorded, 1e-4, rng.uniform(size=len(index)))
        rows.append(pd.DataFrame({
            "set": kind, "index": index, "method": "sgld", "step": int(k), "models": 40,
            "mean_unlearned": 0.0, "mean_retrained": 0.0, "sd_unlearned": 1.0,
            "sd_retrained": 1.0, "t": 0.0, "p_value": p, "effect": np.where(k < recorded, 1.0, 0.0),
            "kl": 0.0}))
    frame = pd.concat(rows, ignore_index=True)
    return pd.concat([frame.assign(design="all"), frame.assign(design="half")], ignore_index=True)


def make_point_study(truth: PointTruth | None = None, law_simulations: int = 40) -> Study:
    """The group study of :func:`make_study` with a per-point study of ``truth`` added."""
    from dataclasses import replace
    from punl.analysis.pointclaims import point_steps
    from punl.core.tables import POINT_TESTS
    t = truth or PointTruth()
    rng = np.random.default_rng(t.seed)
    p = np.exp(rng.normal(1, 1.2, t.points))
    scores = pd.DataFrame({"index": np.arange(t.points), "label": rng.integers(0, 10, t.points),
                           "flipped": False, P: p, "privacy_loss_a4": p / 2,
                           "privacy_loss_a16": p * 2})
    for b in ("avg_grad_norm", "el2n"):
        scores[b] = p * np.exp(rng.normal(0, t.baseline_noise, t.points))
    x = scores[t.driver].to_numpy()
    law = {"log": log_model(x, t.a, t.b), "line": 8 * x - 10, "none": np.zeros_like(x)}[t.law]
    latent = law + t.shift + rng.normal(0, t.noise, t.points)
    latent[x >= np.quantile(x, 1 - t.tail)] += 1000 if t.tail else 0
    recorded = fits_record(latent)
    tests = pd.concat([_point_tests("train", np.arange(t.points), recorded, rng),
                       _point_tests("placebo", np.arange(t.placebo), np.zeros(t.placebo), rng)],
                      ignore_index=True)[list(POINT_TESTS.columns)]
    base = make_study(Truth())
    return replace(base, scores=scores, point_steps=point_steps(POINT_TESTS.check(tests)),
                   baselines=("avg_grad_norm", "el2n"), law_simulations=law_simulations)


def fits_record(latent):
    """The checkpoint at which the criterion records latent steps (0 at or below 0, beyond the
    budget censored: recorded as BUDGET + 1, flagged at every checkpoint)."""
    j = np.searchsorted(CHECKPOINTS, np.clip(latent, 0, None))
    return np.where(latent > BUDGET, BUDGET + 1, CHECKPOINTS[np.minimum(j, len(CHECKPOINTS) - 1)])
