"""The analyses behind the book's tables: verdict rules on synthetic tables built to give each
verdict, and the analyses moved out of the notebooks."""
import numpy as np
import pandas as pd
import pytest

from punl.analysis import measures

from synthetic import Truth, make_study

from punl.analysis.claims import Choice, claims_table


def _verdicts(truth: Truth) -> dict[str, str]:
    table = claims_table(make_study(truth))
    return dict(zip(table.claim.str.split(".").str[0], table.verdict))


def _verdict(truth: Truth, claim: str, level: float = 0.05) -> str:
    from punl.analysis import claims
    study = make_study(truth)
    fn = {"1": claims.claim_quick, "2": claims.claim_log, "2b": claims.claim_shape,
          "3": claims.claim_metrics, "4": claims.claim_barriers}[claim]
    return fn(study, Choice(level, "all", "privacy_loss_a8")).verdict


#: Groups whose steps grow linearly in log P (the log law), the rest as in Truth().
LOG_TRUTH = Truth(steps=[0, 0, 2, 8, 16, 32, 32, 64, 128, 128])


def test_a_log_law_truth_gives_every_claim_supported():
    assert set(_verdicts(LOG_TRUTH).values()) == {"supported"}


def test_claim_1_verdicts():
    assert _verdict(Truth(), "1") == "supported"
    # a share of ten groups has no interval that could exclude the claim: on groups, claim 1
    # is never "not supported", only not decided
    slow = Truth(steps=[128] * 10)                                  # every group needs long
    assert _verdict(slow, "1") == "inconclusive"
    easy_top = Truth(top_steps=4)                                   # nothing needs long
    assert _verdict(easy_top, "1") == "inconclusive"
    nothing = Truth(steps=[0] * 10, top_steps=0)                     # nothing to unlearn
    assert _verdict(nothing, "1") == "inconclusive"


def test_claim_2_verdicts():
    assert _verdict(LOG_TRUTH, "2") == "supported"
    # steps growing like P^0.7 (doubling per group while P grows 2.8-fold): a line fits better
    assert _verdict(Truth(), "2") == "not supported"
    falling = Truth(steps=[128, 64, 32, 16, 8, 4, 2, 1, 0, 0])
    assert _verdict(falling, "2") == "not supported"
    flat = Truth(steps=[4] * 10)           # no growth at all: the flat line fits better
    assert _verdict(flat, "2") == "not supported"
    linear = Truth(medians=list(np.linspace(1, 1000, 10)),
                   steps=[1, 16, 32, 64, 64, 128, 128, 128, 128, 128])
    # steps of 0.12 P recorded at the checkpoints: a line, which the law test prefers
    assert _verdict(linear, "2") == "not supported"


def test_claim_2b_verdicts():
    assert _verdict(Truth(), "2b") == "supported"
    shrinking = Truth(amplitude=list(0.05 * np.geomspace(1000, 0.1, 10) ** 0.4))
    assert _verdict(shrinking, "2b") == "not supported"
    rates_differ = Truth(rate=list(np.geomspace(0.005, 1.0, 10)))
    assert _verdict(rates_differ, "2b") == "not supported"


def test_claim_3_verdicts():
    assert _verdict(Truth(), "3") == "supported"
    reverse = Truth(disagree={"avg_grad_norm": (0.70, 0.55), "el2n": (0.55, 0.70)})
    assert _verdict(reverse, "3") == "not supported"
    tie = Truth(disagree={"avg_grad_norm": (0.60, 0.60), "el2n": (0.70, 0.55)})
    assert _verdict(tie, "3") == "inconclusive"


def test_claim_4_verdicts():
    assert _verdict(Truth(), "4") == "supported"
    assert _verdict(Truth(barrier=list(np.linspace(0.5, 0.0, 10))), "4") == "not supported"
    # a trend 100x smaller than its noise: too little power to decide either way, at any seed
    for seed in range(3):
        noisy = Truth(barrier=list(np.linspace(0.0, 0.05, 10)), barrier_noise=0.5, seed=seed)
        assert _verdict(noisy, "4") == "inconclusive", seed


def test_claim_5_per_other_method():
    shrinking = list(0.05 * np.geomspace(1000, 0.1, 10) ** 0.4)
    truth = Truth(methods=("sgld", "finetune", "l1_sparse"),
                  method_amplitude={"l1_sparse": shrinking})
    table = claims_table(make_study(truth))
    five = dict(zip(table.claim, table.verdict))
    assert five["5. the trend holds for finetune"] == "supported"
    assert five["5. the trend holds for l1_sparse"] == "not supported"
    assert table.verdict.iloc[0] == "supported"          # claim 1


def test_a_verdict_that_changes_with_the_level_is_fragile():
    from punl.analysis.claims import neighbours
    study = make_study(Truth())
    labels = [c.label for c in neighbours(study, Choice(0.05, "all", "privacy_loss_a8"))]
    assert labels == ["level 0.01", "level 0.1", "half the models", "alpha 4", "alpha 16"]
    table = claims_table(study)
    assert not table.fragile.any()
    # a study whose attack p-values sit between 0.01 and 0.05: distinguishable at 0.05 only
    edge = make_study(Truth())
    edge.tables.attack.loc[edge.tables.attack.adjusted_p < 0.05, "adjusted_p"] = 0.03
    from punl.analysis.measures import group_steps
    from dataclasses import replace
    edge = replace(edge, steps=group_steps(edge.tables))
    table = claims_table(edge).set_index(table.columns[0])
    assert table.loc[table.index[0], "fragile"]          # claim 1 is lost at level 0.01
    assert "level 0.01: inconclusive" in table.loc[table.index[0], "neighbours"]


def test_label_noise_control_detects_higher_scores_of_flipped_points():
    rng = np.random.default_rng(0)
    flipped = np.arange(200) < 20
    scores = pd.DataFrame({"flipped": flipped, "a": rng.normal(size=200) + 3 * flipped,
                           "b": rng.normal(size=200)})
    control = measures.label_noise_control(scores, ["a", "b"]).set_index("score")
    assert control.loc["a", "p-value"] < 1e-6 and control.loc["b", "p-value"] > 0.01
    assert control.loc["a", "mean flipped"] > control.loc["a", "mean clean"] + 2
    assert measures.flipped_share_of_top(scores, "a") > 0.7
    assert measures.label_noise_control(scores.assign(flipped=False), ["a"]).empty


def test_clipping_summary_and_final_accuracy(tiny_config):
    from punl.stages.pipeline import load_data
    from punl.engine.train import train
    cfg = tiny_config.replace(runs=2, epochs=1, clip=0.5)
    _, ledger = train(cfg, load_data(cfg), progress=False)
    summary = measures.clipping_summary(ledger, cfg.clip)
    assert summary.iloc[0] == pytest.approx(ledger.clipped_fraction(cfg.clip))
    assert summary.iloc[2] <= summary.iloc[1] <= 1
    acc = measures.final_accuracy(ledger)
    assert acc.loc["test", "mean"] == pytest.approx(ledger.test_acc[:, -1].mean())


def test_normalised_controlled_barrier_by_hand_and_small_groups_left_out():
    from punl.analysis.measures import MIN_BARRIER_POINTS, barrier_trend, normalised_controlled_barrier
    lambdas = np.linspace(0, 1, 5)
    chord = 1.0 - 0.2 * lambdas                                  # loss gap 0.2
    forget = np.broadcast_to((chord + 0.1 * 4 * lambdas * (1 - lambdas))[None, :, None],
                             (3, 5, 4))                          # barrier 0.1
    control = np.broadcast_to((chord + 0.02 * 4 * lambdas * (1 - lambdas))[None, :, None],
                              (3, 5, 4))                         # barrier 0.02
    assert normalised_controlled_barrier(forget, control, lambdas) == pytest.approx(0.4)
    study = make_study(Truth())
    curves = study.tables.barrier_points
    p = {f"q{g}": m for g, m in enumerate(Truth().medians)}
    few = curves[curves.slot < MIN_BARRIER_POINTS - 1]           # every group too small
    rng = np.random.default_rng(0)
    assert barrier_trend(few, study.tables.groups, p, "independent", "clean", rng).groups == 0
    full = barrier_trend(curves, study.tables.groups, p, "independent", "clean", rng, n_boot=50)
    assert full.groups == 10 and full.low <= full.spearman <= full.high


def test_claim4_reads_only_the_primary_scores_groups():
    """Group names repeat across scores (a baseline score's groups are named like P's): claim
    4's trend reads P's groups only, and mixing scores into the curves is refused."""
    from dataclasses import asdict, replace

    from punl.analysis.measures import group_point_curves
    from punl.analysis.barriers import barrier_trends
    study = make_study(Truth())
    curves = study.tables.barrier_points
    other = curves.assign(score="avg_grad_norm", loss=curves.loss + 5.0)
    groups = study.tables.groups
    mixed = replace(study, tables=replace(
        study.tables, barrier_points=pd.concat([curves, other], ignore_index=True),
        groups=pd.concat([groups, groups.assign(score="avg_grad_norm")], ignore_index=True)))
    choice = Choice(study.level, "all", study.primary_score)
    alone, with_other = barrier_trends(study, choice).trends, barrier_trends(mixed, choice).trends
    for key, trend in alone.items():
        assert asdict(trend) == pytest.approx(asdict(with_other[key]), nan_ok=True), key
    with pytest.raises(ValueError, match="curves"):
        group_point_curves(mixed.tables.barrier_points, "independent", "clean")


def test_score_columns_and_quantile_groups_are_parsed_in_one_place():
    from punl.study.groups import quantile_groups
    from punl.core.tables import privacy_column, privacy_columns, privacy_order
    assert privacy_order(privacy_column(8)) == 8.0 and privacy_order(privacy_column(0.5)) == 0.5
    assert privacy_order("avg_grad_norm") is None and privacy_order("privacy_loss_abc") is None
    assert privacy_columns(["index", "privacy_loss_a2", "el2n", "privacy_loss_a16"]) == [
        "privacy_loss_a2", "privacy_loss_a16"]
    labels = ["top", "q10", "q2", "random", "q0", "q2", "p_over_el2n", "r0"]
    assert quantile_groups(labels) == ["q0", "q2", "q10"]
