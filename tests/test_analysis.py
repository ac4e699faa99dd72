"""The analyses behind the book's tables: verdict rules on synthetic tables built to give each
verdict, and the analyses moved out of the notebooks."""
import numpy as np
import pandas as pd
import pytest

from punl import analysis
from punl.tables import BARRIERS, STEPS, STEPS_POINTS, UNLEARNING, UnlearnTables

P = "privacy_loss_a8"


def _steps(medians, steps, method="sgld", censored=None, score=P):
    rows = []
    for i, (p, k) in enumerate(zip(medians, steps)):
        rows.append({"score": score, "group": f"q{i}", "method": method, "group_score_median": p,
                     "group_size": 10, "steps_to_unlearn": k,
                     "censored": bool(censored[i]) if censored is not None else False,
                     "mia_acc_step0": 0.6, "mia_null_step0": 0.5, "mean_mia_acc": 0.55,
                     "mean_mia_ci_halfwidth": 0.02})
    return STEPS.frame(rows)


def _points(steps, censored, method="sgld"):
    return STEPS_POINTS.frame([{"index": i, "score": P, "group": "q0", "method": method,
                                "steps_to_unlearn": k, "censored": c,
                                "distinguishability_step0": 0.6, "distinguishability_final": 0.5}
                               for i, (k, c) in enumerate(zip(steps, censored))])


def _barriers(groups, heights):
    rows = []
    for g, h in zip(groups, heights):
        for lam, loss in ((0.0, 1.0), (0.5, 1.0 + h), (1.0, 1.0)):
            rows.append({"score": P, "group": g, "method": "sgld", "pair": "original-retrained",
                         "partner": "independent", "step": 0, "barrier": h, "loss_gap": 0.0,
                         "distance": 1.0, "lambda": lam, "loss": loss})
    return BARRIERS.frame(rows)


def _tables(steps, points, barriers):
    return UnlearnTables(UNLEARNING.frame([]), steps, points, barriers)


def _verdicts(tables, methods=("sgld",)):
    table = analysis.claims_table(tables, P, budget=100, main="sgld", methods=list(methods))
    return dict(zip(table.claim.str[:1], table.verdict))


MEDIANS = [0.1, 0.3, 1, 3, 10, 30]
LOG_STEPS = [int(round(20 * np.log1p(2 * p))) for p in MEDIANS]   # log-shaped, rising


def test_claim_1_needs_a_quick_majority_and_some_censored_points():
    steps = _steps(MEDIANS, LOG_STEPS)
    bar = _barriers([f"q{i}" for i in range(6)], [0.1] * 6)
    quick = _points([0, 5, 8, 9, 100, 3], [False] * 4 + [True, False])
    assert _verdicts(_tables(steps, quick, bar))["1"] == "supported"
    slow = _points([50, 60, 70, 5, 100, 3], [False] * 4 + [True, False])
    assert _verdicts(_tables(steps, slow, bar))["1"] == "not supported"
    never_censored = _points([0, 5, 8, 9, 1, 3], [False] * 6)
    assert _verdicts(_tables(steps, never_censored, bar))["1"] == "not supported"
    assert _verdicts(_tables(steps, _points([], []), bar))["1"] == "inconclusive"


def test_claim_2_compares_the_log_fit_with_a_line():
    bar = _barriers([f"q{i}" for i in range(6)], [0.1] * 6)
    pts = _points([0], [False])
    assert _verdicts(_tables(_steps(MEDIANS, LOG_STEPS), pts, bar))["2"] == "supported"
    linear = [int(3 * p) for p in MEDIANS]          # a straight line in P: the line fits better
    assert _verdicts(_tables(_steps(MEDIANS, linear), pts, bar))["2"] == "not supported"
    falling = LOG_STEPS[::-1]
    assert _verdicts(_tables(_steps(MEDIANS, falling), pts, bar))["2"] == "not supported"
    assert _verdicts(_tables(_steps(MEDIANS[:2], LOG_STEPS[:2]), pts, bar))["2"] == "inconclusive"


def test_claim_4_needs_barriers_rising_with_privacy_loss():
    steps, pts = _steps(MEDIANS, LOG_STEPS), _points([0], [False])
    groups = [f"q{i}" for i in range(6)]
    assert _verdicts(_tables(steps, pts, _barriers(groups, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])))["4"] \
        == "supported"
    assert _verdicts(_tables(steps, pts, _barriers(groups, [0.6, 0.5, 0.4, 0.3, 0.2, 0.1])))["4"] \
        == "not supported"
    assert _verdicts(_tables(steps, pts, _barriers(groups[:2], [0.1, 0.2])))["4"] == "inconclusive"


def test_claim_5_is_decided_per_other_method():
    steps = pd.concat([_steps(MEDIANS, LOG_STEPS), _steps(MEDIANS, LOG_STEPS[::-1], "finetune"),
                       _steps(MEDIANS, LOG_STEPS, "l1_sparse")], ignore_index=True)
    table = analysis.claims_table(_tables(steps, _points([0], [False]),
                                          _barriers(["q0", "q1", "q2"], [0.1] * 3)),
                                  P, budget=100, main="sgld",
                                  methods=["sgld", "finetune", "l1_sparse"])
    five = table[table.claim.str.startswith("5.")].set_index("claim").verdict
    assert five.to_dict() == {"5. the trend holds for finetune": "not supported",
                              "5. the trend holds for l1_sparse": "supported"}


def test_label_noise_control_detects_higher_scores_of_flipped_points():
    rng = np.random.default_rng(0)
    flipped = np.arange(200) < 20
    scores = pd.DataFrame({"flipped": flipped, "a": rng.normal(size=200) + 3 * flipped,
                           "b": rng.normal(size=200)})
    control = analysis.label_noise_control(scores, ["a", "b"]).set_index("score")
    assert control.loc["a", "p-value"] < 1e-6 and control.loc["b", "p-value"] > 0.01
    assert control.loc["a", "mean flipped"] > control.loc["a", "mean clean"] + 2
    assert analysis.flipped_share_of_top(scores, "a") > 0.7
    assert analysis.label_noise_control(scores.assign(flipped=False), ["a"]).empty


def test_group_composition_counts_classes_and_flipped_points():
    from punl.groups import ForgetGroup
    scores = pd.DataFrame({"label": [0, 0, 1, 2, 2, 2], "flipped": [1, 0, 0, 1, 1, 0]})
    group = ForgetGroup(P, "top", np.array([0, 3, 4, 5]), 2.0)
    row = analysis.group_composition([group], scores).iloc[0]
    assert (row.classes, row["largest class share"], row.flipped) == (2, 0.75, 3)


def test_barrier_correlations_per_partner():
    step0 = pd.DataFrame({"partner": ["coupled"] * 4 + ["independent"] * 4,
                          "group_score_median": [1, 2, 3, 4] * 2,
                          "barrier": [1, 2, 3, 4, 4, 3, 2, 1], "loss_gap": [0, 0, 1, 1] * 2,
                          "distance": [1, 2, 3, 4] * 2})
    rho = analysis.barrier_correlations(step0)
    assert rho.loc["coupled", "barrier"] == pytest.approx(1)
    assert rho.loc["independent", "barrier"] == pytest.approx(-1)
    assert rho.loc["independent", "distance"] == pytest.approx(1)


def test_clipping_summary_and_final_accuracy(tiny_config):
    from punl.pipeline import load_data
    from punl.train import train
    cfg = tiny_config.replace(runs=2, epochs=1, clip=0.5)
    _, ledger = train(cfg, load_data(cfg), progress=False)
    summary = analysis.clipping_summary(ledger, cfg.clip)
    assert summary.iloc[0] == pytest.approx(ledger.clipped_fraction(cfg.clip))
    assert summary.iloc[2] <= summary.iloc[1] <= 1
    acc = analysis.final_accuracy(ledger)
    assert acc.loc["test", "mean"] == pytest.approx(ledger.test_acc[:, -1].mean())
